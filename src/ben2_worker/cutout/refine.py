"""Foreground colour estimation (``refine``): the old background's colour taken out of the
semi-transparent edge, so a cut-out on a new background shows no halo.

The blur-fusion estimate (Forte & Pitié, "Approximate Fast Foreground Colour Estimation",
ICIP 2021; BEN2's reference code offers the same): a wide pass (box 90 px) for smooth colour
estimates, then a narrow one (box 6 px) for detail. Only pixels with 0 < alpha < 255 change.

Where the time goes at 12 MP, and what is done about it: the wide pass only needs smooth
estimates, so it runs at ~1 MP (and takes the ~1 MP photo the engine already made for the
guided upsampling, instead of shrinking the 12 MP photo again); the narrow pass runs at full
resolution only on tiles that hold edge pixels, with cv2 arithmetic (multi-threaded, no numpy
temporaries) and a masked copy instead of boolean indexing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Blur-fusion box sizes: wide pass, narrow pass (pixels of the full-resolution photo).
REFINE_RADII = (90, 6)

#: Pixels the wide pass runs at (at most).
WIDE_PASS_PIXELS = 1024 * 1024

TILE = 256


def wide_pass_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) the wide pass runs at: the photo shrunk to <= ~1 MP."""
    scale = min(1.0, math.sqrt(WIDE_PASS_PIXELS / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def estimate_foreground(
    rgb: np.ndarray,
    alpha: np.ndarray,
    radii: tuple[int, int] = REFINE_RADII,
    *,
    small_rgb: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 foreground colours for ``rgb`` under the (H, W) uint8 ``alpha``.

    ``small_rgb``: the photo already area-shrunk to :func:`wide_pass_size` (saves a resize)."""
    band = cv2.inRange(alpha, 1, 254)
    if not cv2.countNonZero(band):
        return rgb
    h, w = alpha.shape
    wide, narrow = radii
    size = wide_pass_size(w, h)
    if small_rgb is None or small_rgb.shape[1::-1] != size:
        small_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    inv255 = 1 / 255
    small_img = small_rgb.astype(np.float32) * np.float32(inv255)
    small_a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(inv255)
    fg_small, bg_small = _blur_fusion(small_img, small_img, small_img, small_a, max(1, round(wide * size[0] / w)))
    sx, sy = size[0] / w, size[1] / h

    out = rgb.copy()
    pad = narrow + 1
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            sel = band[y : y + TILE, x : x + TILE]
            if not cv2.countNonZero(sel):
                continue
            y0, y1, x0, x1 = max(0, y - pad), min(h, y + TILE + pad), max(0, x - pad), min(w, x + TILE + pad)
            # Each tile's wide estimates are sampled (bilinear) from the small maps.
            warp = np.float32([[sx, 0, (x0 + 0.5) * sx - 0.5], [0, sy, (y0 + 0.5) * sy - 0.5]])
            fg = cv2.warpAffine(fg_small, warp, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            bg = cv2.warpAffine(bg_small, warp, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            image = rgb[y0:y1, x0:x1].astype(np.float32) * np.float32(inv255)
            a = alpha[y0:y1, x0:x1].astype(np.float32) * np.float32(inv255)
            f, _ = _blur_fusion(image, fg, bg, a, narrow)
            inner = f[y - y0 : y - y0 + sel.shape[0], x - x0 : x - x0 + sel.shape[1]]
            cv2.copyTo(cv2.convertScaleAbs(inner, alpha=255.0), sel, out[y : y + TILE, x : x + TILE])
    return out


def _blur_fusion(image: np.ndarray, fg: np.ndarray, bg: np.ndarray, a: np.ndarray, r: int):
    """One blur-fusion step on float32 (H,W,3) colours and an (H,W) alpha, in cv2 arithmetic.

    F = F̄ + a (I - a F̄ - (1 - a) B̄), with F̄ = box(F a) / box(a), B̄ = box(B (1-a)) / box(1-a)."""
    eps = np.float32(1e-5)
    k = (r, r)
    a3 = cv2.merge([a, a, a])
    na3 = np.float32(1) - a3  # numpy for scalars: cv2 reads a Python float as a 4-channel Scalar
    ba = cv2.blur(a, k)
    ba3 = cv2.merge([ba, ba, ba])
    blurred_fg = cv2.divide(cv2.blur(cv2.multiply(fg, a3), k), ba3 + eps)
    blurred_bg = cv2.divide(cv2.blur(cv2.multiply(bg, na3), k), (np.float32(1) + eps) - ba3)
    # residual = I - a F̄ - (1 - a) B̄
    residual = cv2.subtract(cv2.subtract(image, cv2.multiply(a3, blurred_fg)), cv2.multiply(na3, blurred_bg))
    new_fg = cv2.add(blurred_fg, cv2.multiply(a3, residual))
    return np.clip(new_fg, 0, 1, out=new_fg), blurred_bg
