"""The full pipeline end to end, fail closed: the user's full workflow (UI and API format) and the
simple API's ``"pipeline": "full"``, in process and over real HTTP, with every engine loaded
through the REAL loading path (``engines.build_engines``) from a models folder in the product
layout holding test models:

* BEN2: the stand-in (tests/standin_models.py; matte = where the red channel is bright);
* Florence-2: the tiny random model biased to caption every image as :data:`CAPTION`;
* NudeNet: the REAL ``320n.onnx`` from the installed nudenet wheel;
* Llama: a tiny random GGUF biased so its grammar-constrained verdict is all SAFE (or, in a
  second folder, all UNSAFE) -- see ``gguf_fixture.build_verdict_llama_gguf``.

The custom (non-pinned) models are accepted through the explicit switch
``allow_custom_models=True`` / ``BEN2_WORKER_ALLOW_CUSTOM_MODELS=1``. Then every safety model is
broken in turn -- at start (missing, corrupt) and at run time (an engine object that raises,
answers garbage or is too slow) -- and the cut-out must never come back as allowed."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

for _mod in ("nudenet", "llama_cpp", "gguf", "torch", "transformers", "cv2"):
    pytest.importorskip(_mod)  # the `full` extra

import nudenet  # noqa: E402
from conftest import subject_photo  # noqa: E402
from florence_fixture import build_tiny_florence  # noqa: E402
from gguf_fixture import build_tiny_llama_gguf, build_verdict_llama_gguf  # noqa: E402
from standin_models import build_models_dir  # noqa: E402
from test_handler import FULL_UI, decode_out, load, loadimage_name, png_b64  # noqa: E402
from test_nudity import colour_wheel  # noqa: E402
from test_server_http import Server, post  # noqa: E402

from ben2_worker import pipelines  # noqa: E402
from ben2_worker.api.delivery import Delivery  # noqa: E402
from ben2_worker.api.jobs import JobProcessor  # noqa: E402
from ben2_worker.config import Settings  # noqa: E402
from ben2_worker.cutout import CutoutOptions, MatteOptions  # noqa: E402
from ben2_worker.errors import ModelError  # noqa: E402
from ben2_worker.engines import build_engines  # noqa: E402
from ben2_worker.models.store import ModelStore  # noqa: E402
from ben2_worker.safety import policy  # noqa: E402
from ben2_worker.safety.classifier import SafetyClassifier  # noqa: E402
from ben2_worker.safety.policy import ClassifierOutputError  # noqa: E402

CAPTION = "a red product photo on a plain background"
FULL_API = "BG_remove_BEN2_simple_1st.api.json"
FULL_WORKFLOWS = [FULL_UI, FULL_API]
NUDENET_MODEL = Path(nudenet.__file__).resolve().parent / "320n.onnx"
DOMAINS = list(policy.DEFAULT_DOMAINS)
#: The full workflow's BEN2 node settings (sensitivity 0.7, blur 0, offset -1).
WORKFLOW_MATTE = MatteOptions(sensitivity=0.7, mask_blur=0, mask_offset=-1)
W, H = 320, 240


# ----------------------------------------------------------------------------- models


def _corpus() -> str:
    """What the classifier will be sent, so the tiny GGUF's merges tokenize it compactly."""
    return "\n".join([policy.system_prompt(policy.DEFAULT_DOMAINS), policy.build_messages(CAPTION)[1]["content"]])


def build_full_models(root: Path, verdict: str = "SAFE") -> Path:
    """A models folder in the product layout (paths from the manifest) with the test models."""
    store = ModelStore(root)
    build_models_dir(root)  # BEN2 stand-in at ben2_onnx/BEN2_Base.onnx
    assert store.path("ben2").is_file()
    build_tiny_florence(store.path("florence2"), fixed_caption=CAPTION)  # LLM/Florence-2-base/
    store.path("nudenet").parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NUDENET_MODEL, store.path("nudenet"))  # nudenet/320n.onnx, the real one
    build_verdict_llama_gguf(store.path("llama"), verdict, corpus=_corpus())  # llm/Meta-Llama-...gguf
    return root


def settings_for(models_dir: Path) -> Settings:
    return Settings(models_dir=models_dir, allow_custom_models=True, threads=1)


def copy_models(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".verified.json", "models.lock.json", ".downloads"))
    return dst


@pytest.fixture(scope="module")
def safe_dir(tmp_path_factory) -> Path:
    return build_full_models(tmp_path_factory.mktemp("models-safe"), "SAFE")


@pytest.fixture(scope="module")
def unsafe_dir(tmp_path_factory) -> Path:
    return build_full_models(tmp_path_factory.mktemp("models-unsafe"), "UNSAFE")


@pytest.fixture(scope="module")
def engines(safe_dir):
    eng = build_engines(settings_for(safe_dir), pipelines=("simple", "full"))
    assert pipelines.served_pipelines(eng) == ("simple", "full")
    return eng


@pytest.fixture(scope="module")
def unsafe_engines(unsafe_dir):
    return build_engines(settings_for(unsafe_dir), pipelines=("simple", "full"))


def processor(engines, **kw) -> JobProcessor:
    return JobProcessor(engines, delivery=Delivery(), **kw)


@pytest.fixture(scope="module")
def worker(engines):
    return processor(engines)


@pytest.fixture(scope="module")
def unsafe_worker(unsafe_engines):
    return processor(unsafe_engines)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """320x240 photo whose red channel is 255 in the middle box, 0 elsewhere: the stand-in's
    matte is that box."""
    return subject_photo(W, H)


@pytest.fixture(scope="module")
def expected_cutout(engines, photo):
    """The cut-out with the workflow's matte settings, from the cut-out engine directly."""
    return engines.cutout.cut_out([photo], CutoutOptions(matte=WORKFLOW_MATTE))[0].image


# ----------------------------------------------------------------------------- helpers


def comfy_job(workflow: dict | str, img: np.ndarray, job_id: str = "wf") -> dict:
    workflow = load(workflow) if isinstance(workflow, str) else workflow
    return {"id": job_id, "input": {"workflow": workflow,
                                    "images": [{"name": loadimage_name(workflow), "image": png_b64(img)}]}}


def full_job(img: np.ndarray, job_id: str = "full") -> dict:
    return {"id": job_id, "input": {"image": png_b64(img), "pipeline": "full"}}


def check_box_cutout(cut: np.ndarray, photo: np.ndarray) -> None:
    """Full resolution; opaque in the red box, clear outside; original pixels under alpha."""
    assert cut.shape == (H, W, 4)
    assert cut[70:170, 90:230, 3].min() == 255  # box is x 80..240, y 60..180
    assert cut[:50, :, 3].max() == 0 and cut[:, :60, 3].max() == 0 and cut[200:, :, 3].max() == 0
    opaque = cut[..., 3] == 255
    assert np.array_equal(cut[..., :3][opaque], photo[opaque])


def texts_by_node(out: dict) -> dict[str, str]:
    return {t["node_id"]: t["text"] for t in out["text"]}


def assert_no_image_data(out: dict) -> None:
    """Nothing in the response carries image bytes."""
    for entry in out.get("images") or []:
        assert "data" not in entry and "mask" not in entry, entry
    assert '"data"' not in json.dumps(out)


def assert_never_allowed(out: dict) -> None:
    """A simple-API response: refused (error) or blocked, never an image."""
    assert_no_image_data(out)
    if "error" in out:
        return
    assert out["status"] == "blocked", out
    (entry,) = out["images"]
    assert entry["status"] == "blocked" and entry["verdict"]["allowed"] is False


def assert_workflow_never_returns_images(out: dict) -> None:
    assert not out.get("images"), out.get("status") or out.get("error")
    assert_no_image_data(out)
    assert "error" in out or out.get("status") == "blocked", out


# ----------------------------------------------------------------------------- the test models themselves


def test_test_models_answer_as_designed(engines, unsafe_engines, photo):
    """Before relying on them: the classifiers' verdicts (direct SafetyClassifier.classify calls),
    the caption, and the real NudeNet on the two test images."""
    tok = engines.classifier._llm.tokenize
    for word in ("SAFE", "UNSAFE", "BORDERLINE"):  # each verdict word is one token, so the bias picks it whole
        assert len(tok(word.encode(), add_bos=False, special=False)) == 1
    safe = engines.classifier.classify(CAPTION)
    assert safe["classification"] == dict.fromkeys(DOMAINS, "SAFE"), safe
    assert isinstance(engines.classifier, SafetyClassifier)
    unsafe = unsafe_engines.classifier.classify(CAPTION)
    assert unsafe["classification"] == dict.fromkeys(DOMAINS, "UNSAFE"), unsafe
    # The same answer for the same caption, whatever ran before (seeded).
    assert engines.classifier.classify(CAPTION) == safe
    assert engines.caption.caption(photo, "<MORE_DETAILED_CAPTION>", num_beams=3, max_new_tokens=512,
                                   do_sample=True, seed=25479647846595) == CAPTION
    assert engines.nudenet.check(photo, 0.6)["is_nsfw"] is False
    wheel = engines.nudenet.check(colour_wheel(), 0.6)
    assert wheel["is_nsfw"] is True and wheel["detections"][0]["label"] == "BUTTOCKS_EXPOSED"


# ----------------------------------------------------------------------------- 1. the user's full workflow


@pytest.mark.parametrize("workflow_file", FULL_WORKFLOWS)
def test_users_full_workflow_in_process(worker, photo, expected_cutout, workflow_file):
    out = worker(comfy_job(workflow_file, photo))
    assert "error" not in out, out
    (image,) = out["images"]
    cut = decode_out(image)
    check_box_cutout(cut, photo)
    assert np.array_equal(cut, expected_cutout)  # the very cut-out `remove` gives with these options
    texts = texts_by_node(out)
    assert texts["14"] == CAPTION  # Florence2Run -> ShowText
    verdict = json.loads(texts["18"])  # MultiDomainSafetyClassifier -> ShowText
    assert verdict["classification"] == dict.fromkeys(DOMAINS, "SAFE")
    assert set(verdict) == {"classification", "reasons", "confidence"}
    assert {"8:Florence2Run", "26:NudeNetSafetyChecker", "25:MultiDomainSafetyClassifier",
            "27:HybridSafetyGate", "4:BEN2_ONNX_RemoveBg"} <= set(out["timings"])


@pytest.mark.parametrize("workflow_file", FULL_WORKFLOWS)
def test_users_full_workflow_blocked_by_the_classifier(unsafe_worker, photo, workflow_file):
    out = unsafe_worker(comfy_job(workflow_file, photo))
    assert out["status"] == "blocked" and out["images"] == []
    assert out["verdict"]["blocked_by"] == ["classifier"]
    assert out["verdict"]["domains"] == dict.fromkeys(DOMAINS, "UNSAFE")
    assert out["message"].startswith("Content blocked by hybrid safety gate: classifier: sexual=UNSAFE")
    assert_no_image_data(out)


@pytest.mark.parametrize("workflow_file", FULL_WORKFLOWS)
def test_users_full_workflow_blocked_by_nudenet(worker, workflow_file):
    out = worker(comfy_job(workflow_file, colour_wheel()))
    assert out["status"] == "blocked" and out["images"] == []
    assert out["verdict"]["blocked_by"] == ["nudenet"]
    assert "BUTTOCKS_EXPOSED" in out["message"]
    assert_no_image_data(out)


# ----------------------------------------------------------------------------- 2. the simple API, "pipeline": "full"


def test_simple_api_full_pipeline_allowed(worker, photo):
    out = worker(full_job(photo))
    assert "error" not in out, out
    assert out["pipeline"] == "full" and "status" not in out
    (entry,) = out["images"]
    assert entry["status"] == "allowed" and entry["caption"] == CAPTION
    v = entry["verdict"]
    assert v["allowed"] is True and v["status"] == "allowed" and v["blocked_by"] == []
    assert v["domains"] == dict.fromkeys(DOMAINS, "SAFE") and v["nudenet"]["is_nsfw"] is False
    cut = decode_out(entry)
    check_box_cutout(cut, photo)
    assert (entry["width"], entry["height"]) == (W, H)
    # exactly the cut-out the simple pipeline gives (default options)
    simple = decode_out(worker({"id": "s", "input": {"image": png_b64(photo)}})["images"][0])
    assert np.array_equal(cut, simple)
    assert {"caption+nudenet", "classify"} <= set(entry["timings"])


def test_simple_api_full_pipeline_blocked_by_the_classifier(unsafe_worker, photo):
    out = unsafe_worker(full_job(photo))
    assert out["status"] == "blocked", out
    (entry,) = out["images"]
    assert entry["status"] == "blocked" and entry["caption"] == CAPTION
    v = entry["verdict"]
    assert v["allowed"] is False and v["blocked_by"] == ["classifier"]
    assert v["domains"]["sexual"] == "UNSAFE"
    assert v["reasons"][0].startswith("classifier: sexual=UNSAFE")
    assert_no_image_data(out)


def test_simple_api_full_pipeline_blocked_by_nudenet(worker):
    out = worker(full_job(colour_wheel()))
    assert out["status"] == "blocked", out
    (entry,) = out["images"]
    v = entry["verdict"]
    assert v["blocked_by"] == ["nudenet"] and v["nudenet"]["is_nsfw"] is True
    assert v["nudenet"]["detections"][0]["label"] == "BUTTOCKS_EXPOSED"
    assert v["domains"] == dict.fromkeys(DOMAINS, "SAFE")  # the classifier alone would have let it pass
    assert_no_image_data(out)


def test_simple_api_batch_blocks_only_the_flagged_image(worker, photo):
    out = worker({"id": "b", "input": {"images": [png_b64(photo), png_b64(colour_wheel())], "pipeline": "full"}})
    assert out["status"] == "partially_blocked"
    ok, blocked = out["images"]
    assert ok["status"] == "allowed" and decode_out(ok).shape == (H, W, 4)
    assert blocked["status"] == "blocked" and "data" not in blocked


# ----------------------------------------------------------------------------- 3. broken models at start


def _rm(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_json(path: Path) -> None:
    path.write_text('{"model_type": "florence2", ')


def _zero_biggest_weight(path: Path) -> None:
    """Still a valid ONNX file with NudeNet's graph and metadata, but one layer's weights are
    zero: the checksum differs, and the detector no longer sees anything."""
    import onnx

    data = bytearray(path.read_bytes())
    init = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    off = bytes(data).find(init.raw_data[:64])
    assert off > 0
    data[off:off + len(init.raw_data)] = bytes(len(init.raw_data))
    path.write_bytes(bytes(data))


BROKEN_AT_START = [
    pytest.param("florence2", None, _rm, id="florence-folder-missing"),
    pytest.param("florence2", "config.json", _corrupt_json, id="florence-config-corrupt"),
    pytest.param("florence2", "model.safetensors", _truncate, id="florence-weights-truncated"),
    pytest.param("nudenet", None, _rm, id="nudenet-missing"),
    pytest.param("nudenet", None, _random_bytes, id="nudenet-random-bytes"),
    pytest.param("nudenet", None, _truncate, id="nudenet-truncated"),
    # A valid ONNX file with altered weights: refused by checksum even with the custom-model
    # switch, which does not apply to NudeNet (its model ships in the wheel).
    pytest.param("nudenet", None, _zero_biggest_weight, id="nudenet-weights-altered"),
    pytest.param("llama", None, _rm, id="gguf-missing"),
    pytest.param("llama", None, _random_bytes, id="gguf-random-bytes"),
    pytest.param("llama", None, _truncate, id="gguf-truncated"),
]


@pytest.mark.parametrize(("model", "file", "damage"), BROKEN_AT_START)
def test_a_broken_safety_model_never_releases_the_cutout(safe_dir, tmp_path, model, file, damage):
    models = copy_models(safe_dir, tmp_path / "models")
    target = ModelStore(models).path(model)
    target = target / file if file else target
    damage(target)
    settings = settings_for(models)
    # BEN2_WORKER_PIPELINES=simple,full: the worker refuses to start, naming the file.
    try:
        engines = build_engines(settings, pipelines=("simple", "full"))
    except ModelError as exc:
        assert str(ModelStore(models).path(model)) in str(exc), exc
    else:  # it started: then the request must still not come out allowed (the wheel: real NudeNet flags it)
        out = processor(engines)(full_job(colour_wheel() if model == "nudenet" else subject_photo(W, H)))
        assert_never_allowed(out)
        return
    # BEN2_WORKER_PIPELINES unset: it starts serving `simple` only, and refuses `full`.
    engines = build_engines(settings, pipelines=None)
    assert pipelines.served_pipelines(engines) == ("simple",)
    assert engines.caption is None and engines.nudenet is None and engines.classifier is None
    out = processor(engines)(full_job(subject_photo(W, H)))
    assert "pipeline 'full' is not served" in out["error"]
    assert_never_allowed(out)
    out = processor(engines)(comfy_job(FULL_API, subject_photo(W, H)))
    assert "not available" in out["error"]
    assert_workflow_never_returns_images(out)


def test_server_refuses_to_start_with_a_broken_gguf(safe_dir, tmp_path):
    models = copy_models(safe_dir, tmp_path / "models")
    gguf = ModelStore(models).path("llama")
    _random_bytes(gguf)
    env = {**os.environ, "BEN2_WORKER_MODELS": str(models), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
           "BEN2_WORKER_PIPELINES": "simple,full", "BEN2_WORKER_THREADS": "1"}
    # The RunPod entry point (the self-hosted service reports the same failure on /health instead).
    proc = subprocess.run([sys.executable, "-m", "ben2_worker.handler"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "worker cannot start" in proc.stdout + proc.stderr and str(gguf) in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- 3/4. engines broken at run time


class Raises:
    """Stand-in for a loaded engine that crashes at run time (simulated: every method raises)."""

    def __getattr__(self, name):
        def crash(*args, **kwargs):
            raise RuntimeError(f"simulated crash of a loaded engine in {name}()")
        return crash


class Slow:
    """A loaded engine that hangs: delegates to the real one after ``delay`` seconds."""

    def __init__(self, real, delay: float):
        self.real, self.delay = real, delay
        self.entered = threading.Event()

    def __getattr__(self, name):
        def slow(*args, **kwargs):
            self.entered.set()
            time.sleep(self.delay)
            return getattr(self.real, name)(*args, **kwargs)
        return slow


class Answers:
    """A loaded engine that answers ``value`` (garbage) to every call."""

    def __init__(self, value):
        self.value = value

    def __getattr__(self, name):
        return lambda *args, **kwargs: copy.deepcopy(self.value)


class Truncating:
    """The REAL classifier on a random, unbiased GGUF, with max_new_tokens so small that its
    answer is cut off before the JSON ends (what a weak model running out of tokens does)."""

    def __init__(self, real: SafetyClassifier, max_new_tokens: int = 6):
        self.real, self.max_new_tokens = real, max_new_tokens

    def classify(self, caption, **kwargs):
        return self.real.classify(caption, **{**kwargs, "max_new_tokens": self.max_new_tokens})


@pytest.fixture(scope="module")
def unbiased_classifier(tmp_path_factory):
    path = build_tiny_llama_gguf(tmp_path_factory.mktemp("llm-random") / "random.gguf", corpus=_corpus())
    clf = SafetyClassifier(path, threads=1)
    yield clf
    clf.close()


def _breakers(engines, unbiased):
    return {
        "caption-raises": {"caption": Raises()},
        "caption-not-text": {"caption": Answers(None)},
        "caption-empty": {"caption": Answers("")},
        "nudenet-raises": {"nudenet": Raises()},
        "nudenet-garbage": {"nudenet": Answers({"is_nsfw": "no", "max_score": 0.0})},
        "nudenet-error-json": {"nudenet": Answers({"error": "model crashed", "is_nsfw": False, "max_score": 0.0})},
        "classifier-raises": {"classifier": Raises()},
        "classifier-garbage": {"classifier": Answers({"classification": "SAFE"})},
        "classifier-missing-domain": {"classifier": Answers(
            {"classification": dict.fromkeys(DOMAINS[:-1], "SAFE"), "reasons": ["x"], "confidence": 0.9})},
        "classifier-cut-off": {"classifier": Truncating(unbiased)},
    }


BREAKERS = ["caption-raises", "caption-not-text", "caption-empty", "nudenet-raises", "nudenet-garbage",
            "nudenet-error-json", "classifier-raises", "classifier-garbage", "classifier-missing-domain",
            "classifier-cut-off"]


def test_cut_off_classifier_answer_is_an_output_error(unbiased_classifier):
    with pytest.raises(ClassifierOutputError, match="max_new_tokens"):
        Truncating(unbiased_classifier).classify(CAPTION)


@pytest.mark.parametrize("breaker", BREAKERS)
def test_runtime_failure_blocks_the_simple_api(engines, unbiased_classifier, photo, breaker):
    broken = dataclasses.replace(engines, **_breakers(engines, unbiased_classifier)[breaker])
    out = processor(broken)(full_job(photo))
    assert_never_allowed(out)
    assert "error" not in out, out  # a failed check is a verdict, not a crash
    v = out["images"][0]["verdict"]
    assert "error" in v["blocked_by"], v
    assert v["status_text"].startswith("BLOCKED by error: ")


@pytest.mark.parametrize("workflow_file", FULL_WORKFLOWS)
@pytest.mark.parametrize("breaker", BREAKERS)
def test_runtime_failure_never_returns_a_workflow_image(engines, unbiased_classifier, photo, workflow_file, breaker):
    broken = dataclasses.replace(engines, **_breakers(engines, unbiased_classifier)[breaker])
    out = processor(broken)(comfy_job(workflow_file, photo))
    assert_workflow_never_returns_images(out)
    if "error" not in out:  # blocked by the gate: because a check failed, not because of content
        assert "error" in out["verdict"]["blocked_by"]


def test_cut_off_classifier_in_the_workflow_widget(worker, photo):
    """The workflow's own max_new_tokens widget, too small for the answer: the real classifier's
    output is cut off, and the job fails instead of passing the image."""
    workflow = load(FULL_API)
    workflow["25"]["inputs"]["max_new_tokens"] = 6
    out = worker(comfy_job(workflow, photo))
    assert "max_new_tokens" in out["error"] and "25" in out["error"]
    assert_workflow_never_returns_images(out)


def test_stage_timeout_blocks_with_the_real_engines(engines, photo):
    """A tiny stage timeout against the real engines: captioning (tens of ms) and NudeNet cannot
    finish in 1 ms, so both checks count as failed and the image is not cut out."""
    (res,) = pipelines.run_full(engines, [photo], CutoutOptions(), pipelines.SafetyOptions(stage_timeout_s=0.001))
    assert res.cutout is None and res.caption is None
    assert res.verdict.allowed is False and res.verdict.blocked_by == ("error",)
    assert "did not finish within 0.001 s" in res.verdict.status_text()


def test_stage_timeout_blocks_through_the_handler(engines, photo):
    """A 1 s stage timeout (as BEN2_WORKER_SAFETY_TIMEOUT=1 sets; captioning the tiny model takes
    ~0.1 s, so it still finishes), and NudeNet made to hang for 3 s: a real hang cannot be
    provoked on demand. The stuck check blocks, and the worker asks to be recycled."""
    assert Settings.from_env({"BEN2_WORKER_SAFETY_TIMEOUT": "1"}).safety_timeout_s == 1.0
    broken = dataclasses.replace(engines, nudenet=Slow(engines.nudenet, 3.0))
    worker = JobProcessor(broken, delivery=Delivery(), safety=pipelines.SafetyOptions(stage_timeout_s=1.0))
    out = worker(full_job(photo))
    assert_never_allowed(out)
    assert out["refresh_worker"] is True
    v = out["images"][0]["verdict"]
    assert v["blocked_by"] == ["error"] and "NudeNet did not finish within 1 s" in v["status_text"]
    assert out["images"][0]["caption"] == CAPTION  # the other check still ran
    assert broken.nudenet.entered.is_set()


@pytest.mark.parametrize("workflow_file", FULL_WORKFLOWS)
def test_hanging_engine_in_the_workflow_hits_the_job_timeout(engines, photo, workflow_file):
    """The workflow path has no per-stage timeout; the job's own limit ends it, with no image."""
    broken = dataclasses.replace(engines, classifier=Slow(engines.classifier, 4.0))
    out = processor(broken, job_timeout_s=2.0)(comfy_job(workflow_file, photo))
    assert "time limit" in out["error"] and out["refresh_worker"] is True
    assert broken.classifier.entered.is_set()  # it was the hanging classifier that ran out the clock
    assert_workflow_never_returns_images(out)


# ----------------------------------------------------------------------------- 1/2 over real HTTP


@pytest.fixture(scope="module")
def full_server(safe_dir):
    srv = Server(safe_dir, {"BEN2_WORKER_PIPELINES": "simple,full"})
    yield srv
    srv.stop()


def test_over_http(full_server, photo, expected_cutout):
    base = full_server.base + "/runsync"
    for workflow_file in FULL_WORKFLOWS:
        res = post(base, comfy_job(workflow_file, photo))
        assert res["status"] == "COMPLETED", res
        out = res["output"]
        cut = decode_out(out["images"][0])
        check_box_cutout(cut, photo)
        assert np.array_equal(cut, expected_cutout)
        texts = texts_by_node(out)
        assert texts["14"] == CAPTION
        assert json.loads(texts["18"])["classification"] == dict.fromkeys(DOMAINS, "SAFE")
    # simple API, full pipeline: allowed, then blocked by NudeNet
    res = post(base, full_job(photo))
    assert res["status"] == "COMPLETED", res
    entry = res["output"]["images"][0]
    assert entry["status"] == "allowed" and entry["caption"] == CAPTION and entry["verdict"]["allowed"] is True
    check_box_cutout(decode_out(entry), photo)
    res = post(base, full_job(colour_wheel()))
    assert res["output"]["status"] == "blocked" and res["output"]["images"][0]["verdict"]["blocked_by"] == ["nudenet"]
    assert_no_image_data(res["output"])
    res = post(base, comfy_job(FULL_API, colour_wheel()))
    assert res["output"]["status"] == "blocked" and res["output"]["images"] == []
