"""The RunPod handler in process: worker-comfyui requests with the user's real workflows, the
simple task API, and every refusal. Engines are real (BEN2 stand-in); only RunPod's cloud is absent."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, subject_photo
from PIL import Image

from ben2_worker.api import schemas
from ben2_worker.api.delivery import Delivery
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.config import Settings
from ben2_worker.engines import Engines, load_cutout_engine

WORKFLOWS = ROOT / "workflows"
SIMPLE_UI = "BG_remove_BEN2_simple_2nd.json"
SIMPLE_API = "BG_remove_BEN2_simple_2nd.api.json"
FULL_UI = "BG_remove_BEN2_simple_1st.json"


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


@pytest.fixture(scope="module")
def worker(engines):
    return JobProcessor(engines, delivery=Delivery())


def png_b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def jpeg_b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return base64.b64encode(buf.getvalue()).decode()


def decode_out(entry: dict) -> np.ndarray:
    assert entry["type"] == "base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["data"]))))


def loadimage_name(workflow: dict) -> str:
    if "nodes" in workflow:
        return next(n for n in workflow["nodes"] if n["type"] == "LoadImage")["widgets_values"][0]
    return next(n for n in workflow.values() if n["class_type"] == "LoadImage")["inputs"]["image"]


# --------------------------------------------------------------------- worker-comfyui


@pytest.mark.parametrize("workflow_file", [SIMPLE_UI, SIMPLE_API])
@pytest.mark.parametrize("data_uri", [False, True])
def test_users_simple_workflow_returns_full_resolution_cutout(worker, workflow_file, data_uri):
    workflow = load(workflow_file)
    img = subject_photo(3000, 2000)
    b64 = png_b64(img)
    if data_uri:
        b64 = "data:image/png;base64," + b64
    job = {"id": "job-1", "input": {"workflow": workflow, "images": [{"name": loadimage_name(workflow), "image": b64}]}}
    out = worker(job)
    assert "error" not in out, out
    assert len(out["images"]) == 1
    cut = decode_out(out["images"][0])
    assert cut.shape == (2000, 3000, 4)  # full resolution, not an enlarged 1 MP cut-out
    assert cut[700:1300, 1000:2000, 3].min() == 255 and cut[:300, :, 3].max() == 0
    # The user's workflow applies sensitivity 0.7 / offset -1 to the matte, but under opaque
    # alpha the pixels are the uploaded originals.
    opaque = cut[..., 3] == 255
    assert np.array_equal(cut[..., :3][opaque], img[opaque])
    assert out["timings"]


def test_input_as_json_string(worker):
    workflow = load(SIMPLE_API)
    payload = {"workflow": workflow, "images": [{"name": loadimage_name(workflow), "image": png_b64(subject_photo(64, 48))}]}
    out = worker({"id": "j", "input": json.dumps(payload)})
    assert "error" not in out and decode_out(out["images"][0]).shape == (48, 64, 4)


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        (None, "Please provide input"),
        ("{not json", "Invalid JSON format in input"),
        ({"foo": 1}, "Missing 'workflow' parameter"),
        ({"workflow": {}, "images": "nope"}, "'images' must be a list of objects with 'name' and 'image' keys"),
        ({"workflow": {}, "images": [{"name": "a.png"}]}, "'images' must be a list of objects with 'name' and 'image' keys"),
    ],
)
def test_worker_comfyui_validation_messages(worker, job_input, message):
    assert worker({"id": "j", "input": job_input})["error"] == message


def test_bad_base64_image_is_reported(worker):
    workflow = load(SIMPLE_API)
    out = worker({"id": "j", "input": {"workflow": workflow, "images": [{"name": "x.png", "image": "%%%not base64"}]}})
    assert out["error"] == "Failed to upload one or more input images"
    assert "x.png" in out["details"][0]


def test_missing_uploaded_image_names_the_node(worker):
    workflow = load(SIMPLE_API)
    out = worker({"id": "j", "input": {"workflow": workflow, "images": [{"name": "other.png", "image": png_b64(subject_photo(32, 32))}]}})
    assert "error" in out and "other.png" in out["error"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda w: w.__setitem__("99", {"class_type": "NoSuchNode", "inputs": {}}), "NoSuchNode"),
        (lambda w: next(n for n in w.values() if n["class_type"] == "BEN2_ONNX_RemoveBg")["inputs"].pop("provider"), "provider"),
        (lambda w: next(n for n in w.values() if n["class_type"] == "BEN2_ONNX_RemoveBg")["inputs"].__setitem__("mask_blur", 999), "mask_blur"),
        (lambda w: next(n for n in w.values() if n["class_type"] == "BEN2_ONNX_RemoveBg")["inputs"].__setitem__("image", ["12345", 0]), "12345"),
    ],
)
def test_malformed_graphs_are_refused_before_running(worker, mutate, needle):
    workflow = copy.deepcopy(load(SIMPLE_API))
    mutate(workflow)
    out = worker({"id": "j", "input": {"workflow": workflow, "images": []}})
    assert "error" in out and needle in json.dumps(out)
    assert "images" not in out


def test_full_workflow_never_returns_a_cutout_without_safety_engines(worker):
    workflow = load(FULL_UI)
    out = worker({"id": "j", "input": {"workflow": workflow, "images": [{"name": loadimage_name(workflow), "image": png_b64(subject_photo(320, 240))}]}})
    assert "error" in out and "not available" in out["error"]
    assert not out.get("images")


# --------------------------------------------------------------------- simple task API


def test_simple_api_defaults(worker):
    img = subject_photo(1200, 900)
    out = worker({"id": "s1", "input": {"image": jpeg_b64(img)}})
    assert out["pipeline"] == "simple"
    entry = out["images"][0]
    cut = decode_out(entry)
    assert cut.shape == (900, 1200, 4) and entry["width"] == 1200 and entry["height"] == 900
    assert entry["filename"] == "s1.png"
    assert cut[350:550, 450:750, 3].min() == 255 and cut[:150, :, 3].max() == 0
    # Every stage of the job is timed, the cut-out's own steps included (not only decode/encode).
    assert {"decode", "resize", "inference", "matte", "encode", "deliver"} <= set(entry["timings"]), entry["timings"]


@pytest.mark.parametrize(
    ("output", "check"),
    [
        ({"format": "webp"}, lambda e, a: a.shape[2] == 4 and e["filename"].endswith(".webp")),
        ({"format": "jpg", "background": "white"}, lambda e, a: a.shape[2] == 3 and e["filename"].endswith(".jpg") and a[5, 5].min() > 245),
        ({"background": "#00ff00"}, lambda e, a: a.shape[2] == 3 and tuple(a[5, 5]) == (0, 255, 0)),
        ({"mask": True}, lambda e, a: decode_out(e["mask"]).ndim == 2),
        ({"mask_only": True}, lambda e, a: a.ndim == 2 and a[240, 320] == 255),
        ({"crop": True, "crop_margin": "10%"}, lambda e, a: a.shape[:2] == (240 + 64, 320 + 64) and e["crop_box"]),
        ({"refine": True}, lambda e, a: a.shape == (480, 640, 4)),
        ({"sensitivity": 0.5, "mask_blur": 3, "mask_offset": 2}, lambda e, a: a.shape == (480, 640, 4)),
        ({"format": "webp", "quality": 80, "background": "black"}, lambda e, a: a.shape[2] == 3),
    ],
)
def test_simple_api_options(worker, output, check):
    out = worker({"id": "opt", "input": {"image": png_b64(subject_photo(640, 480)), "output": output}})
    assert "error" not in out, out
    entry = out["images"][0]
    assert check(entry, decode_out(entry))


def test_simple_api_batch(worker):
    imgs = [subject_photo(300 + 50 * i, 200) for i in range(3)]
    out = worker({"id": "b", "input": {"images": [png_b64(i) for i in imgs[:2]] + [{"image": png_b64(imgs[2])}]}})
    assert [e["filename"] for e in out["images"]] == ["b_0.png", "b_1.png", "b_2.png"]
    assert [decode_out(e).shape[1] for e in out["images"]] == [300, 350, 400]


@pytest.mark.parametrize(
    ("job_input", "needles"),
    [
        ({"image": "x", "colour": "red"}, ["input.colour", "unknown field"]),
        ({"image": "x", "output": {"format": "gif"}}, ["input.output.format"]),
        ({"image": "x", "output": {"sensitivity": 3}}, ["input.output.sensitivity", "less than or equal to 1"]),
        ({"image": "x", "output": {"mask_offset": -99}}, ["input.output.mask_offset"]),
        ({"image": "x", "images": ["y"]}, ["exactly one of 'image' or 'images'"]),
        ({"images": []}, ["input.images", "1 to 16"]),
        ({"image": "x", "pipeline": "turbo"}, ["input.pipeline"]),
        ({"image": "@@@"}, ["input.image", "base64"]),
        ({"image": base64.b64encode(b"not an image").decode()}, ["input.image", "not a recognised image format"]),
        ({"image": "ftp://example.com/a.png"}, ["input.image"]),
        ({"image": "x", "output": {"background": "mauve"}}, ["background", "mauve"]),
        ({"image": "x", "output": {"crop_margin": "-3"}}, ["crop_margin"]),
    ],
)
def test_simple_api_refusals_name_the_field(worker, job_input, needles):
    out = worker({"id": "bad", "input": job_input})
    assert "error" in out and "images" not in out
    for needle in needles:
        assert needle in out["error"], out["error"]


def test_full_pipeline_request_is_refused_without_safety_engines(worker):
    out = worker({"id": "f", "input": {"image": png_b64(subject_photo(64, 64)), "pipeline": "full"}})
    assert "pipeline 'full' is not served" in out["error"] and "images" not in out


def test_oversized_response_fails_with_advice(engines):
    noisy = np.random.default_rng(0).integers(0, 255, (3000, 2500, 3), dtype=np.uint8)
    noisy[..., 0] = 255  # all subject: a 7.5 MP RGBA of noise, ~30 MB as PNG
    worker = JobProcessor(engines, delivery=Delivery())
    out = worker({"id": "big", "input": {"image": png_b64(noisy)}})
    assert "20 MB" in out["error"] and "BUCKET_ENDPOINT_URL" in out["error"]


def test_job_timeout_answers_and_recycles_worker(engines):
    worker = JobProcessor(engines, delivery=Delivery(), job_timeout_s=0.001)
    out = worker({"id": "slow", "input": {"image": png_b64(subject_photo(2000, 1500)), "output": {"refine": True}}})
    assert "time limit" in out["error"] and out["refresh_worker"] is True


def test_worker_keeps_serving_after_errors(worker):
    for bad in [None, {"image": "@@"}, {"workflow": {"1": {"class_type": "Nope", "inputs": {}}}}]:
        assert "error" in worker({"id": "e", "input": bad})
    ok = worker({"id": "ok", "input": {"image": png_b64(subject_photo(64, 48))}})
    assert "error" not in ok


def test_schema_helpers():
    assert schemas.decode_base64_image("data:image/png;base64,QUJD", field="f") == b"ABC"
    assert schemas.decode_base64_image("QU\nJD", field="f") == b"ABC"
    assert schemas.is_workflow_request({"workflow": {}}) and not schemas.is_workflow_request({"image": "x"})


def test_test_input_json_is_a_valid_simple_request(worker):
    doc = json.loads(Path(ROOT / "test_input.json").read_text())
    out = worker({"id": "t", **doc})
    assert "error" not in out and out["images"][0]["mask"]


def test_simple_path_imports_no_torch(models_dir):
    """The simple pipeline, start to finished job, must not import torch/transformers/llama_cpp
    (checked in a fresh interpreter, so it also holds once the full extra installs them)."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from ben2_worker import handler\n"
        "doc = json.load(open(sys.argv[1]))\n"
        "out = handler.handler({'id': 'x', **doc})\n"
        "assert 'error' not in out, out\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules)))\n"
    )
    env = {**__import__("os").environ, "BEN2_WORKER_MODELS": str(models_dir), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "test_input.json")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
