"""Putting the matte on the original pixels: RGBA, or RGB over a background colour."""

from __future__ import annotations

import cv2
import numpy as np

from ..options import BACKGROUND_PRESETS, TRANSPARENT_NAMES


def parse_background(value: str) -> tuple[int, int, int] | None:
    """``none``/``transparent`` (None), a preset name of the user's node, or a hex colour."""
    from ..imaging import parse_color

    text = value.strip().lower()
    if text in TRANSPARENT_NAMES:
        return None
    if text in BACKGROUND_PRESETS:
        return BACKGROUND_PRESETS[text]
    return parse_color(value)


def compose(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int] | None) -> np.ndarray:
    """Original pixels + matte: RGBA when ``background`` is None, else RGB over that colour."""
    if background is None:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
        out[..., 3] = alpha
        return out
    # cv2.blendLinear: ~2x faster than integer numpy at 12 MP; exact at alpha 0 and 255,
    # within one level in between.
    weight = alpha.astype(np.float32) * np.float32(1 / 255)
    backdrop = np.empty_like(rgb)
    backdrop[:] = background
    return cv2.blendLinear(rgb, backdrop, weight, 1 - weight)
