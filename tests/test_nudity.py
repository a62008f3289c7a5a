"""NudeNet on our own session (ben2_worker.safety.nudity), with the real 320n model from the
installed nudenet wheel, checked against nudenet's own NudeDetector on benign photos.

No explicit image can ship with the tests, so NSFW behaviour is tested through the pure
thresholding function on synthetic detection lists; everything the model does on a real
image is checked for equality with NudeNet itself."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

nudenet = pytest.importorskip("nudenet")  # the `full` extra
cv2 = pytest.importorskip("cv2")
from nudenet import nudenet as nudenet_module  # noqa: E402

from ben2_worker.config import Settings  # noqa: E402
from ben2_worker.engines import load_nudity_engine  # noqa: E402
from ben2_worker.errors import InputError, ModelError  # noqa: E402
from ben2_worker.safety.gate import parse_nudenet_json  # noqa: E402
from ben2_worker.safety.nudity import (  # noqa: E402
    ALL_LABELS,
    NSFW_LABELS,
    Detection,
    NudityDetector,
    nms,
    nsfw_verdict,
    preprocess,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
MODEL = Path(nudenet.__file__).resolve().parent / "320n.onnx"
CHECK_KEYS = {"is_nsfw", "max_score", "threshold", "detections", "all_detections_count", "model"}


def _rgb(name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(SAMPLES / f"{name}.jpg"))[..., ::-1])


@pytest.fixture(scope="module")
def detector() -> NudityDetector:
    return NudityDetector(MODEL, providers="cpu", threads=2)


@pytest.fixture(scope="module")
def reference():
    return nudenet.NudeDetector()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    astronaut = _rgb("astronaut")
    rocket = _rgb("rocket")
    return {
        "astronaut": astronaut,
        "chelsea": _rgb("chelsea"),
        "coffee": _rgb("coffee"),
        "rocket": rocket,
        # the face again, in a wide and a tall frame (letterboxing on each axis)
        "astronaut_wide": np.ascontiguousarray(np.concatenate([astronaut, cv2.resize(rocket, (700, 512))], axis=1)),
        "astronaut_tall": np.ascontiguousarray(cv2.resize(astronaut, (300, 700), interpolation=cv2.INTER_AREA)),
    }


def _same(ours: list[Detection], theirs: list[dict], *, px: int = 2) -> None:
    assert [d.label for d in ours] == [t["class"] for t in theirs]
    for d, t in zip(ours, theirs):
        assert d.score == pytest.approx(t["score"], abs=1e-4)
        assert all(abs(a - b) <= px for a, b in zip(d.box, t["box"])), (d.box, t["box"])


# --------------------------------------------------------------------------- model facts


def test_labels_are_nudenets_in_model_order(detector):
    assert ALL_LABELS == tuple(getattr(nudenet_module, "__labels"))
    assert len(ALL_LABELS) == 18 and set(NSFW_LABELS) < set(ALL_LABELS)
    assert detector.input_name == "images" and detector.output_name == "output0"
    assert detector.providers == ("CPUExecutionProvider",)


# --------------------------------------------------------------------------- same as NudeNet


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket", "astronaut_wide", "astronaut_tall"])
def test_matches_nudedetector(detector, reference, photos, name, tmp_path):
    rgb = photos[name]
    ours = detector.detect(rgb)
    _same(ours, reference.detect(rgb.copy()))
    # NudeDetector's file route, on a temp PNG that cv2.imread decodes back to `rgb` exactly
    # (that route swaps channels: see test_channel_order)
    path = tmp_path / f"{name}.png"
    cv2.imwrite(str(path), rgb)
    _same(ours, reference.detect(str(path)))


def test_other_resolution_matches_nudedetector(photos):
    ours = NudityDetector(MODEL, providers="cpu", threads=2, resolution=640)
    theirs = nudenet.NudeDetector(inference_resolution=640)
    for name in ("astronaut", "astronaut_wide"):
        _same(ours.detect(photos[name]), theirs.detect(photos[name].copy()))
    for bad in (0, 100, 320.0, True):
        with pytest.raises(ValueError, match="resolution"):
            NudityDetector(MODEL, resolution=bad)


def test_astronaut_is_a_female_face_with_a_sensible_box(detector, photos):
    found = [d for d in detector.detect(photos["astronaut"]) if d.label == "FACE_FEMALE"]
    assert len(found) == 1 and found[0].score > 0.7
    x, y, w, h = found[0].box
    # Eileen Collins' face sits in the upper middle of the 512×512 portrait
    assert 150 <= x <= 200 and 60 <= y <= 110 and 70 <= w <= 130 and 70 <= h <= 130
    assert not any(d.label in NSFW_LABELS for d in detector.detect(photos["astronaut"]))


def test_channel_order(detector, reference, photos, tmp_path):
    """NudeNet's detect(path) feeds the model BGR (3.4.2 reads with cv2, then swaps twice);
    its detect(array) and ours feed RGB. Written so the file route gets our RGB array back
    from cv2.imread, NudeDetector sees the same tensor we do."""
    rgb = photos["astronaut"]
    swapped_file = tmp_path / "as_read_by_cv2.png"
    cv2.imwrite(str(swapped_file), rgb)  # cv2.imread returns exactly `rgb`
    _same(detector.detect(rgb), reference.detect(str(swapped_file)))

    true_colour_file = tmp_path / "astronaut.png"
    cv2.imwrite(str(true_colour_file), rgb[..., ::-1])  # a normal PNG of the photo
    from_file = reference.detect(str(true_colour_file))
    _same(detector.detect(np.ascontiguousarray(rgb[..., ::-1])), from_file)  # = ours fed BGR
    ours = detector.detect(rgb)
    # the two orders really differ on this photo: the face scores higher in RGB (docs/safety.md)
    assert ours[0].label == from_file[0]["class"] == "FACE_FEMALE"
    assert ours[0].score > from_file[0]["score"] + 0.05


@pytest.mark.parametrize(
    "shape", [(512, 512), (300, 451), (640, 427), (1, 1), (3, 700), (700, 3), (200, 150), (319, 321), (1280, 33)]
)
def test_preprocess_is_nudenets_letterbox_bit_for_bit(photos, shape):
    h, w = shape
    img = np.ascontiguousarray(cv2.resize(photos["astronaut"], (w, h), interpolation=cv2.INTER_AREA))
    expected = nudenet_module._read_image(img.copy(), 320)[0]
    assert np.array_equal(preprocess(img, 320), expected)


def test_nms_matches_opencv():
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(0, 80, (n, 2))
        wh[rng.random(n) < 0.05] = 0  # some empty boxes
        boxes = np.concatenate([xy, wh], axis=1)
        scores = rng.uniform(0.1, 1, n).astype(np.float32)
        scores[rng.random(n) < 0.2] = np.float32(0.5)  # ties
        expected = list(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.25, 0.45))
        assert nms(boxes, scores) == [int(i) for i in expected]
    # IoU at the threshold, where OpenCV's float32 rounding decides; and a score at 0.25 is out
    for w in (9, 9.0000001, 8.9999999, 9.000001, 8.99999):
        boxes, scores = [[0, 0, 20, 10], [0, 0, w, 10], [50, 50, 5, 5]], [0.9, 0.8, 0.25]
        expected = [int(i) for i in cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)]
        assert nms(np.array(boxes, float), np.array(scores, np.float32)) == expected, w


# --------------------------------------------------------------------------- inputs


def test_grey_rgba_tiny_and_wide_images(detector, photos):
    rgb = photos["astronaut"]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert detector.detect(grey) == detector.detect(grey[:, :, None]) == detector.detect(np.repeat(grey[:, :, None], 3, 2))
    assert any(d.label == "FACE_FEMALE" for d in detector.detect(grey))
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent: still checked
    assert detector.detect(rgba) == detector.detect(rgb)
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    # a 40,000×30 strip: NudeNet would build a 40,000² square (4.8 GB); we never do
    strip = np.ascontiguousarray(np.tile(rgb[:30], (1, 80, 1))[:, :40_000])
    for det in detector.detect(strip):
        x, y, w, h = det.box
        assert 0 <= x <= 40_000 and 0 <= y <= 30 and x + w <= 40_000 and y + h <= 30
    assert detector.check(strip.transpose(1, 0, 2).copy())["model"] == "nudenet-320n"  # very tall too


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
     np.zeros((2, 4, 4, 3), np.uint8), [[0, 0], [0, 0]]],
)
def test_bad_inputs_are_input_errors(detector, bad):
    with pytest.raises(InputError):
        detector.detect(bad)


# --------------------------------------------------------------------------- the JSON


def test_check_schema(detector, photos):
    result = detector.check(photos["astronaut"])
    assert set(result) == CHECK_KEYS
    assert result == {"is_nsfw": False, "max_score": 0.0, "threshold": 0.6, "detections": [],
                      "all_detections_count": 1, "model": "nudenet-320n"}
    assert json.loads(json.dumps(result)) == result
    assert parse_nudenet_json(json.dumps(result)) == result
    with_labels = detector.check(photos["coffee"], 0.5, {"BUTTOCKS_EXPOSED": 0.3})
    assert set(with_labels) == CHECK_KEYS | {"label_thresholds"}
    assert with_labels["label_thresholds"] == {"BUTTOCKS_EXPOSED": 0.3}
    assert parse_nudenet_json(with_labels) == with_labels
    with pytest.raises(ValueError):
        detector.check(photos["coffee"], 1.5)
    with pytest.raises(ValueError):
        detector.check(photos["coffee"], label_thresholds={"NOT_A_LABEL": 0.5})


def test_coffee_false_positive_is_below_threshold(detector, photos):
    """The coffee photo gets a weak BUTTOCKS_EXPOSED box (NudeNet does the same): under the
    user's 0.6 it is reported in max_score but does not make the image NSFW."""
    result = detector.check(photos["coffee"])
    assert result["is_nsfw"] is False and result["detections"] == []
    assert 0.25 < result["max_score"] < 0.6


def colour_wheel(n: int = 370) -> np.ndarray:
    """A generated HSV colour wheel (hue by angle, saturation rising and brightness falling
    with the radius, black outside) — benign, yet NudeNet 320n calls it BUTTOCKS_EXPOSED at
    about 0.8 (so does scikit-image's color.png). The one NSFW-positive input a test can ship."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = (n - 1) / 2
    dx, dy = xx - c, yy - c
    r = np.sqrt(dx * dx + dy * dy) / c
    hsv = np.zeros((n, n, 3), np.uint8)
    hsv[..., 0] = ((np.degrees(np.arctan2(dx, -dy)) % 360) / 2).astype(np.uint8)
    hsv[..., 1] = np.clip(r * 255, 0, 255).astype(np.uint8)
    hsv[..., 2] = np.clip((1 - r**2) * 255, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb[r > 1] = 0
    return np.ascontiguousarray(rgb)


def test_a_positive_end_to_end_on_a_benign_false_positive(detector, reference):
    wheel = colour_wheel()
    _same(detector.detect(wheel), reference.detect(wheel.copy()))
    result = detector.check(wheel)
    assert result["is_nsfw"] is True
    assert [d["label"] for d in result["detections"]] == ["BUTTOCKS_EXPOSED"]
    hit = result["detections"][0]
    assert hit["score"] == result["max_score"] > 0.7
    assert isinstance(hit["box"], list) and len(hit["box"]) == 4 and all(isinstance(v, int) for v in hit["box"])
    assert parse_nudenet_json(json.dumps(result)) == result
    # a per-label threshold above its score clears it; the global threshold does too
    relaxed = detector.check(wheel, label_thresholds={"BUTTOCKS_EXPOSED": 0.95})
    assert relaxed["is_nsfw"] is False and relaxed["detections"] == [] and relaxed["max_score"] == result["max_score"]
    assert detector.check(wheel, 0.95)["is_nsfw"] is False
    from ben2_worker.safety.gate import decide

    classifier = {"classification": dict.fromkeys(("sexual", "violence", "hate", "disturbing", "drugs"), "SAFE"),
                  "reasons": ["a colour wheel"], "confidence": 0.99}
    verdict = decide(json.dumps(result), classifier)
    assert verdict.blocked_by == ("nudenet",)
    assert verdict.status_text().startswith("BLOCKED by nudenet: BUTTOCKS_EXPOSED 0.")


DETS = [
    Detection("FACE_FEMALE", 0.9, (1, 2, 3, 4)),
    Detection("BUTTOCKS_EXPOSED", 0.55, (5, 6, 7, 8)),
    Detection("FEMALE_BREAST_EXPOSED", 0.7, (9, 10, 11, 12)),
    Detection("MALE_BREAST_EXPOSED", 0.8, (0, 0, 5, 5)),
]


def test_thresholding_is_a_pure_function():
    r = nsfw_verdict(DETS, 0.6)
    assert r == {"is_nsfw": True, "max_score": 0.7, "threshold": 0.6,
                 "detections": [{"label": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [9, 10, 11, 12]}],
                 "all_detections_count": 4, "model": "nudenet-320n"}
    # a per-label override decides: relax breasts -> clean; tighten buttocks -> NSFW again
    relaxed = nsfw_verdict(DETS, 0.6, {"FEMALE_BREAST_EXPOSED": 0.75})
    assert relaxed["is_nsfw"] is False and relaxed["detections"] == [] and relaxed["max_score"] == 0.7
    assert relaxed["label_thresholds"] == {"FEMALE_BREAST_EXPOSED": 0.75}
    both = nsfw_verdict(DETS, 0.6, {"FEMALE_BREAST_EXPOSED": 0.75, "BUTTOCKS_EXPOSED": 0.5})
    assert [d["label"] for d in both["detections"]] == ["BUTTOCKS_EXPOSED"] and both["is_nsfw"]
    # the global threshold, inclusive
    assert nsfw_verdict(DETS, 0.55)["is_nsfw"] and len(nsfw_verdict(DETS, 0.55)["detections"]) == 2
    assert not nsfw_verdict(DETS, 0.71)["is_nsfw"]
    # a non-NSFW label is ignored unless given a threshold, which makes it checked
    assert nsfw_verdict([DETS[0], DETS[3]], 0.6)["is_nsfw"] is False
    extra = nsfw_verdict([DETS[0], DETS[3]], 0.6, {"MALE_BREAST_EXPOSED": 0.7})
    assert extra["is_nsfw"] and extra["max_score"] == 0.8
    # nothing detected
    assert nsfw_verdict([], 0.6) == {"is_nsfw": False, "max_score": 0.0, "threshold": 0.6, "detections": [],
                                     "all_detections_count": 0, "model": "nudenet-320n"}
    assert "label_thresholds" not in nsfw_verdict(DETS) and nsfw_verdict(DETS, label_thresholds={})["label_thresholds"] == {}


@pytest.mark.parametrize("bad", [{"FACE": 0.5}, {"BUTTOCKS_EXPOSED": 2}, {"BUTTOCKS_EXPOSED": float("nan")},
                                 {"BUTTOCKS_EXPOSED": True}, {"BUTTOCKS_EXPOSED": "0.5"}])
def test_bad_label_thresholds(bad):
    with pytest.raises(ValueError):
        nsfw_verdict(DETS, 0.6, bad)


# --------------------------------------------------------------------------- model files


def test_missing_and_corrupt_models_raise_model_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "320n.onnx"
    with pytest.raises(ModelError, match=str(missing)):
        NudityDetector(missing)
    corrupt = tmp_path / "320n.onnx"
    corrupt.write_bytes(MODEL.read_bytes()[:100_000])
    with pytest.raises(ModelError, match=str(corrupt)):
        NudityDetector(corrupt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match=str(garbage)):
        NudityDetector(garbage)


def test_a_model_with_other_classes_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MODEL))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = str({i: name for i, name in enumerate(reversed(ALL_LABELS))})
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="18 labels"):
        NudityDetector(path)


def test_engine_factory(tmp_path):
    settings = Settings(models_dir=tmp_path, providers="cpu", threads=1)
    with pytest.raises(ModelError, match="320n.onnx"):
        load_nudity_engine(settings)
    (tmp_path / "nudenet").mkdir()
    shutil.copyfile(MODEL, tmp_path / "nudenet" / "320n.onnx")
    assert load_nudity_engine(settings).path == tmp_path / "nudenet" / "320n.onnx"
    # a file that is not the pinned one is refused, never used (no fallback, and the
    # custom-model switch does not apply to NudeNet, whose model ships in its wheel)
    data = bytearray(MODEL.read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "nudenet" / "320n.onnx").write_bytes(bytes(data))
    (tmp_path / ".verified.json").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="320n.onnx"):
        load_nudity_engine(Settings(models_dir=tmp_path, providers="cpu", threads=1, allow_custom_models=True))


# --------------------------------------------------------------------------- threads


def test_concurrent_checks_give_identical_results(detector, photos):
    names = ["astronaut", "coffee", "astronaut_wide", "chelsea"]
    expected = {name: detector.check(photos[name], 0.3) for name in names}
    results: list[tuple[str, dict]] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(6):
                name = names[(i + offset) % len(names)]
                results.append((name, detector.check(photos[name], 0.3)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 24
    for name, result in results:
        assert result == expected[name]
