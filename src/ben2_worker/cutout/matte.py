"""The matte: the model's raw output shaped as the user's BEN2 node shapes it (sensitivity,
blur, offset at the ~1 MP working size), then enlarged once to the original size."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..options import check_range


@dataclass(frozen=True)
class MatteOptions:
    """The user's node options; ranges from :mod:`ben2_worker.options`."""

    sensitivity: float = 1.0  # alpha *= (2 - sensitivity), so lower keeps more
    mask_blur: int = 0  # Gaussian sigma in working-size pixels
    mask_offset: int = 0  # passes of a 3x3 max (grow) / min (shrink) filter

    def __post_init__(self) -> None:
        for name in ("sensitivity", "mask_blur", "mask_offset"):
            check_range(name, getattr(self, name))


def shape_matte(raw: np.ndarray, work_size: tuple[int, int], options: MatteOptions) -> np.ndarray:
    """Raw model output (S,S) -> uint8 matte at the working size, as the user's node shapes it.

    Order as theirs: bilinear resize, min-max normalise, sensitivity, Gaussian blur, then
    offset. Offset's n passes of a 3x3 filter equal one (2n+1)-square dilation/erosion."""
    m = cv2.resize(raw.astype(np.float32, copy=False), tuple(work_size), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(m.min()), float(m.max())
    if hi > lo:
        m = (m - lo) * np.float32(1.0 / (hi - lo))
    else:
        m = np.clip(m, 0.0, 1.0)  # a constant matte carries no contrast to stretch
    if options.sensitivity != 1.0:
        m = m * np.float32(2.0 - options.sensitivity)
    matte = np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if options.mask_blur > 0:
        matte = cv2.GaussianBlur(matte, (0, 0), sigmaX=float(options.mask_blur), borderType=cv2.BORDER_REPLICATE)
    if options.mask_offset:
        n = abs(options.mask_offset)
        kernel = np.ones((2 * n + 1, 2 * n + 1), np.uint8)
        op = cv2.dilate if options.mask_offset > 0 else cv2.erode
        matte = op(matte, kernel, borderType=cv2.BORDER_REPLICATE)
    return matte


def upscale_matte(matte: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Enlarge the working-size matte once to the original (width, height), bilinear."""
    if matte.shape[::-1] == tuple(size):
        return matte
    return cv2.resize(matte, tuple(size), interpolation=cv2.INTER_LINEAR)
