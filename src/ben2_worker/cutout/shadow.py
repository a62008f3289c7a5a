"""Shadows for product shots on a new background, built from the matte alone.

Two kinds, each a pure function from the placed matte to a shadow opacity map (uint8):
- a **drop shadow**: the matte shifted by ``offset``, softened by ``blur``, at ``opacity``,
  as from a light above and in front;
- a **contact shadow**: the bottom of the subject's silhouette squashed into a thin, soft band
  at its base, which is what makes an object look like it stands on the floor rather than
  floats.

Lengths are percentages of the subject's height on the canvas, so a shadow looks the same on a
preview and on the full-size image. :func:`compose_with_shadow` stacks subject over shadow over
the background colour (or, for a transparent result, keeps the shadow as semi-transparent
pixels of the shadow colour).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..options import SHADOW_TYPES, check_choice, check_range

#: Gaussian sigma (px) up to which blurs run at full resolution; wider ones run on a reduced
#: copy (a shadow has no detail finer than its blur, and a 12 MP blur of sigma 60 takes seconds).
DIRECT_BLUR_SIGMA = 4.0


@dataclass(frozen=True)
class ShadowOptions:
    kind: str = "both"
    opacity: float = 0.5  # 0..1, the drop shadow's peak; the contact shadow is a little darker
    blur: float = 2.5  # % of the subject's height: the drop shadow's Gaussian sigma
    offset: tuple[float, float] = (1.0, 2.0)  # % of the subject's height, x to the right, y down
    colour: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        """Checked against the declared options (``shadow_*`` in :mod:`ben2_worker.options`)."""
        check_choice("shadow_type", self.kind)
        check_range("shadow_opacity", round(self.opacity * 100, 6))  # declared in percent
        check_range("shadow_blur", self.blur)
        check_range("shadow_offset_x", self.offset[0])
        check_range("shadow_offset_y", self.offset[1])


def drop_shadow(alpha: np.ndarray, subject_height: int, options: ShadowOptions = ShadowOptions()) -> np.ndarray:
    """The matte shifted, softened and scaled to ``opacity``: (H, W) uint8 shadow opacity."""
    unit = subject_height / 100
    dx, dy = options.offset[0] * unit, options.offset[1] * unit
    shifted = cv2.warpAffine(alpha, np.float32([[1, 0, dx], [0, 1, dy]]), alpha.shape[::-1],
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    soft = _soften(shifted, options.blur * unit)
    return cv2.convertScaleAbs(soft, alpha=options.opacity)


def contact_shadow(alpha: np.ndarray, box: tuple[int, int, int, int], options: ShadowOptions = ShadowOptions()) -> np.ndarray:
    """A thin soft band at the subject's base, shaped like the bottom of its silhouette.

    ``box``: the subject's (left, top, width, height) on the canvas."""
    h, w = alpha.shape
    left, top, bw, bh = box
    base = top + bh
    foot_h = max(1, int(round(0.08 * bh)))  # the bottom 8 % of the silhouette ...
    band_h = max(2, int(round(0.025 * bh)))  # ... squashed to 2.5 % of the height
    foot = alpha[base - foot_h : base, left : left + bw]
    band = cv2.resize(foot, (bw, band_h), interpolation=cv2.INTER_AREA)
    out = np.zeros_like(alpha)
    y0 = base - band_h // 2
    y1 = min(h, y0 + band_h)
    out[y0:y1, left : left + bw] = band[: y1 - y0]
    soft = _soften(out, max(1.0, 0.012 * bh))
    return cv2.convertScaleAbs(soft, alpha=min(1.0, options.opacity * 1.4))


def shadow_opacity(alpha: np.ndarray, box: tuple[int, int, int, int] | None, options: ShadowOptions = ShadowOptions()) -> np.ndarray:
    """The shadow kinds ``options.kind`` asks for, combined as two layers of one colour would be."""
    out = np.zeros_like(alpha)
    if box is None:  # nothing to cast a shadow
        return out
    layers = []
    if options.kind in ("drop", "both"):
        layers.append(drop_shadow(alpha, box[3], options))
    if options.kind in ("contact", "both"):
        layers.append(contact_shadow(alpha, box, options))
    for layer in layers:  # screen: 1 - (1 - a)(1 - b)
        out = cv2.subtract(cv2.add(out, layer), cv2.multiply(out, layer, scale=1 / 255))
    return out


def compose_with_shadow(
    rgb: np.ndarray,
    alpha: np.ndarray,
    shadow: np.ndarray,
    colour: tuple[int, int, int],
    background: tuple[int, int, int] | None,
) -> np.ndarray:
    """Subject over shadow over ``background``: RGB, or RGBA when ``background`` is None.

    Both are weighted means, so each is one or two ``cv2.blendLinear`` passes (a fraction of
    numpy float arithmetic's time on a 2000x2000 canvas): on a colour, the shadow's colour over
    the background by the shadow's opacity, then the subject over that by its alpha; on
    transparency, the colour is the mean of subject and shadow colour weighted ``a`` and
    ``(1 - a) s``, and the alpha is their sum."""
    a = alpha.astype(np.float32) * np.float32(1 / 255)
    s = shadow.astype(np.float32) * np.float32(1 / 255)
    shade = _plane(colour, rgb.shape)
    if background is not None:
        under = cv2.blendLinear(shade, _plane(background, rgb.shape), s, np.float32(1) - s)
        return cv2.blendLinear(rgb, under, a, np.float32(1) - a)
    ws = cv2.multiply(np.float32(1) - a, s)
    out = cv2.cvtColor(cv2.blendLinear(rgb, shade, a, ws), cv2.COLOR_RGB2RGBA)
    out[..., 3] = cv2.convertScaleAbs(cv2.add(a, ws), alpha=255.0)
    return out


def _plane(colour: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, np.uint8)
    out[:] = colour
    return out


def _soften(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px; wide ones on a reduced copy, enlarged back (bilinear)."""
    if sigma <= 0:
        return mask
    if sigma <= DIRECT_BLUR_SIGMA:
        return cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    h, w = mask.shape
    f = DIRECT_BLUR_SIGMA / sigma
    small = cv2.resize(mask, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), DIRECT_BLUR_SIGMA, borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
