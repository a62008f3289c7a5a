"""The output canvas: crop, subject scale and position, a fixed canvas size, output size
presets, semi-transparency, channels and the output format — the options users of hosted
cut-out APIs send (remove.bg's names, docs/edges.md "Output options").

Pure functions on numpy arrays: the photo's colours (refined or not), the full-resolution
matte, and what they produce: a canvas plus the subject's box on it (remove.bg answers it as
``X-Foreground-Top/Left/Width/Height``).

Order, applied by the engine: ``size`` limits the photo before post-processing (a preview is
cheaper to make, not only smaller); the matte is made at that size; :func:`lay_out` places the
subject on the canvas; ``semitransparency`` hardens the placed matte; shadows and the
background colour are composed last (shadow.py). The vocabularies (size presets, channels)
are declared in :mod:`ben2_worker.options`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InputError
from ..options import SIZE_PRESETS, check_choice
from .crop import CropMargin, crop_box, subject_bbox

SCALE_RANGE = (10.0, 100.0)  # percent


# --------------------------------------------------------------------------- size


def size_limit(size: str) -> int | None:
    """Pixel budget of a ``size`` preset (None: full size)."""
    return SIZE_PRESETS[check_choice("size", size)]


def fit_pixels(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) shrunk, aspect kept, to at most ``max_pixels``; never enlarged."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    k = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * k)), max(1, int(height * k))


# --------------------------------------------------------------------------- parsing


def parse_scale(text: str | float | None) -> float | None:
    """``original`` (None) or 10-100 % (``85%``, ``85``) -> a fraction of the canvas."""
    if text is None:
        return None
    raw = str(text).strip().lower()
    if raw in ("", "original"):
        return None
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        value = math.nan
    if not SCALE_RANGE[0] <= value <= SCALE_RANGE[1]:
        raise InputError(f"scale must be 'original' or between 10% and 100%, got {text!r}", field="scale")
    return value / 100


def parse_position(text: str | None) -> tuple[float, float] | None:
    """``original`` (None), ``center``, ``X%`` (both axes) or ``X% Y%`` -> fractions (x, y):
    0 puts the subject against the left/top edge, 1 against the right/bottom."""
    if text is None:
        return None
    raw = str(text).strip().lower()
    if raw in ("", "original"):
        return None
    if raw in ("center", "centre"):
        return 0.5, 0.5
    parts = [p for p in re.split(r"[\s,]+", raw) if p]
    try:
        values = [float(p.rstrip("%")) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(0 <= v <= 100 for v in values):
        raise InputError(f"position must be 'original', 'center', 'X%' or 'X% Y%' (0-100), got {text!r}",
                         field="position")
    return values[0] / 100, values[1] / 100


def parse_output_size(text: str | None, limit: int = 10_000) -> tuple[int, int] | None:
    """``WxH`` (e.g. ``2000x2000``) -> (width, height); None or empty: the natural size."""
    if text is None or str(text).strip() == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[x×X*]\s*(\d+)\s*", str(text))
    if not m or not (1 <= int(m[1]) <= limit and 1 <= int(m[2]) <= limit):
        raise InputError(f"output_size must be WIDTHxHEIGHT with sides 1-{limit}, e.g. 2000x2000, got {text!r}",
                         field="output_size")
    return int(m[1]), int(m[2])


def resolve_format(requested: str, *, transparent: bool) -> str:
    """The output format for imaging.encode_image: ``auto`` is PNG when the result has
    transparency (or is a matte, which must survive encoding exactly) and JPEG otherwise, as
    remove.bg does; any other name is checked and made canonical (``jpg`` -> ``jpeg``)."""
    from ..imaging import normalize_format

    if str(requested).strip().lower() == "auto":
        return "png" if transparent else "jpeg"
    return normalize_format(requested)


# --------------------------------------------------------------------------- subject


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


def harden(alpha: np.ndarray) -> np.ndarray:
    """``semitransparency=false``: every pixel fully opaque or fully clear (threshold at half)."""
    return np.where(alpha >= 128, np.uint8(255), np.uint8(0))


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class LayoutOptions:
    crop: bool = False
    crop_margin: CropMargin = field(default_factory=CropMargin)
    scale: float | None = None  # fraction of the canvas the subject's box fits in; None: original
    position: tuple[float, float] | None = None  # fractions; None: original
    output_size: tuple[int, int] | None = None  # fixed canvas (width, height)

    @property
    def is_identity(self) -> bool:
        return not self.crop and self.scale is None and self.position is None and self.output_size is None


@dataclass(frozen=True)
class Canvas:
    rgb: np.ndarray  # (H, W, 3) uint8 colours (meaningless where alpha is 0)
    alpha: np.ndarray  # (H, W) uint8
    subject: tuple[int, int, int, int] | None  # (left, top, width, height) on the canvas
    source_box: Box  # the photo region the canvas was laid out from


def lay_out(rgb: np.ndarray, alpha: np.ndarray, options: LayoutOptions = LayoutOptions()) -> Canvas:
    """Place the cut-out on its output canvas.

    - No options: the photo's own frame, untouched.
    - ``crop``: the region is the subject's box grown by ``crop_margin``; without a fixed
      canvas, the canvas is that region.
    - ``output_size`` without ``scale``: the region is fitted (contained) into the canvas.
    - ``scale``: the subject's box is fitted into ``scale`` of the canvas (both sides).
    - ``position``: where the placed subject (or region) sits; ``None`` (``original``)
      centres it: a region fitted whole keeps the subject where it was in the region, and a
      scaled subject is centred, as remove.bg does.

    Resampling is done on premultiplied colours, so clear pixels never bleed their colour
    into the edge; area averaging when shrinking, bilinear when enlarging."""
    h, w = alpha.shape
    bbox = subject_bbox(alpha)
    if options.is_identity:
        return Canvas(rgb, alpha, _as_subject(bbox), (0, 0, w, h))
    region = crop_box(bbox, options.crop_margin, w, h) if options.crop and bbox else (0, 0, w, h)
    rx0, ry0, rx1, ry1 = region
    if options.scale is None and options.output_size is None:  # a crop alone: the region itself
        sub = None if bbox is None else (bbox[0] - rx0, bbox[1] - ry0, bbox[2] - bbox[0], bbox[3] - bbox[1])
        return Canvas(np.ascontiguousarray(rgb[ry0:ry1, rx0:rx1]), np.ascontiguousarray(alpha[ry0:ry1, rx0:rx1]),
                      sub, region)
    rw, rh = rx1 - rx0, ry1 - ry0
    cw, ch = options.output_size or (rw, rh)

    if options.scale is not None and bbox is not None:
        bx0, by0, bx1, by1 = bbox
        k = options.scale * min(cw / (bx1 - bx0), ch / (by1 - by0))
        anchor, extent = (bx0, by0), (bx1 - bx0, by1 - by0)
        # A scaled subject is centred unless placed (remove.bg: scale implies position=center).
        left, top = _place(options.position or (0.5, 0.5), k * extent[0], k * extent[1], cw, ch)
    else:
        k = min(cw / rw, ch / rh)
        anchor, extent = (rx0, ry0), (rw, rh)
        left, top = _place(options.position or (0.5, 0.5), k * rw, k * rh, cw, ch)

    # Canvas pixel (X, Y) shows photo point anchor + ((X, Y) - (left, top)) / k.
    out_rgb = np.zeros((ch, cw, 3), np.uint8)
    out_a = np.zeros((ch, cw), np.uint8)
    cx0, cy0 = max(0, int(math.floor(left))), max(0, int(math.floor(top)))
    cx1, cy1 = min(cw, int(math.ceil(left + k * extent[0]))), min(ch, int(math.ceil(top + k * extent[1])))
    if cx1 > cx0 and cy1 > cy0:
        # The photo rectangle those canvas pixels come from (with one pixel of slack).
        sx0 = max(0, int(math.floor(anchor[0] + (cx0 - left) / k)) - 1)
        sy0 = max(0, int(math.floor(anchor[1] + (cy0 - top) / k)) - 1)
        sx1 = min(w, int(math.ceil(anchor[0] + (cx1 - left) / k)) + 1)
        sy1 = min(h, int(math.ceil(anchor[1] + (cy1 - top) / k)) + 1)
        prem = _premultiply(rgb[sy0:sy1, sx0:sx1], alpha[sy0:sy1, sx0:sx1])
        a = alpha[sy0:sy1, sx0:sx1]
        fx = fy = 1.0  # pre-shrink factors of the source crop
        if k < 1:  # shrink by area first: warpAffine alone would alias hair strands
            size = (max(1, int(round((sx1 - sx0) * k))), max(1, int(round((sy1 - sy0) * k))))
            prem = cv2.resize(prem, size, interpolation=cv2.INTER_AREA)
            a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / (sx1 - sx0), size[1] / (sy1 - sy0)
        # Inverse map: canvas pixel centre (cx0 + X + .5) -> photo coordinate
        # anchor + (cx0 + X + .5 - left) / k -> crop pixel index (that - sx0) * fx - .5.
        inv = np.float32([
            [fx / k, 0, ((cx0 + 0.5 - left) / k + anchor[0] - sx0) * fx - 0.5],
            [0, fy / k, ((cy0 + 0.5 - top) / k + anchor[1] - sy0) * fy - 0.5],
        ])
        size = (cx1 - cx0, cy1 - cy0)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        prem = cv2.warpAffine(prem, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = cv2.warpAffine(a, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out_rgb[cy0:cy1, cx0:cx1] = _unpremultiply(prem, a)
        out_a[cy0:cy1, cx0:cx1] = a
    return Canvas(out_rgb, out_a, _as_subject(subject_bbox(out_a)), region)


def _place(position: tuple[float, float], pw: float, ph: float, cw: int, ch: int) -> tuple[float, float]:
    return position[0] * (cw - pw), position[1] * (ch - ph)


def _as_subject(bbox: Box | None) -> tuple[int, int, int, int] | None:
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    return x0, y0, x1 - x0, y1 - y0


def _premultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return cv2.multiply(rgb, cv2.merge([alpha, alpha, alpha]), scale=1 / 255)


def _unpremultiply(prem: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # cv2.divide answers 0 where alpha is 0 (fully clear pixels carry no colour).
    return cv2.divide(prem, cv2.merge([alpha, alpha, alpha]), scale=255)
