"""Running workflows on the real cut-out engine (BEN2 stand-in): the user's simple workflow
returns a full-resolution cut-out of the original pixels, the literal path is kept where no
provenance exists, each needed node runs once, and the full workflow never yields an image
without its safety engines.

The safety engines used here are test doubles of the interfaces docs/workflows.md specifies
(the safety-stack milestone supplies the real ones)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re

import numpy as np
import pytest
from conftest import ROOT, subject_photo
from PIL import Image

from ben2_worker.config import Settings
from ben2_worker.cutout import CutoutOptions, MatteOptions
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.errors import (
    BlockedError,
    EngineUnavailableError,
    InputError,
    NodeFailedError,
)
from ben2_worker.imaging import encode_png
from ben2_worker.workflow import (
    NODE_TYPES,
    ContentBlockedError,
    ImageValue,
    OutputImage,
    WorkflowExecutionError,
    WorkflowResult,
    WorkflowRunner,
    WorkflowValidationError,
)
from ben2_worker.workflow.nodes import RunContext

WORKFLOWS = ROOT / "workflows"
SIMPLE_NAME = "d85517548420589fd6ce9c3f1a808449d46f41ce.jpg"
FULL_NAME = "ComfyUI_00119_.png"
GGUF = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
SAFE = {"classification": {d: "SAFE" for d in ("sexual", "violence", "hate", "disturbing", "drugs")},
        "reasons": ["neutral product photo"], "confidence": 0.95}


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


def png(img: np.ndarray) -> bytes:
    return encode_png(img)


def decode(out: OutputImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(out.data)))


@pytest.fixture(scope="module")
def settings(models_dir, tmp_path_factory) -> Settings:
    # The product layout plus the full workflow's model files (names are all validation reads).
    root = tmp_path_factory.mktemp("full-models")
    (root / "ben2_onnx").symlink_to(models_dir / "ben2_onnx")
    (root / "LLM" / "Florence-2-base").mkdir(parents=True)
    (root / "llm").mkdir()
    (root / "llm" / GGUF).write_bytes(b"GGUF")
    return Settings(models_dir=root, allow_custom_models=True, threads=1)


@pytest.fixture(scope="module")
def cutout(settings):
    return load_cutout_engine(settings)


@pytest.fixture(scope="module")
def engines(cutout, settings) -> Engines:
    return Engines(cutout=cutout, settings=settings)


@pytest.fixture(scope="module")
def runner(engines) -> WorkflowRunner:
    return WorkflowRunner(engines)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return subject_photo(3000, 2000)


@pytest.fixture(scope="module")
def photo_png(photo) -> bytes:
    return png(photo)


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """Every node execution, in order, by wrapping each registered executor."""
    seen: list[str] = []
    for class_type, spec in list(NODE_TYPES.items()):
        def counted(ctx, node_id, _fn=spec.fn, **kwargs):
            seen.append(node_id)
            return _fn(ctx, node_id, **kwargs)
        monkeypatch.setitem(NODE_TYPES, class_type, dataclasses.replace(spec, fn=counted))
    return seen


# --------------------------------------------------------------------------- test doubles


class Caption:
    def __init__(self, text="A red ceramic vase on a wooden table."):
        self.text, self.calls = text, []

    def caption(self, rgb, task, *, num_beams, max_new_tokens, do_sample, seed):
        self.calls.append({"shape": rgb.shape, "task": task, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                           "do_sample": do_sample, "seed": seed})
        return self.text


class NudeNet:
    def __init__(self, is_nsfw=False, fail=False):
        self.is_nsfw, self.fail, self.calls = is_nsfw, fail, []

    def check(self, rgb, threshold):
        self.calls.append((rgb.shape, threshold))
        if self.fail:
            raise RuntimeError("onnxruntime session died")
        found = [{"label": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [10, 10, 50, 50]}] if self.is_nsfw else []
        return {"is_nsfw": self.is_nsfw, "max_score": 0.91 if self.is_nsfw else 0.0, "threshold": threshold,
                "detections": found, "all_detections_count": len(found), "model": "test double"}


class Classifier:
    def __init__(self, verdict=None):
        self.verdict, self.calls = SAFE if verdict is None else verdict, []

    def classify(self, caption, *, temperature, max_new_tokens):
        self.calls.append((caption, temperature, max_new_tokens))
        return self.verdict

    def extract(self, text, instruction, schema):
        return {"primary_subject": "vase", "secondary_subjects": ["table"], "nsfw": False, "violence": False}


def full_engines(engines, **kw) -> Engines:
    parts = {"caption": Caption(), "nudenet": NudeNet(), "classifier": Classifier()}
    parts.update(kw)
    return dataclasses.replace(engines, **parts)


# --------------------------------------------------------------------------- the simple workflow


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_simple_workflow_returns_full_resolution_cutout_of_the_original(runner, photo, photo_png, fmt):
    wf = load("BG_remove_BEN2_simple_2nd.json" if fmt == "ui" else "BG_remove_BEN2_simple_2nd.api.json")
    messages: list[str] = []
    result = runner.run(wf, {SIMPLE_NAME: photo_png}, progress=messages.append)
    assert isinstance(result, WorkflowResult) and result.texts == []
    (out,) = result.images
    assert out.node_id == "13" and out.type == "temp"  # SaveImageNoMetadata is bypassed
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", out.filename)
    assert (out.width, out.height) == (3000, 2000)
    cut = decode(out)
    assert cut.shape == (2000, 3000, 4)  # full resolution, not an enlarged ~1 MP cut-out
    assert np.array_equal(cut[..., :3], photo)  # every RGB value is the original's
    alpha = cut[..., 3]
    assert alpha[520:1480, 770:2230].min() == 255  # the known subject box (0.25..0.75), inside its edge
    assert alpha[:480].max() == 0 and alpha[1520:].max() == 0 and alpha[:, :730].max() == 0 and alpha[:, 2270:].max() == 0
    assert len(messages) == 6 and messages[0].startswith("node 1 LoadImage")
    assert set(result.timings) == {"validate", "total", "1:LoadImage", "16:SmartResizeForModel", "4:BEN2_ONNX_RemoveBg",
                                   "5:RestoreOriginalSize", "6:FreeVRAMInline", "13:PreviewImage"}


def test_simple_workflow_matches_the_cli_cutout(runner, cutout, photo, photo_png):
    """The graph's SmartResize -> BEN2 -> Restore chain gives exactly what `ben2-worker remove`
    gives with the node's options: one matte shaped at ~1 MP, applied to the original."""
    result = runner.run(load("BG_remove_BEN2_simple_2nd.api.json"), {SIMPLE_NAME: photo_png})
    direct = cutout.cut_out([photo], CutoutOptions(matte=MatteOptions(sensitivity=0.7, mask_blur=0, mask_offset=-1)))[0]
    assert np.array_equal(decode(result.images[0]), direct.image)


def test_each_needed_node_runs_once_and_unused_nodes_never(runner, photo_png, calls):
    wf = load("BG_remove_BEN2_simple_2nd.api.json")
    wf["40"] = {"class_type": "LoadImage", "inputs": {"image": "never-uploaded.png"}}  # needed by no output
    wf["41"] = {"class_type": "FreeVRAMInline", "inputs": {"image": ["40", 0]}}
    wf["42"] = {"class_type": "SaveImageNoMetadata", "inputs": {"images": ["6", 0], "filename_prefix": "shop/cut"}}
    result = runner.run(wf, {SIMPLE_NAME: photo_png})
    assert sorted(calls, key=int) == ["1", "4", "5", "6", "13", "16", "42"]  # once each; 40/41 never
    assert calls.index("16") < calls.index("4") < calls.index("5") < calls.index("6")
    kinds = {(o.node_id, o.type, o.filename) for o in result.images}
    assert ("42", "output", "cut_00001_.png") in kinds  # ComfyUI's "<prefix>_<counter:05>_.png", subfolder dropped
    assert result.images[0].data == result.images[1].data  # one image, encoded once


def test_unbypassed_save_node_is_an_output(runner, photo_png):
    ui = load("BG_remove_BEN2_simple_2nd.json")
    next(n for n in ui["nodes"] if n["type"] == "SaveImageNoMetadata")["mode"] = 0
    result = runner.run(ui, {SIMPLE_NAME: photo_png})
    assert sorted((o.node_id, o.type) for o in result.images) == [("13", "temp"), ("7", "output")]
    assert next(o for o in result.images if o.node_id == "7").filename == "Untitled image_00001_.png"


def test_prepared_plan_runs_without_validating_again(runner, photo_png, monkeypatch):
    plan = runner.prepare(load("BG_remove_BEN2_simple_2nd.json"))  # what the handler does
    planned = []
    monkeypatch.setattr(runner, "plan", lambda wf: planned.append(wf))  # validated once: never again
    assert runner.run(plan, {SIMPLE_NAME: photo_png}).images[0].width == 3000
    assert planned == []


# --------------------------------------------------------------------------- literal semantics


def graph(*nodes: tuple[str, str, dict]) -> dict:
    return {nid: {"class_type": ct, "inputs": inputs} for nid, ct, inputs in nodes}


BEN2_DEFAULTS = {"provider": "CPU", "background_color": "none"}


def test_without_provenance_the_graph_runs_literally(runner):
    img = subject_photo(600, 400)
    wf = graph(
        ("1", "LoadImage", {"image": "a.png"}),
        ("2", "BEN2_ONNX_RemoveBg", {"image": ["1", 0], **BEN2_DEFAULTS}),
        ("3", "RestoreOriginalSize", {"image": ["2", 0], "original_width": 1200, "original_height": 800}),
        ("4", "PreviewImage", {"images": ["3", 0]}),
    )
    out = decode(runner.run(wf, {"a.png": png(img)}).images[0])
    assert out.shape == (800, 1200, 4)  # enlarged, as RestoreOriginalSize does
    assert not np.array_equal(out[::2, ::2, :3], img)


def test_resize_to_other_than_the_origin_is_literal(runner, photo, photo_png):
    wf = graph(
        ("1", "LoadImage", {"image": "p.png"}),
        ("2", "SmartResizeForModel", {"image": ["1", 0], "target_model": "1024 (BEN2/BiRefNet)", "resize_mode": "smart"}),
        ("3", "BEN2_ONNX_RemoveBg", {"image": ["2", 0], **BEN2_DEFAULTS}),
        ("4", "RestoreOriginalSize", {"image": ["3", 0], "original_width": 1500, "original_height": 1000, "interpolation": "bilinear"}),
        ("5", "PreviewImage", {"images": ["4", 0]}),
        ("6", "PreviewImage", {"images": ["3", 0]}),
    )
    result = runner.run(wf, {"p.png": photo_png})
    by_node = {o.node_id: decode(o) for o in result.images}
    assert by_node["5"].shape == (1000, 1500, 4)
    assert by_node["6"].shape == (836, 1254, 4)  # SmartResize's ~1 MP working size (even sides)
    # Constants equal to the original size still restore from the original pixels.
    wf["4"]["inputs"].update(original_width=3000, original_height=2000)
    full = decode(runner.run(wf, {"p.png": photo_png}).images[0])
    assert np.array_equal(full[..., :3], photo)


def test_background_colour_composites_at_full_resolution(runner, photo, photo_png):
    wf = load("BG_remove_BEN2_simple_2nd.api.json")
    wf["4"]["inputs"].update(background_color="custom", custom_hex_color="#F3FFFF")
    cut = decode(runner.run(wf, {SIMPLE_NAME: photo_png}).images[0])
    assert cut.shape == (2000, 3000, 3)
    assert (cut[:400] == (0xF3, 0xFF, 0xFF)).all()
    assert np.array_equal(cut[600:1400, 900:2100], photo[600:1400, 900:2100])


def test_load_image_mask_is_one_minus_alpha(engines):
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :5, 3] = 0
    ctx = RunContext(engines=engines, images={"a.png": png(rgba), "b.png": png(rgba[..., :3])})
    image, mask = NODE_TYPES["LoadImage"].fn(ctx, "1", image="a.png")
    assert isinstance(image, ImageValue) and image.pixels.shape == (10, 20, 3)
    assert mask.values[:, :5].min() == 1.0 and mask.values[:, 5:].max() == 0.0
    _, mask = NODE_TYPES["LoadImage"].fn(ctx, "1", image="b.png [input]")
    assert mask.values.shape == (64, 64) and mask.values.max() == 0.0


def test_missing_upload_names_the_node_and_what_was_sent(runner, calls):
    with pytest.raises(InputError) as info:
        runner.run(load("BG_remove_BEN2_simple_2nd.api.json"), {"other.png": b"x", "third.jpg": b"y"})
    text = str(info.value)
    assert "node 1 (LoadImage)" in text and SIMPLE_NAME in text and "'other.png', 'third.jpg'" in text
    assert calls == []  # refused before any node ran


def test_broken_image_is_a_node_failure_caused_by_an_input_error(runner):
    with pytest.raises(NodeFailedError, match=r"^node 1 \(LoadImage\): ") as info:
        runner.run(load("BG_remove_BEN2_simple_2nd.api.json"), {SIMPLE_NAME: b"not an image"})
    assert info.value.node_id == "1" and info.value.class_type == "LoadImage"
    cause = info.value.__cause__
    assert isinstance(cause, InputError) and str(info.value) == f"node 1 (LoadImage): {cause}"  # message kept


def test_without_the_cutout_engine_nothing_runs(settings, photo_png, calls):
    runner = WorkflowRunner(Engines(settings=settings))
    with pytest.raises(EngineUnavailableError, match="not available in this worker: the BEN2 cut-out engine"):
        runner.run(load("BG_remove_BEN2_simple_2nd.api.json"), {SIMPLE_NAME: photo_png})
    assert calls == []


# --------------------------------------------------------------------------- the full workflow


def test_full_workflow_without_safety_engines_fails_before_anything_runs(runner, photo_png, calls):
    full = load("BG_remove_BEN2_simple_1st.json")
    runner.prepare(full)  # it validates ...
    with pytest.raises(EngineUnavailableError) as info:  # ... but never runs here
        runner.run(full, {FULL_NAME: photo_png})
    text = str(info.value)
    assert "not available in this worker" in text
    assert "Florence-2" in text and "NudeNet" in text and "classifier" in text
    assert "node 8 Florence2Run" in text and "node 26 NudeNetSafetyChecker" in text
    assert calls == []  # no node ran: no cut-out, no image


def test_full_workflow_with_safety_engines(engines, photo, photo_png, calls):
    eng = full_engines(engines)
    result = WorkflowRunner(eng).run(load("BG_remove_BEN2_simple_1st.json"), {FULL_NAME: photo_png})
    assert sorted(calls, key=int) == ["1", "4", "5", "6", "8", "13", "14", "15", "16", "18", "25", "26", "27"]
    assert calls.index("27") < calls.index("4")  # the gate runs before BEN2
    (out,) = result.images
    assert (out.width, out.height) == (3000, 2000)  # the gate passes provenance through
    assert np.array_equal(decode(out)[..., :3], photo)
    texts = {t.node_id: t for t in result.texts}
    assert texts["14"].text == "A red ceramic vase on a wooden table." and texts["14"].class_type == "ShowText|pysssss"
    assert json.loads(texts["18"].text) == SAFE
    (call,) = eng.caption.calls
    assert call == {"shape": (836, 1254, 3), "task": "<MORE_DETAILED_CAPTION>", "num_beams": 3, "max_new_tokens": 512,
                    "do_sample": True, "seed": 25479647846595}
    assert eng.nudenet.calls == [((836, 1254, 3), 0.6)]
    assert eng.classifier.calls == [("A red ceramic vase on a wooden table.", 0.1, 300)]


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ({"nudenet": NudeNet(is_nsfw=True)}, "nudenet: FEMALE_BREAST_EXPOSED 0.91"),
        ({"classifier": Classifier(dict(SAFE, classification=dict(SAFE["classification"], violence="UNSAFE")))},
         "classifier: violence=UNSAFE"),
        # The LLM's sexual UNSAFE blocks even with nudenet_overrides_llama = true (fail closed).
        ({"classifier": Classifier(dict(SAFE, classification=dict(SAFE["classification"], sexual="UNSAFE")))},
         "classifier: sexual=UNSAFE"),
        ({"classifier": Classifier({"classification": {"sexual": "SAFE"}})}, "missing domain(s): violence"),
        ({"classifier": Classifier({"error": "model crashed", "classification": SAFE["classification"]})},
         "reported an error: model crashed"),
    ],
)
def test_gate_blocks_and_no_image_comes_back(engines, photo_png, calls, parts, reason):
    runner = WorkflowRunner(full_engines(engines, **parts))
    with pytest.raises(ContentBlockedError) as info:
        runner.run(load("BG_remove_BEN2_simple_1st.json"), {FULL_NAME: photo_png})
    assert isinstance(info.value, BlockedError) and not isinstance(info.value, InputError)  # the gate did its job
    assert str(info.value).startswith("Content blocked by hybrid safety gate: ")
    assert reason in str(info.value)
    assert "4" not in calls and "13" not in calls  # BEN2 and the output never ran


def test_engine_failure_is_an_error_not_a_verdict(engines, photo_png, calls):
    runner = WorkflowRunner(full_engines(engines, nudenet=NudeNet(fail=True)))
    with pytest.raises(WorkflowExecutionError, match=r"node 26 \(NudeNetSafetyChecker\) failed: RuntimeError"):
        runner.run(load("BG_remove_BEN2_simple_1st.json"), {FULL_NAME: photo_png})
    assert "4" not in calls


def test_full_workflow_model_file_missing_with_engines_served(engines, photo_png, tmp_path):
    eng = full_engines(engines)
    eng = dataclasses.replace(eng, settings=dataclasses.replace(eng.settings, models_dir=tmp_path))
    with pytest.raises(WorkflowValidationError, match="Florence-2-base"):
        WorkflowRunner(eng).run(load("BG_remove_BEN2_simple_1st.json"), {FULL_NAME: photo_png})


def test_json_extractor_node(engines):
    eng = full_engines(engines)
    wf = graph(
        ("1", "LocalJSONExtractorLlama", {"caption": "a vase", "model_path": f"D:\\models\\{GGUF}", "subject_priority": "product"}),
        ("2", "ShowText|pysssss", {"text": ["1", 0]}),
    )
    result = WorkflowRunner(eng).run(wf, {})
    assert result.images == [] and json.loads(result.texts[0].text)["primary_subject"] == "vase"
    unavailable = WorkflowRunner(dataclasses.replace(eng, classifier=None))
    with pytest.raises(EngineUnavailableError, match="Llama safety classifier"):
        unavailable.run(copy.deepcopy(wf), {})
