"""Synthetic cut-out scenes whose true alpha and true foreground colours are known at every
full-resolution pixel — a TEST AND BENCHMARK FIXTURE, never product code.

A scene holds what real product and portrait shots make hard for a matte: hair-thin strands
1–3 px wide (their width is in full-resolution pixels at every size, so at 24 MP they are far
thinner than one pixel of the model's 1024² matte), a soft semi-transparent veil with a
defocused border, holes (round holes, a lace panel, a ring handle), and fine texture behind.
The geometry is drawn from ``seed`` in frame-relative coordinates, so the same scene can be made
at 1, 4, 12 or 24 MP; the image is exactly ``alpha * fg + (1 - alpha) * bg`` (rounded).

Two palettes:
- ``photo``: natural colours (dark-brown hair and a warm body against a cool textured backdrop,
  luminance ranges overlapping), for comparing upsampling methods on the matte a network would
  hand over (:func:`model_matte`).
- ``standin``: the red channel carries the subject (160 on the foreground, 96 behind, so the
  red channel is ``96 + 64 * alpha``) while green and blue keep the textures. The BEN2 stand-in
  (tests/standin_models.py: matte = sigmoid(40 (R - 0.5))) then answers a soft matte, about
  sigmoid(5 (2 * alpha - 1)) of the area-reduced alpha, through the real ONNX path: soft like a
  network's, where a 0/255 key would give a hard threshold that drops every thin strand.

Lives in tests/ beside standin_models.py; bench/ imports it the same way (``sys.path`` gets
``tests/``), so the fixture never ships inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PALETTES = ("photo", "standin")
#: Red channel behind and on the subject in the ``standin`` palette.
STANDIN_RED = (96, 160)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB, = alpha * fg + (1 - alpha) * bg
    alpha: np.ndarray  # (H, W) uint8 true alpha
    foreground: np.ndarray  # (H, W, 3) uint8 true foreground colours (defined everywhere)
    background: np.ndarray  # (H, W, 3) uint8 the backdrop
    strands: np.ndarray  # (H, W) bool: pixels covered by hair strands (for crops and stats)

    @property
    def size(self) -> tuple[int, int]:
        return self.alpha.shape[1], self.alpha.shape[0]


def frame_size(megapixels: float, aspect: float = 4 / 3) -> tuple[int, int]:
    """(width, height) of a ``megapixels`` frame at ``aspect`` (landscape)."""
    w = int(round((megapixels * 1e6 * aspect) ** 0.5))
    return w, int(round(w / aspect))


def make_scene(width: int, height: int, *, seed: int = 0, palette: str = "photo") -> Scene:
    """A deterministic scene of ``width`` x ``height`` (see the module docstring)."""
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}, got {palette!r}")
    rng = np.random.default_rng(seed)
    alpha, strands = _alpha(width, height, rng)
    fg, bg = _colours(width, height, rng, palette)
    hair = (70, 45, 30) if palette == "photo" else (STANDIN_RED[1], 35, 20)  # dark brown / red-keyed
    fg[strands] = hair
    fg = np.clip(fg + 0.5, 0, 255).astype(np.uint8)
    bg = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    a = alpha.astype(np.float32)[..., None] * np.float32(1 / 255)
    image = np.clip(a * fg + (1 - a) * bg + 0.5, 0, 255).astype(np.uint8)
    return Scene(image=image, alpha=alpha, foreground=fg, background=bg, strands=strands)


def model_matte(alpha: np.ndarray, size: int = 1024, blur_sigma: float = 1.0) -> np.ndarray:
    """What a network like BEN2 hands back for a scene: the true alpha at the model's square
    input size (area averaged, aspect squashed as the engine's model input is), softened by a
    Gaussian of ``blur_sigma`` model pixels. float32 (size, size) in 0..1."""
    small = cv2.resize(alpha.astype(np.float32) * np.float32(1 / 255), (size, size), interpolation=cv2.INTER_AREA)
    if blur_sigma > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur_sigma, borderType=cv2.BORDER_REPLICATE)
    return np.clip(small, 0.0, 1.0)


def edge_band(alpha: np.ndarray, dilate_px: int = 3) -> np.ndarray:
    """Pixels whose true alpha is strictly between 0 and 1, dilated by ``dilate_px``: where
    edge quality is judged (interiors and backdrop are checked separately)."""
    soft = ((alpha > 0) & (alpha < 255)).astype(np.uint8)
    k = 2 * dilate_px + 1
    return cv2.dilate(soft, np.ones((k, k), np.uint8)).astype(bool)


# --------------------------------------------------------------------------- alpha


def _alpha(w: int, h: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u = min(w, h)  # frame-relative unit
    sub = 4  # cv2 sub-pixel shift bits: coordinates in 1/16 px
    f = 1 << sub

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(x * f)), int(round(y * f))

    # Body: an anti-aliased ellipse with a solid interior.
    body = np.zeros((h, w), np.uint8)
    cx, cy, rx, ry = 0.5 * w, 0.64 * h, 0.2 * w, 0.3 * h
    cv2.ellipse(body, pt(cx, cy), pt(rx, ry), 0, 0, 360, 255, -1, cv2.LINE_AA, sub)

    # Holes: round holes and a lace panel (fixed pixel pitch: lace is fine detail at any size).
    holes = np.zeros((h, w), np.uint8)
    for _ in range(3):
        hx = cx + rng.uniform(-0.5, 0.5) * rx
        hy = cy + rng.uniform(0.0, 0.5) * ry
        cv2.circle(holes, pt(hx, hy), int(round(rng.uniform(0.015, 0.03) * u * f)), 255, -1, cv2.LINE_AA, sub)
    pitch, hole = 14, 6
    lx0, ly0 = int(cx + 0.1 * rx), int(cy - 0.2 * ry)
    lx1, ly1 = int(cx + 0.6 * rx), int(cy + 0.25 * ry)
    lace = np.zeros((h, w), np.uint8)
    for y in range(ly0, ly1, pitch):
        for x in range(lx0, lx1, pitch):
            lace[y : y + hole, x : x + hole] = 255
    holes = np.maximum(holes, cv2.GaussianBlur(lace, (0, 0), 0.7))

    # Ring handle on the right: a thick anti-aliased ellipse outline (the background shows inside).
    ring = np.zeros((h, w), np.uint8)
    cv2.ellipse(ring, pt(cx + 1.05 * rx, cy), pt(0.35 * rx, 0.25 * ry), 0, 0, 360, 255,
                max(2, int(round(0.018 * u))), cv2.LINE_AA, sub)

    # Veil on the left: 45 % opaque, its border defocused (soft, wide transition).
    veil = np.zeros((h, w), np.uint8)
    poly = np.array([pt(cx - 0.6 * rx, cy - 0.6 * ry), pt(cx - 1.9 * rx, cy - 0.3 * ry),
                     pt(cx - 1.7 * rx, cy + 0.7 * ry), pt(cx - 0.7 * rx, cy + 0.6 * ry)], np.int32)
    cv2.fillPoly(veil, [poly], 115, cv2.LINE_AA, sub)
    veil = cv2.GaussianBlur(veil, (0, 0), max(1.0, 0.006 * u))

    # Hair: strands 1-3 px wide rising from the top of the body, curving out into the backdrop.
    strands = np.zeros((h, w), np.uint8)
    n = 160
    for i in range(n):
        t = rng.uniform(np.pi * 1.08, np.pi * 1.92)  # angle on the upper half of the ellipse
        x0, y0 = cx + 0.96 * rx * np.cos(t), cy + 0.96 * ry * np.sin(t)
        length = rng.uniform(0.06, 0.22) * u
        out = np.array([np.cos(t) * ry / rx, np.sin(t)])  # outward-ish direction
        out /= np.linalg.norm(out)
        side = np.array([-out[1], out[0]]) * rng.uniform(-0.6, 0.6) * length
        x1, y1 = np.array([x0, y0]) + out * length * 0.5 + side
        x2, y2 = np.array([x0, y0]) + out * length + side * 0.3
        s = np.linspace(0, 1, 48)[:, None]
        curve = (1 - s) ** 2 * [x0, y0] + 2 * s * (1 - s) * [x1, y1] + s**2 * [x2, y2]
        width = 1 + i % 3
        cv2.polylines(strands, [np.round(curve * f).astype(np.int32)], False, 255, width, cv2.LINE_AA, sub)

    solid = body.astype(np.float32) * (1 - holes.astype(np.float32) / 255)
    alpha = np.maximum.reduce([solid, ring.astype(np.float32), veil.astype(np.float32), strands.astype(np.float32)])
    return np.clip(alpha + 0.5, 0, 255).astype(np.uint8), strands > 0


# --------------------------------------------------------------------------- colours


def _colours(w: int, h: int, rng: np.random.Generator, palette: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 (H,W,3) foreground and background colours in 0..255."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 4).astype(np.float32)
    # Fine texture behind: gratings with 3-7 px periods plus a slow gradient.
    fine = 0.5 + 0.25 * np.sin(x * 1.3 + y * 0.4 + phase[0]) + 0.25 * np.sin(y * 0.9 - x * 0.2 + phase[1])
    slow = (x / w + y / h) * 0.5
    # Subject texture: gentler and coarser (skin, fabric).
    grain = 0.5 + 0.5 * np.sin(x * 0.11 + phase[2]) * np.sin(y * 0.07 + phase[3])
    fg = np.empty((h, w, 3), np.float32)
    bg = np.empty((h, w, 3), np.float32)
    if palette == "photo":
        bg[..., 0] = 95 + 60 * fine + 30 * slow
        bg[..., 1] = 120 + 55 * fine + 20 * slow
        bg[..., 2] = 150 + 60 * fine - 20 * slow
        fg[..., 0] = 150 + 50 * grain
        fg[..., 1] = 90 + 40 * grain
        fg[..., 2] = 60 + 30 * grain
    else:  # standin: red carries the subject, green/blue the textures
        bg[..., 0] = STANDIN_RED[0]
        bg[..., 1] = 40 + 160 * fine
        bg[..., 2] = 200 - 120 * fine + 40 * slow
        fg[..., 0] = STANDIN_RED[1]
        fg[..., 1] = 60 + 140 * grain
        fg[..., 2] = 30 + 100 * grain
    return fg, bg
