"""Cropping to the subject: its bounding box in the matte, plus a margin."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: Alpha (0..255) above which a pixel counts as subject when cropping.
CROP_ALPHA_THRESHOLD = 10


@dataclass(frozen=True)
class CropMargin:
    """Margin around the subject: pixels (``20`` or ``20px``, remove.bg's spelling), or a
    percentage of the subject's larger side (``5%``)."""

    value: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, text: str | float) -> CropMargin:
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                margin = cls(float(raw[:-1]), True)
            else:
                margin = cls(float(raw[:-2] if raw.lower().endswith("px") else raw), False)
        except ValueError:
            raise InputError(f"crop_margin must be pixels (e.g. 20) or a percentage (e.g. 5%), got {text!r}", field="crop_margin") from None
        if margin.value < 0 or (margin.percent and margin.value > 100) or not math.isfinite(margin.value):
            raise InputError(f"crop_margin must be between 0 and 100% or a non-negative pixel count, got {text!r}", field="crop_margin")
        return margin


def subject_bbox(alpha: np.ndarray, threshold: int = CROP_ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of pixels with alpha above ``threshold``; None if empty."""
    mask = alpha > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def crop_box(bbox: tuple[int, int, int, int], margin: CropMargin, width: int, height: int) -> tuple[int, int, int, int]:
    """The subject's box grown by ``margin`` and clipped to the frame."""
    x0, y0, x1, y1 = bbox
    pad = margin.value * max(x1 - x0, y1 - y0) / 100 if margin.percent else margin.value
    pad = int(round(pad))
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)
