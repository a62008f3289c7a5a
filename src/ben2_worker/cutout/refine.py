"""Foreground colour estimation at the matte's edges (blur fusion), so a cut-out placed on a
new background shows no halo of the old one."""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Blur-fusion radii: a wide pass for the colour estimate, then a narrow one for detail
#: (Forte & Pitié, "Approximate Fast Foreground Colour Estimation", ICIP 2021; BEN2 uses the same).
REFINE_RADII = (90, 6)


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, radii: tuple[int, int] = REFINE_RADII) -> np.ndarray:
    """Foreground colours with the background's colour removed from semi-transparent edges
    (blur-fusion estimate), so a cut-out on a new background shows no halo.

    Only pixels with 0 < alpha < 255 change. The wide pass only needs smooth estimates, so it
    runs at ~1 MP and is enlarged; the narrow pass runs at full resolution but only on tiles
    that hold edge pixels. A 12 MP photo takes a fraction of a second instead of seconds."""
    band = (alpha > 0) & (alpha < 255)
    if not band.any():
        return rgb
    h, w = alpha.shape
    wide, narrow = radii

    # Wide pass at <= ~1 MP: its box filter of `wide` pixels averages away detail anyway.
    scale = min(1.0, math.sqrt(1024 * 1024 / (h * w)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small_img = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    small_a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    fg_small, bg_small = _blur_fusion(small_img, small_img, small_img, small_a, max(1, round(wide * scale)))
    sx, sy = size[0] / w, size[1] / h

    # Narrow pass at full resolution, only on tiles holding edge pixels; each tile's wide
    # estimates are sampled (bilinear) from the small maps, never enlarged whole.
    out = rgb.copy()
    tile, pad = 256, narrow + 1
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            sel = band[y : y + tile, x : x + tile]
            if not sel.any():
                continue
            y0, y1, x0, x1 = max(0, y - pad), min(h, y + tile + pad), max(0, x - pad), min(w, x + tile + pad)
            warp = np.float32([[sx, 0, (x0 + 0.5) * sx - 0.5], [0, sy, (y0 + 0.5) * sy - 0.5]])
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            fg = cv2.warpAffine(fg_small, warp, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            bg = cv2.warpAffine(bg_small, warp, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            image = rgb[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255)
            a = alpha[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255)
            f, _ = _blur_fusion(image, fg, bg, a, narrow)
            inner = f[y - y0 : y - y0 + sel.shape[0], x - x0 : x - x0 + sel.shape[1]]
            region = out[y : y + tile, x : x + tile]
            region[sel] = np.clip(inner[sel] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _blur_fusion(image, fg, bg, a, r):
    """One blur-fusion step on float32 (H,W,3) colours and an (H,W) alpha."""
    eps = np.float32(1e-5)
    ksize = (r, r)
    a3 = cv2.merge([a, a, a])
    blurred_a = cv2.blur(a3, ksize)
    blurred_fg = cv2.blur(fg * a3, ksize) / (blurred_a + eps)
    blurred_bg = cv2.blur(bg * (1 - a3), ksize) / ((1 - blurred_a) + eps)
    new_fg = blurred_fg + a3 * (image - a3 * blurred_fg - (1 - a3) * blurred_bg)
    return np.clip(new_fg, 0, 1, out=new_fg), blurred_bg
