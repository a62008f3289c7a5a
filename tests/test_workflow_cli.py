"""`ben2-worker workflow convert|validate` on the user's real files."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from ben2_worker.cli.workflow import workflow_app

WORKFLOWS = ROOT / "workflows"
SIMPLE_UI = WORKFLOWS / "BG_remove_BEN2_simple_2nd.json"
SIMPLE_API = WORKFLOWS / "BG_remove_BEN2_simple_2nd.api.json"
FULL_UI = WORKFLOWS / "BG_remove_BEN2_simple_1st.json"
FULL_API = WORKFLOWS / "BG_remove_BEN2_simple_1st.api.json"


@pytest.fixture(autouse=True)
def empty_models(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(models))
    return models


def invoke(*args):
    return CliRunner().invoke(workflow_app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(("ui", "api"), [(SIMPLE_UI, SIMPLE_API), (FULL_UI, FULL_API)])
def test_convert_to_stdout_gives_the_repo_export(ui, api):
    result = invoke("convert", ui)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(api.read_text(encoding="utf-8"))


def test_convert_to_file(tmp_path):
    out = tmp_path / "sub" / "simple.api.json"
    result = invoke("convert", SIMPLE_UI, "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(SIMPLE_API.read_text(encoding="utf-8"))
    assert f"wrote {out}" in result.stderr


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_convert_refusals_are_one_line(tmp_path):
    assert "API format" in one_line_error(invoke("convert", SIMPLE_API))
    assert "cannot read" in one_line_error(invoke("convert", tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in one_line_error(invoke("convert", bad))
    ui = json.loads(SIMPLE_UI.read_text(encoding="utf-8"))
    next(n for n in ui["nodes"] if n["type"] == "BEN2_ONNX_RemoveBg")["widgets_values"][4] = 999  # mask_blur
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(ui))
    line = one_line_error(invoke("convert", broken))
    assert "node 4 (BEN2_ONNX_RemoveBg) input 'mask_blur'" in line


@pytest.mark.parametrize("path", [SIMPLE_UI, SIMPLE_API])
def test_validate_ok(path):
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: ") and "outputs: 13 PreviewImage" in result.stdout and "engines needed: cutout" in result.stdout


def test_validate_full_workflow_checks_model_files(empty_models):
    result = invoke("validate", FULL_UI)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(report["node_errors"]) == {"15", "25"}
    assert "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf" in result.stderr
    assert invoke("validate", FULL_UI, "--no-check-models").exit_code == 0
    (empty_models / "LLM" / "Florence-2-base").mkdir(parents=True)
    (empty_models / "llm").mkdir(exist_ok=True)
    (empty_models / "llm" / "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf").write_bytes(b"GGUF")
    result = invoke("validate", FULL_API, "--models-dir", empty_models)
    assert result.exit_code == 0, result.output
    assert "engines needed: caption, classifier, cutout, nudenet" in result.stdout


def test_validate_reports_comfyui_errors(tmp_path):
    api = json.loads(SIMPLE_API.read_text(encoding="utf-8"))
    api["99"] = {"class_type": "KSampler", "inputs": {}}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(api))
    result = invoke("validate", path)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["type"] == "invalid_prompt"
    assert "KSampler" in result.stderr and "Supported node types" in result.stderr
