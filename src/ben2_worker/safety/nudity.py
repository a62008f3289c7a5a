"""NudeNet's 320n detector on our own onnxruntime session, on in-memory RGB images.

The model is the ``320n.onnx`` shipped in the ``nudenet`` 3.4.2 wheel (manifest entry
``nudenet``, ``<models_dir>/nudenet/320n.onnx``): an Ultralytics YOLOv8 export, input
``images`` ``[N,3,H,W]`` float32 0..1, output ``output0`` ``[N,4+18,rows]``. We build the
session ourselves because ``nudenet.NudeDetector`` ignores its ``providers`` argument (always
CPU); pre- and post-processing reproduce ``nudenet/nudenet.py`` 3.4.2 step by step:

* **pre**: pad right and bottom with black to a square of the longer side, resize that square
  to ``resolution`` with ``cv2.INTER_LINEAR`` on uint8, scale by 1/255, NCHW. We never build
  the padded square itself (a 50 MP panorama would need gigabytes): we pad only a margin past
  the image and resize with the same scale factor, which is bit-identical (tested).
* **channels**: the model gets **RGB** — the order Ultralytics trains YOLOv8 in, and what
  ``NudeDetector.detect(rgb_array)`` feeds. (``detect(path)`` feeds BGR: 3.4.2 reads with
  cv2 and swaps twice.) Callers give RGB; grey is replicated, alpha is dropped. See
  docs/safety.md for the evidence.
* **post**: per row, the best class score; rows under 0.2 dropped; centre boxes to top-left,
  scaled by ``longer side / resolution``, clipped as NudeNet clips (including its quirk of not
  shrinking a box clipped at the left/top), then class-agnostic greedy NMS exactly like
  ``cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)``: scores strictly above 0.25, IoU at most
  0.45 kept. Boxes are truncated to int ``(x, y, w, h)`` in original pixels.

:meth:`NudityDetector.check` turns detections into the user's NudeNetSafetyChecker JSON, with
optional per-label thresholds (:func:`nsfw_verdict`, a pure function). Nothing here falls back
to anything: a missing or broken model raises :class:`~ben2_worker.errors.ModelError`."""

from __future__ import annotations

import ast
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ben2_worker.errors import InputError, ModelCorruptError, ModelError, ModelMissingError
from ben2_worker.runtime import resolve_providers, session_options

log = logging.getLogger(__name__)

MODEL_NAME = "nudenet"  # manifest entry
MODEL_ID = "nudenet-320n"  # the "model" field of check()'s JSON

#: The 18 classes, in the model's output order (nudenet 3.4.2 ``__labels``; also the ONNX
#: metadata ``names``, which the loader checks against this).
ALL_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
#: The labels the user's NudeNetSafetyChecker counts as NSFW.
NSFW_LABELS = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
)
DEFAULT_THRESHOLD = 0.6  # the user's node default
DEFAULT_RESOLUTION = 320
#: nudenet 3.4.2 ``_postprocess``: rows whose best class score is below this are dropped...
CANDIDATE_THRESHOLD = 0.2
#: ...then ``cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)``.
NMS_SCORE_THRESHOLD = 0.25
NMS_IOU_THRESHOLD = 0.45


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, w, h in original pixels

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "box": list(self.box)}


# --------------------------------------------------------------------------- pure steps


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H,W) / (H,W,1) grey, (H,W,3) RGB or (H,W,4) RGBA uint8 -> contiguous (H,W,3) RGB.

    Alpha is dropped, not composited: the detector sees every stored pixel, including ones a
    transparent alpha hides (they may be revealed downstream)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(image).__name__}", field="image")
    if image.dtype != np.uint8:
        raise InputError(f"expected uint8 pixels, got {image.dtype}", field="image")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"expected (H,W), (H,W,1), (H,W,3) or (H,W,4), got shape {image.shape}", field="image")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"empty image {image.shape}", field="image")
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


def preprocess(rgb: np.ndarray, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (1,3,R,R) float32 0..1, NudeNet 3.4.2's letterbox bit for bit.

    NudeNet pads to a square of side S = max(H, W) (right/bottom, black) and lets
    ``cv2.dnn.blobFromImage`` resize it to R×R (INTER_LINEAR, uint8) and scale by 1/255. Each
    output pixel of a linear resize reads at most two source pixels per axis, so padding only
    ``2*ceil(S/R)+2`` pixels past the image and resizing with the same factor R/S gives the
    same pixels; the rest of the canvas is the black padding."""
    import cv2

    h, w = rgb.shape[:2]
    side = max(h, w)
    margin = 2 * math.ceil(side / resolution) + 2
    pw, ph = min(side, w + margin), min(side, h + margin)
    padded = cv2.copyMakeBorder(rgb, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    factor = resolution / side  # the same double cv2 derives from dsize=(R, R) and a S×S source
    resized = cv2.resize(padded, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((resolution, resolution, 3), np.uint8)
    rh, rw = min(resolution, resized.shape[0]), min(resolution, resized.shape[1])
    canvas[:rh, :rw] = resized[:rh, :rw]
    blob = canvas.astype(np.float32) * np.float32(1 / 255.0)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = NMS_SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU_THRESHOLD) -> list[int]:
    """Greedy class-agnostic NMS with ``cv2.dnn.NMSBoxes``' exact rules (boxes ``x,y,w,h``).

    Keeps scores strictly above ``score_threshold``, visits them by descending score (stable
    for ties), keeps a box whose IoU with every kept box is at most ``iou_threshold``. Two
    empty boxes count as overlapping fully, as in OpenCV's ``jaccardDistance``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    for idx in order:
        if kept:  # a handful of boxes survive the score cut: a plain loop is fast enough
            k = np.asarray(kept)
            iw = np.minimum(x2[idx], x2[k]) - np.maximum(x1[idx], x1[k])
            ih = np.minimum(y2[idx], y2[k]) - np.maximum(y1[idx], y1[k])
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
            total = area[idx] + area[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                distance = np.where(total <= np.finfo(np.float64).eps, 0.0, 1.0 - inter / (total - inter))
            # OpenCV: overlap = 1.f - (float)jaccardDistance; kept while overlap <= (float)threshold
            overlap = np.float32(1) - distance.astype(np.float32)
            if np.any(overlap > np.float32(iou_threshold)):
                continue
        kept.append(int(idx))
    return kept


def postprocess(output: np.ndarray, width: int, height: int, resolution: int = DEFAULT_RESOLUTION) -> list[Detection]:
    """One image's raw output ``(4+18, rows)`` -> detections in original pixels, best first.

    Reproduces nudenet 3.4.2 ``_postprocess`` in float32, vectorised."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != 4 + len(ALL_LABELS):
        raise ModelError(f"NudeNet output has shape {out.shape}; expected ({4 + len(ALL_LABELS)}, rows)")
    rows = out.T
    class_scores = rows[:, 4:]
    best = class_scores.max(axis=1)
    keep = best >= np.float32(CANDIDATE_THRESHOLD)
    if not keep.any():
        return []
    rows, best = rows[keep], best[keep]
    class_ids = class_scores[keep].argmax(axis=1)
    cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    side = np.float32(max(width, height))  # NudeNet: (original + pad) / model size, on each axis
    res = np.float32(resolution)
    x = (cx - bw / np.float32(2)) * side / res
    y = (cy - bh / np.float32(2)) * side / res
    w = bw * side / res
    h = bh * side / res
    # NudeNet's clipping, as written: x, y into the image, then w, h to the image's far edge.
    x = np.clip(x, 0, np.float32(width))
    y = np.clip(y, 0, np.float32(height))
    w = np.minimum(w, np.float32(width) - x)
    h = np.minimum(h, np.float32(height) - y)
    boxes = np.stack([x, y, w, h], axis=1)
    detections = []
    for i in nms(boxes, best):
        bx, by, bw_, bh_ = (int(v) for v in boxes[i])
        detections.append(Detection(ALL_LABELS[int(class_ids[i])], float(best[i]), (bx, by, bw_, bh_)))
    return detections


def _check_threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def normalise_label_thresholds(label_thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Validate per-label thresholds: keys among :data:`ALL_LABELS`, values in 0..1."""
    if not label_thresholds:
        return {}
    if not isinstance(label_thresholds, Mapping):
        raise ValueError(f"label_thresholds must be a mapping of label -> threshold, got {type(label_thresholds).__name__}")
    result = {}
    for label, value in label_thresholds.items():
        if label not in ALL_LABELS:
            raise ValueError(f"label_thresholds: unknown label {label!r}; known labels: {', '.join(ALL_LABELS)}")
        result[label] = _check_threshold(f"label_thresholds[{label!r}]", value)
    return result


def nsfw_verdict(detections: Iterable[Detection], threshold: float = DEFAULT_THRESHOLD,
                 label_thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The user's NudeNetSafetyChecker JSON from a detection list (pure; no model).

    A label is checked when it is in :data:`NSFW_LABELS` or has an entry in
    ``label_thresholds`` (which can so add e.g. ``MALE_BREAST_EXPOSED``); its threshold is its
    entry there, else ``threshold``. ``detections`` lists checked labels at or above their
    threshold, best first; ``is_nsfw`` is whether there is any; ``max_score`` is the highest
    score of any checked-label detection, above its threshold or not (0.0 if none)."""
    threshold = _check_threshold("threshold", threshold)
    per_label = normalise_label_thresholds(label_thresholds)
    detections = list(detections)
    checked = set(NSFW_LABELS) | set(per_label)
    hits = []
    max_score = 0.0
    for det in detections:
        if det.label not in checked:
            continue
        max_score = max(max_score, float(det.score))
        if det.score >= per_label.get(det.label, threshold):
            hits.append(det)
    hits.sort(key=lambda d: -d.score)
    result: dict[str, Any] = {
        "is_nsfw": bool(hits),
        "max_score": max_score,
        "threshold": threshold,
        "detections": [d.as_dict() for d in hits],
        "all_detections_count": len(detections),
        "model": MODEL_ID,
    }
    if label_thresholds is not None:
        result["label_thresholds"] = per_label
    return result


# --------------------------------------------------------------------------- the engine


class NudityDetector:
    """NudeNet 320n on one shared onnxruntime session; ``detect``/``check`` are thread-safe."""

    def __init__(self, model_path: str | Path, *, providers: str = "auto", threads: int | None = None,
                 resolution: int = DEFAULT_RESOLUTION):
        import onnxruntime

        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32 or resolution % 32:
            raise ValueError(f"resolution must be a positive multiple of 32 (the model's stride), got {resolution!r}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelMissingError(
                f"NudeNet model not found at {path}; run `ben2-worker models download {MODEL_NAME}` "
                "(it is copied out of the installed nudenet package) or point BEN2_WORKER_MODELS at the "
                "folder holding nudenet/320n.onnx"
            )
        chosen = resolve_providers(providers)
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise ModelCorruptError(f"could not load NudeNet model {path}: {exc}") from exc
        self.path = path
        self.resolution = resolution
        self._check_model()
        self.providers = tuple(self.session.get_providers())
        self._lock = threading.Lock()
        log.info("NudeNet loaded from %s at %d px on %s", path, resolution, ", ".join(self.providers))

    def _check_model(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 4:
            raise ModelCorruptError(
                f"{self.path} is not the NudeNet detector: expected one NCHW input, got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        try:
            names = self.session.get_modelmeta().custom_metadata_map.get("names")
        except (UnicodeDecodeError, RuntimeError) as exc:  # damaged metadata strings
            raise ModelCorruptError(f"{self.path}: unreadable model metadata ({exc}); not NudeNet's detector") from exc
        if names is not None:  # Ultralytics exports record their class names; check the order
            try:
                parsed = ast.literal_eval(names)
                labels = tuple(parsed[i] for i in range(len(parsed)))
            except (ValueError, SyntaxError, KeyError, TypeError) as exc:
                raise ModelCorruptError(f"{self.path}: unreadable class names in the model metadata: {exc}") from exc
            if labels != ALL_LABELS:
                raise ModelCorruptError(f"{self.path}: the model's classes {labels} are not NudeNet's 18 labels in order")

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Every detection (all 18 labels, score > 0.25 after NMS), best first."""
        image = as_rgb(rgb)
        height, width = image.shape[:2]
        blob = preprocess(image, self.resolution)
        with self._lock:  # concurrent runs on one CPU quota only thrash; keep latency predictable
            output = self.session.run([self.output_name], {self.input_name: blob})[0]
        output = np.asarray(output)
        if output.ndim != 3 or output.shape[0] != 1:
            raise ModelError(f"NudeNet output has shape {output.shape}; expected (1, 22, rows)")
        return postprocess(output[0], width, height, self.resolution)

    def check(self, rgb: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
              label_thresholds: dict[str, float] | None = None) -> dict[str, Any]:
        """The user's NudeNetSafetyChecker JSON for one image (see :func:`nsfw_verdict`)."""
        # Validate the thresholds before spending an inference on them.
        _check_threshold("threshold", threshold)
        normalise_label_thresholds(label_thresholds)
        return nsfw_verdict(self.detect(rgb), threshold, label_thresholds)
