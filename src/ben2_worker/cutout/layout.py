"""The output canvas: crop, subject scale and position, a fixed canvas size, output size
presets, semi-transparency, channels and the output format — the options users of hosted
cut-out APIs send (remove.bg's names, docs/edges.md "Output options").

Pure functions on numpy arrays: the photo's colours (refined or not), the full-resolution
matte, and what they produce: a canvas plus the subject's box on it (remove.bg answers it as
``X-Foreground-Top/Left/Width/Height``).

Order, applied by the engine: ``size`` limits the photo before post-processing (a preview is
cheaper to make, not only smaller); the matte is made at that size; :func:`lay_out` places the
subject on the canvas; ``semitransparency`` hardens the placed matte; shadows and the
background colour are composed last (shadow.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InputError

#: Alpha (0..255) above which a pixel counts as subject (crop, subject box, placement).
SUBJECT_ALPHA_THRESHOLD = 10

#: ``size`` presets -> the most pixels the photo keeps (None: its full size). remove.bg's
#: current names (preview ≈ 0.25 MP, full, auto) and the legacy ones older clients still send.
SIZE_PIXELS: dict[str, int | None] = {
    "preview": 250_000,
    "full": None,
    "auto": None,  # remove.bg: the best its plan allows; here always the full size
    "small": 250_000,
    "regular": 250_000,
    "medium": 1_500_000,
    "hd": 4_000_000,
    "4k": None,
}

SCALE_RANGE = (10.0, 100.0)  # percent
FORMATS = ("auto", "png", "jpeg", "jpg", "webp")
CHANNELS = ("rgba", "alpha")


# --------------------------------------------------------------------------- size


def size_limit(size: str) -> int | None:
    """Pixel budget of a ``size`` preset (None: full size)."""
    key = str(size).strip().lower()
    if key not in SIZE_PIXELS:
        raise InputError(f"size must be one of {', '.join(SIZE_PIXELS)}, got {size!r}", field="size")
    return SIZE_PIXELS[key]


def fit_pixels(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) shrunk, aspect kept, to at most ``max_pixels``; never enlarged."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    k = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * k)), max(1, int(height * k))


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class CropMargin:
    """Margin around the subject: pixels, or a percentage of the subject's larger side."""

    value: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int | float) -> "CropMargin":
        raw = str(text).strip()
        try:
            margin = cls(float(raw[:-1]), True) if raw.endswith("%") else cls(float(raw), False)
        except ValueError:
            raise InputError(f"crop_margin must be pixels (e.g. 20) or a percentage (e.g. 5%), got {text!r}",
                             field="crop_margin") from None
        if not math.isfinite(margin.value) or margin.value < 0 or (margin.percent and margin.value > 100):
            raise InputError(f"crop_margin must be between 0 and 100% or a non-negative pixel count, got {text!r}",
                             field="crop_margin")
        return margin

    def pixels(self, subject_side: int) -> int:
        return int(round(self.value * subject_side / 100 if self.percent else self.value))


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


def resolve_format(requested: str, *, transparent: bool, channels: str = "rgba") -> str:
    """The output format name for imaging.encode_image: ``auto`` is PNG when the result has
    transparency and JPEG otherwise, as remove.bg does — except an alpha-only result, which
    stays PNG: a matte must survive encoding exactly."""
    key = str(requested).strip().lower()
    if key not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {requested!r}", field="format")
    if key == "auto":
        return "png" if transparent or channels == "alpha" else "jpeg"
    return "jpeg" if key == "jpg" else key


def check_channels(channels: str) -> str:
    key = str(channels).strip().lower()
    if key not in CHANNELS:
        raise InputError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}", field="channels")
    return key


# --------------------------------------------------------------------------- subject


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


def subject_bbox(alpha: np.ndarray, threshold: int = SUBJECT_ALPHA_THRESHOLD) -> Box | None:
    """Bounding box of the pixels with alpha above ``threshold``; None when there are none."""
    mask = alpha > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def crop_box(bbox: Box, margin: CropMargin, width: int, height: int) -> Box:
    """The subject's box grown by ``margin`` and clipped to the frame."""
    x0, y0, x1, y1 = bbox
    pad = margin.pixels(max(x1 - x0, y1 - y0))
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)


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
    - ``position``: where the placed subject (or region) sits; ``None`` keeps the subject's
      relative place in the region, which for a region fitted whole means centred.

    Resampling is done on premultiplied colours, so clear pixels never bleed their colour
    into the edge; area averaging when shrinking, bilinear when enlarging."""
    h, w = alpha.shape
    bbox = subject_bbox(alpha)
    if options.is_identity:
        return Canvas(rgb, alpha, _as_subject(bbox), (0, 0, w, h))
    region = crop_box(bbox, options.crop_margin, w, h) if options.crop and bbox else (0, 0, w, h)
    rx0, ry0, rx1, ry1 = region
    rw, rh = rx1 - rx0, ry1 - ry0
    cw, ch = options.output_size or (rw, rh)

    if options.scale is not None and bbox is not None:
        bx0, by0, bx1, by1 = bbox
        k = options.scale * min(cw / (bx1 - bx0), ch / (by1 - by0))
        anchor, extent = (bx0, by0), (bx1 - bx0, by1 - by0)
        if options.position is None:  # keep the subject's relative place in the region
            rel = ((bx0 + bx1) / 2 - rx0) / rw, ((by0 + by1) / 2 - ry0) / rh
            left, top = rel[0] * cw - k * extent[0] / 2, rel[1] * ch - k * extent[1] / 2
        else:
            left, top = _place(options.position, k * extent[0], k * extent[1], cw, ch)
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
