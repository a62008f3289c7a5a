"""Validation before anything runs: ComfyUI's error types, node ids and input names in the
messages, model widgets resolved by file name, and the node specs as the user's nodes declare them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import ROOT

from ben2_worker.config import Settings
from ben2_worker.engines import Engines
from ben2_worker.errors import InputError
from ben2_worker.workflow import NODE_TYPES, WorkflowRunner, WorkflowValidationError, ui_to_api
from ben2_worker.workflow.model_files import base_name, resolve_gguf

WORKFLOWS = ROOT / "workflows"
GGUF = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def simple_api() -> dict:
    return load("BG_remove_BEN2_simple_2nd.api.json")


@pytest.fixture
def runner(tmp_path) -> WorkflowRunner:
    return WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)))


@pytest.fixture
def full_models(tmp_path) -> Path:
    """A models folder with the full workflow's model files in place (names only matter here)."""
    (tmp_path / "LLM" / "Florence-2-base").mkdir(parents=True)
    (tmp_path / "llm").mkdir(exist_ok=True)
    (tmp_path / "llm" / GGUF).write_bytes(b"GGUF")
    return tmp_path


def refuse(runner: WorkflowRunner, workflow: dict) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as info:
        runner.prepare(workflow)
    exc = info.value
    assert isinstance(exc, InputError)
    assert "\n" not in str(exc)  # one readable paragraph
    return exc


def only_error(exc: WorkflowValidationError, node_id: str) -> dict:
    assert exc.error["type"] == "prompt_outputs_failed_validation"
    assert exc.error["message"] == "Prompt outputs failed validation"
    assert list(exc.node_errors) == [node_id]
    record = exc.node_errors[node_id]
    assert len(record["errors"]) == 1
    return record["errors"][0]


def test_users_workflows_validate(runner, simple_api, full_models):
    graph = runner.prepare(simple_api).graph
    assert graph == simple_api  # already normal: the same graph comes back
    assert runner.prepare(load("BG_remove_BEN2_simple_2nd.json")).graph == simple_api  # UI format is converted
    assert runner.prepare(graph).graph == graph  # the plan's graph is itself valid input
    full = WorkflowRunner(Engines(settings=Settings(models_dir=full_models)), check_models=True)
    assert full.prepare(load("BG_remove_BEN2_simple_1st.json")).graph == load("BG_remove_BEN2_simple_1st.api.json")


def test_unknown_class_type_names_node_and_supported_types(runner, simple_api):
    wf = copy.deepcopy(simple_api)
    wf["99"] = {"class_type": "KSampler", "inputs": {}}
    exc = refuse(runner, wf)
    assert exc.error == {"type": "invalid_prompt", "message": "Cannot execute because node KSampler does not exist.",
                         "details": "Node ID '#99'", "extra_info": {}}
    assert list(exc.node_errors) == ["99"]
    text = str(exc)
    assert "node 99 ('KSampler')" in text and "BEN2_ONNX_RemoveBg" in text and "Florence2Run" in text


@pytest.mark.parametrize("bad", [{"1": {"inputs": {}}}, {"1": "LoadImage"}, {"1": {"class_type": ""}}])
def test_node_without_class_type_is_invalid(runner, bad):
    exc = refuse(runner, bad)
    assert exc.error["type"] == "invalid_prompt" and "#1" in exc.error["details"]


@pytest.mark.parametrize("bad", [[], "workflow", None])
def test_non_object_workflow_is_invalid(runner, bad):
    assert refuse(runner, bad).error["type"] == "invalid_prompt"


def test_no_outputs(runner, simple_api):
    wf = {k: v for k, v in simple_api.items() if v["class_type"] != "PreviewImage"}
    exc = refuse(runner, wf)
    assert exc.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    assert "PreviewImage" in str(exc)
    assert refuse(runner, {}).error["type"] == "prompt_no_outputs"


def mutate(wf: dict, node_id: str, **changes) -> dict:
    wf = copy.deepcopy(wf)
    for k, v in changes.items():
        if v is None:
            wf[node_id]["inputs"].pop(k)
        else:
            wf[node_id]["inputs"][k] = v
    return wf


@pytest.mark.parametrize(
    ("node_id", "changes", "etype", "needles"),
    [
        ("4", {"provider": None}, "required_input_missing", ["provider", "Required input is missing"]),
        ("5", {"image": None}, "required_input_missing", ["image"]),
        ("4", {"image": ["16"]}, "bad_linked_input", ["image"]),
        ("4", {"image": "photo.png"}, "bad_linked_input", ["image", "IMAGE input must be linked"]),
        ("4", {"image": ["12345", 0]}, "exception_during_inner_validation", ["image", "12345", "not in the workflow"]),
        ("5", {"original_width": ["16", 7]}, "exception_during_inner_validation", ["original_width", "slot 7", "original_height (INT)"]),
        ("4", {"image": ["16", 1]}, "return_type_mismatch", ["image", "received_type(INT) mismatch input_type(IMAGE)"]),
        ("16", {"resize_mode": "sometimes"}, "value_not_in_list", ["resize_mode", "'sometimes' not in"]),
        ("4", {"background_color": "purple"}, "value_not_in_list", ["background_color", "purple"]),
        ("4", {"mask_offset": -65}, "value_smaller_than_min", ["mask_offset", "Value -65 smaller than min of -64"]),
        ("4", {"mask_blur": 999}, "value_bigger_than_max", ["mask_blur", "Value 999 bigger than max of 64"]),
        ("4", {"sensitivity": 1.5}, "value_bigger_than_max", ["sensitivity"]),
        ("4", {"sensitivity": "high"}, "invalid_input_type", ["sensitivity", "FLOAT"]),
        ("4", {"mask_blur": 2.5}, "invalid_input_type", ["mask_blur"]),
        ("6", {"unload_models": "maybe"}, "invalid_input_type", ["unload_models"]),
        ("4", {"background_color": "custom", "custom_hex_color": "#GGHHII"}, "custom_validation_failed",
         ["custom_hex_color", "#GGHHII"]),
    ],
)
def test_each_error_type_names_node_and_input(runner, simple_api, node_id, changes, etype, needles):
    exc = refuse(runner, mutate(simple_api, node_id, **changes))
    err = only_error(exc, node_id)
    assert err["type"] == etype
    assert set(err) == {"type", "message", "details", "extra_info"}
    input_name = next(iter(changes)) if etype != "custom_validation_failed" else "custom_hex_color"
    assert err["extra_info"]["input_name"] == input_name
    assert exc.node_errors[node_id]["class_type"] == simple_api[node_id]["class_type"]
    assert exc.node_errors[node_id]["dependent_outputs"] == ["13"]
    text = str(exc)
    assert f"node {node_id} ({simple_api[node_id]['class_type']})" in text
    for needle in needles:
        assert needle in text


def test_all_errors_are_reported_at_once(runner, simple_api):
    wf = mutate(simple_api, "4", mask_blur=999, provider=None)
    wf = mutate(wf, "16", target_model="512")
    exc = refuse(runner, wf)
    assert sorted(exc.node_errors, key=int) == ["4", "16"]
    assert len(exc.node_errors["4"]["errors"]) == 2
    assert "Value 999 bigger than max of 64: mask_blur" in exc.error["details"]


def test_values_are_converted_as_comfyui_does(runner, simple_api):
    wf = mutate(simple_api, "4", sensitivity="0.5", mask_blur=3.0, mask_offset="-2")
    wf = mutate(wf, "6", unload_models="false")
    graph = runner.prepare(wf).graph
    assert graph["4"]["inputs"]["sensitivity"] == 0.5 and graph["4"]["inputs"]["mask_blur"] == 3
    assert graph["4"]["inputs"]["mask_offset"] == -2 and graph["6"]["inputs"]["unload_models"] is False
    wrapped = mutate(simple_api, "16", interpolation={"__value__": "bicubic"})
    assert runner.prepare(wrapped).graph["16"]["inputs"]["interpolation"] == {"__value__": "bicubic"}


def test_optional_inputs_may_be_left_out(runner, simple_api):
    wf = mutate(simple_api, "4", background_color=None, custom_hex_color=None, sensitivity=None, mask_blur=None, mask_offset=None)
    runner.prepare(wf)


def test_cycle_is_refused_before_running(runner, simple_api):
    wf = mutate(simple_api, "5", image=["6", 0])  # 5 -> 6 -> 5
    exc = refuse(runner, wf)
    assert exc.error["type"] == "invalid_prompt" and exc.error["message"] == "Dependency cycle detected"
    assert set(exc.node_errors) == {"5", "6"}
    assert "cycle" in str(exc) and "5" in str(exc) and "6" in str(exc)


def test_nodes_no_output_needs_are_not_validated(runner, simple_api):
    wf = copy.deepcopy(simple_api)
    wf["50"] = {"class_type": "FreeVRAMInline", "inputs": {"mode": "sideways"}}  # broken but unused
    runner.prepare(wf)


def test_dependent_outputs_list_every_output_behind_a_node(runner, simple_api):
    wf = copy.deepcopy(simple_api)
    wf["20"] = {"class_type": "SaveImageNoMetadata", "inputs": {"images": ["4", 0], "filename_prefix": "cut"}}
    exc = refuse(runner, mutate(wf, "16", resize_mode="never"))
    assert exc.node_errors["16"]["dependent_outputs"] == ["13", "20"]


def test_bypassed_resize_feeding_restore_is_reported_as_missing_inputs(runner):
    ui = load("BG_remove_BEN2_simple_2nd.json")
    for n in ui["nodes"]:
        if n["type"] == "SmartResizeForModel":
            n["mode"] = 4
    exc = refuse(runner, ui)
    names = sorted(e["extra_info"]["input_name"] for e in exc.node_errors["5"]["errors"])
    assert names == ["original_height", "original_width"]
    assert all(e["type"] == "required_input_missing" for e in exc.node_errors["5"]["errors"])


# --------------------------------------------------------------------------- model widgets


def test_full_workflow_model_files_missing_are_listed(tmp_path):
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "other-model.gguf").write_bytes(b"GGUF")
    (tmp_path / "LLM").mkdir(exist_ok=True)
    (tmp_path / "LLM" / "Florence-2-large").mkdir()
    runner = WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)), check_models=True)
    exc = refuse(runner, load("BG_remove_BEN2_simple_1st.json"))
    assert sorted(exc.node_errors, key=int) == ["15", "25"]
    assert exc.node_errors["25"]["errors"][0]["extra_info"]["input_name"] == "model_path"
    text = str(exc)
    assert GGUF in text and "other-model.gguf" in text  # what was asked for, and what is available
    assert "Florence-2-base" in text and "Florence-2-large" in text


def test_model_checks_default_to_served_engines(tmp_path):
    # No safety engines in this worker: model widgets are not checked at validation (running
    # fails with EngineUnavailableError instead, see test_workflow_run) ...
    runner = WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)))
    runner.prepare(load("BG_remove_BEN2_simple_1st.json"))
    # ... but a worker that serves the classifier checks its model file.
    served = WorkflowRunner(Engines(classifier=object(), settings=Settings(models_dir=tmp_path)))
    exc = refuse(served, load("BG_remove_BEN2_simple_1st.json"))
    assert list(exc.node_errors) == ["25"]


def test_model_paths_resolve_by_file_name_only(full_models):
    expected = full_models / "llm" / GGUF
    for value in (f"C:\\Users\\x\\models\\llm\\{GGUF}", f"/somewhere/else/{GGUF}", GGUF, GGUF.lower()):
        assert resolve_gguf(value, full_models) == expected
    assert base_name("C:/a/b\\c.gguf") == "c.gguf"
    with pytest.raises(LookupError, match="available: " + GGUF.replace(".", r"\.")):
        resolve_gguf("../../etc/passwd", full_models)


# --------------------------------------------------------------------------- specs


def test_node_specs_match_the_users_nodes():
    ben2 = NODE_TYPES["BEN2_ONNX_RemoveBg"]
    assert ben2.widget_names == ["provider", "background_color", "custom_hex_color", "sensitivity", "mask_blur", "mask_offset"]
    assert ben2.input_types() == {
        "required": {"image": ("IMAGE",), "provider": (["CPU", "CUDA", "DirectML"], {"default": "CPU", "tooltip": ben2.input("provider").tooltip})},
        "optional": {
            "background_color": (["none", "white", "black", "red", "green", "blue", "custom"], {"default": "none"}),
            "custom_hex_color": ("STRING", {"default": "#FFFFFF"}),
            "sensitivity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "mask_blur": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1}),
            "mask_offset": ("INT", {"default": 0, "min": -64, "max": 64, "step": 1}),
        },
    }
    assert ben2.return_types == ("IMAGE", "MASK")
    resize = NODE_TYPES["SmartResizeForModel"]
    assert resize.widget_names == ["target_model", "resize_mode", "interpolation"]
    assert resize.return_types == ("IMAGE", "INT", "INT")
    assert resize.input("target_model").default == "2048 (BiRefNet_HR)"
    restore = NODE_TYPES["RestoreOriginalSize"]
    assert (restore.input("original_width").min, restore.input("original_width").max) == (1, 16384)
    run = NODE_TYPES["Florence2Run"]
    assert run.widget_names == ["text_input", "task", "fill_mask", "keep_model_loaded", "max_new_tokens", "num_beams",
                                "do_sample", "output_mask_select", "seed"]
    assert run.return_names == ("image", "mask", "caption", "data")
    assert NODE_TYPES["Florence2ModelLoader"].widget_names == ["model", "precision", "attention", "convert_to_safetensors"]
    assert NODE_TYPES["MultiDomainSafetyClassifier"].widget_names == ["caption", "model_path", "temperature",
                                                                      "max_new_tokens", "n_ctx", "n_gpu_layers"]
    gate = NODE_TYPES["HybridSafetyGate"]
    assert gate.widget_names == ["block_unsafe", "block_borderline", "nudenet_overrides_llama"]
    assert gate.return_types == ("IMAGE", "STRING")
    assert NODE_TYPES["NudeNetSafetyChecker"].return_types == ("STRING", "BOOLEAN", "FLOAT")
    outputs = sorted(k for k, s in NODE_TYPES.items() if s.output_node)
    assert outputs == ["PreviewImage", "SaveImageNoMetadata", "ShowText|pysssss"]
    assert set(NODE_TYPES) >= {"LoadImage", "FreeVRAMInline", "LocalJSONExtractorLlama"}


def test_unsupported_florence_task_is_refused_before_running(tmp_path):
    runner = WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)))
    api = ui_to_api(load("BG_remove_BEN2_simple_1st.json"))
    api["8"]["inputs"]["task"] = "region_caption"
    err = only_error(refuse(runner, api), "8")
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["input_name"] == "task"
