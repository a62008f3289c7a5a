"""Guided matte upsampling: the full-resolution photo shapes the full-resolution matte.

BEN2 sees a photo at 1024²; at 12 MP one matte pixel covers ~12 photo pixels, so a hair strand
1–3 px wide is only a faint smear in the matte, and any interpolation (bilinear, Lanczos) can
only enlarge the smear. The photo still holds the strand. The fast guided filter (He & Sun,
"Fast Guided Filter", 2015, after He, Sun & Tang's guided filter) fits, in every small window
of the reduced-scale photo, the linear model ``matte ≈ a · colour + b``; area averaging keeps a
linear relation linear, so the same ``a, b`` hold at full resolution, where
``q = a · photo + b`` draws the strand as sharp as the photo shows it. Only the coefficients
are enlarged (bilinear), never the matte.

Built from cv2 primitives (``cv2.blur``, ``cv2.resize``, ``cv2.warpAffine``) and numpy.
OpenCV's contrib build ships ``cv2.ximgproc.guidedFilter``, but ``opencv-contrib-python-headless``
cannot be installed beside ``opencv-python-headless`` (both own the ``cv2`` package, and
NudeNet and rembg depend on the latter), and it filters at one scale only — it has no
reduced-scale (fast) mode.

Solid interiors stay solid and backgrounds stay clear by construction: the filter's answer is
used only where the coarse matte is uncertain (between ``certain`` and ``1 - certain``) or near
such a pixel; everywhere else the matte is exactly 0 or 255. The full-resolution work runs only
on the tiles that hold such a band, so its cost follows the length of the subject's outline,
not the photo's pixel count. Pure functions on numpy arrays.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

#: Side, in pixels of the reduced-scale matte, of the tiles the band is processed in.
TILE = 64

#: Softness candidates (Gaussian sigma, matte pixels) tried when matching the guide to the matte.
SOFTNESS_CANDIDATES = (0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0)
#: Tiles the softness is judged on, and the matte gradient (per pixel, Sobel) that counts as edge.
SOFTNESS_TILES = 4
EDGE_GRADIENT = 0.1


@dataclass(frozen=True)
class GuidedUpsampling:
    """Parameters of the guided upsampling, chosen on the synthetic scenes (docs/edges.md).

    ``radius``: box radius of the linear fit at the matte's scale (matte pixels); ``eps``:
    regularisation of the fit (colours in 0..1): larger keeps more of the coarse matte and
    copies less texture; ``certain``: matte values within this of 0 or 1 count as decided;
    ``colour``: fit on RGB (True) or on luminance; ``softness``: Gaussian sigma (matte pixels)
    of how much softer the matte is than the area-reduced photo — ``None`` measures it per
    image (:func:`estimate_softness`), a number fixes it, 0 turns matching off."""

    radius: int = 2
    eps: float = 1e-4
    certain: float = 0.04
    colour: bool = True
    softness: float | None = None


DEFAULT = GuidedUpsampling()


def guide_like_matte(model_input: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo on the working-size matte's grid, made the way that matte was made: the
    model's input (the photo area-reduced to the model's square) resized bilinearly to
    ``size`` (width, height), as shape_matte resizes the model's output. Sharing the matte's
    resampling keeps the linear fit exact (edge error 0.20 vs 0.28 of plain for an
    area-reduced photo, 12 MP, docs/edges.md) and costs a 1 MP resize instead of a 12 MP one."""
    return cv2.resize(model_input, tuple(size), interpolation=cv2.INTER_LINEAR)


def guided_upsample(
    matte: np.ndarray,
    guide: np.ndarray,
    params: GuidedUpsampling = DEFAULT,
    *,
    guide_small: np.ndarray | None = None,
) -> np.ndarray:
    """Enlarge a reduced-scale matte to the guide's full resolution, edge-aware.

    ``matte``: float32 (h, w) in 0..1 at any reduced scale and aspect (the model's raw 1024²
    output, or a working-size matte); ``guide``: the (H, W, 3) uint8 RGB photo;
    ``guide_small``: the photo at the matte's grid, (h, w, 3) uint8; best made the way the
    matte was (:func:`guide_like_matte`); default: the photo area-resized to (w, h).
    Returns the (H, W) uint8 matte."""
    h, w = matte.shape
    H, W = guide.shape[:2]
    p = np.ascontiguousarray(matte, dtype=np.float32)
    if guide_small is None:
        guide_small = cv2.resize(guide, (w, h), interpolation=cv2.INTER_AREA)
    small = _as_guide(guide_small, params.colour)

    # Decided pixels are 0 or 255 outright; the undecided ones and a margin of one fit radius
    # are the band the filter answers for (a wider margin only let texture leak into solid
    # interiors and clear backdrops, with no gain at the edges: docs/edges.md).
    t = params.certain
    unsure = ((p > t) & (p < 1 - t)).astype(np.uint8)
    reach = 2 * (params.radius + 1) + 1
    band = cv2.dilate(unsure, np.ones((reach, reach), np.uint8))
    out = cv2.resize(np.where(p >= 0.5, np.uint8(255), np.uint8(0)), (W, H), interpolation=cv2.INTER_NEAREST)
    if not band.any():
        return out

    softness = estimate_softness(small, p, unsure, params) if params.softness is None else params.softness
    if softness > 0:
        small = _gauss(small, softness)
    # The fit is solved only where a tile's band can use it (the band, widened by one box pass),
    # and computed only on the bounding box of that (plus the second pass's reach).
    solve = cv2.dilate(band, np.ones((2 * params.radius + 1,) * 2, np.uint8))
    rows, cols = np.flatnonzero(solve.any(axis=1)), np.flatnonzero(solve.any(axis=0))
    m = params.radius + 1
    by0, by1 = max(0, rows[0] - m), min(h, rows[-1] + 1 + m)
    bx0, bx1 = max(0, cols[0] - m), min(w, cols[-1] + 1 + m)
    coef = np.zeros((h, w, small.shape[2] + 1), np.float32)
    coef[..., -1] = p
    coef[by0:by1, bx0:bx1] = _coefficients(small[by0:by1, bx0:bx1], p[by0:by1, bx0:bx1], params.radius, params.eps,
                                           solve[by0:by1, bx0:bx1].astype(bool))
    ones = np.ones((1, coef.shape[2]), np.float32)
    # The filter's answers within ``certain`` of 0 or 1 are decided too (no 254s in a solid body).
    levels = np.arange(256)
    lo, hi = round(t * 255), round((1 - t) * 255)
    snap = np.where(levels <= lo, 0, np.where(levels >= hi, 255, levels)).astype(np.uint8)

    sx, sy = W / w, H / h  # full-resolution pixels per matte pixel
    def tile_pass(ty: int, tx: int) -> None:
        ly, lx = ty * TILE, tx * TILE
        ly1, lx1 = min(h, ly + TILE), min(w, lx + TILE)
        # This tile's full-resolution rectangle; one matte pixel of slack for the bilinear step.
        y0, y1 = int(round(ly * sy)), int(round(ly1 * sy))
        x0, x1 = int(round(lx * sx)), int(round(lx1 * sx))
        cy0, cy1, cx0, cx1 = max(0, ly - 1), min(h, ly1 + 1), max(0, lx - 1), min(w, lx1 + 1)
        # Full-res pixel centre X sits at matte coordinate (X + .5) / sx - .5 (minus the crop origin).
        inv = np.float32([[1 / sx, 0, (x0 + 0.5) / sx - 0.5 - cx0], [0, 1 / sy, (y0 + 0.5) / sy - 0.5 - cy0]])
        size = (x1 - x0, y1 - y0)
        sel = cv2.warpAffine(band[cy0:cy1, cx0:cx1], inv, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        c = cv2.warpAffine(coef[cy0:cy1, cx0:cx1], inv, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
        # q = a . photo + b, as [a, b] . [photo, 1] with cv2 (one multiply, one channel sum).
        tile = guide[y0:y1, x0:x1]
        if params.colour:
            g1 = cv2.cvtColor(tile, cv2.COLOR_RGB2RGBA)
        else:
            grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
            g1 = cv2.merge([grey, np.full_like(grey, 255)])
        q = cv2.transform(cv2.multiply(c, g1, scale=1 / 255, dtype=cv2.CV_32F), ones)
        q = cv2.convertScaleAbs(cv2.max(q, 0.0), alpha=255.0)  # rounds and saturates to 0..255
        cv2.copyTo(cv2.LUT(q, snap), sel, out[y0:y1, x0:x1])

    # Tiles write disjoint rectangles and cv2 releases the GIL: run them on the cores cv2 may use.
    tiles = [(int(ty), int(tx)) for ty, tx in zip(*np.nonzero(_tile_max(band)))]
    workers = max(1, min(cv2.getNumThreads(), len(tiles)))
    if workers == 1:
        for ty, tx in tiles:
            tile_pass(ty, tx)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda t: tile_pass(*t), tiles))
    return out


def estimate_softness(small: np.ndarray, p: np.ndarray, unsure: np.ndarray, params: GuidedUpsampling = DEFAULT) -> float:
    """How much softer the matte is than the area-reduced photo, as a Gaussian sigma in matte
    pixels: the candidate whose blurred guide the linear fit explains best (least mean
    residual on the matte's edges, in the few tiles that hold the most edge).

    A network's matte is smoother than an area-reduced true alpha; fitting it against an
    equally smoothed guide keeps the linear model exact, and the coefficients then apply to
    the sharp full-resolution photo. Measured, not assumed: a sharp matte picks 0. Judged on
    edges (where the matte changes), not on every undecided pixel: a wide, flat,
    semi-transparent region (a veil) carries no information about softness, only texture."""
    h, w = p.shape
    gx = cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3)
    edge = (cv2.magnitude(gx, gy) > EDGE_GRADIENT) & unsure.astype(bool)
    scores = []
    for ly in range(0, h, TILE):
        for lx in range(0, w, TILE):
            scores.append((int(edge[ly : ly + TILE, lx : lx + TILE].sum()), ly, lx))
    scores.sort(reverse=True)
    pad = 2 * params.radius + 2 + int(math.ceil(3 * max(SOFTNESS_CANDIDATES)))
    crops = []
    for n, ly, lx in scores[:SOFTNESS_TILES]:
        if n == 0:
            break
        y0, y1, x0, x1 = max(0, ly - pad), min(h, ly + TILE + pad), max(0, lx - pad), min(w, lx + TILE + pad)
        crops.append((small[y0:y1, x0:x1], p[y0:y1, x0:x1], edge[y0:y1, x0:x1]))
    if not crops:
        return 0.0
    # One mosaic of the crops (mirror-padded to one size, stacked), so each candidate is one fit.
    side = TILE + 2 * pad
    def padded(a: np.ndarray) -> np.ndarray:
        bottom, right = side - a.shape[0], side - a.shape[1]
        out = cv2.copyMakeBorder(np.ascontiguousarray(a), 0, bottom, 0, right, cv2.BORDER_REFLECT)
        return out if out.ndim == a.ndim else out[..., None]
    guide = np.concatenate([padded(g) for g, _, _ in crops])
    matte = np.concatenate([padded(m) for _, m, _ in crops])
    sel = np.concatenate([np.pad(e, ((0, side - e.shape[0]), (0, side - e.shape[1]))) for _, _, e in crops])
    best, best_residual = 0.0, math.inf
    for sigma in SOFTNESS_CANDIDATES:
        g = _gauss(guide, sigma) if sigma > 0 else guide
        coef = _coefficients(g, matte, params.radius, params.eps)
        q = coef[..., -1] + (coef[..., :-1] * g).sum(axis=-1)
        residual = float(np.abs(q - matte)[sel].mean())
        if residual < best_residual:
            best, best_residual = sigma, residual
    return best


def _tile_max(mask: np.ndarray) -> np.ndarray:
    """Per TILE x TILE block of ``mask``, its maximum (one vectorised pass, not a loop)."""
    h, w = mask.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    padded = np.zeros((th * TILE, tw * TILE), mask.dtype)
    padded[:h, :w] = mask
    return padded.reshape(th, TILE, tw, TILE).max(axis=(1, 3))


def _gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    out = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return out if out.ndim == image.ndim else out[..., None]


def _as_guide(rgb: np.ndarray, colour: bool) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 guide in 0..1: (..., 3) colour or (..., 1) luminance."""
    g = rgb.astype(np.float32) * np.float32(1 / 255)
    return g if colour else (g @ np.float32([0.299, 0.587, 0.114]))[..., None]


def _box(x: np.ndarray, r: int) -> np.ndarray:
    out = cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REPLICATE)
    return out if out.ndim == x.ndim else out[..., None]


def _coefficients(guide: np.ndarray, p: np.ndarray, r: int, eps: float, where: np.ndarray | None = None) -> np.ndarray:
    """Box-averaged guided-filter coefficients ``[a_1..a_C, b]`` (h, w, C+1), float32.

    The per-pixel solve (a 3x3 system for a colour guide) runs only ``where`` it is needed;
    elsewhere the fit is the flat one (a = 0, b = the local mean of the matte)."""
    h, w, channels = guide.shape
    planes = list(cv2.split(guide))
    pairs = [(i, j) for i in range(channels) for j in range(i, channels)]
    # Box means of every product the fit needs, [I, I*p, p, I I^T (upper triangle)], one plane
    # each: the solve then reads contiguous rows, without a (pixels x 13) transpose.
    stack = planes + [cv2.multiply(c, p) for c in planes] + [p] + [cv2.multiply(planes[i], planes[j]) for i, j in pairs]
    k = (2 * r + 1, 2 * r + 1)
    means = [cv2.blur(x, k, borderType=cv2.BORDER_REPLICATE) for x in stack]
    coef = np.zeros((h, w, channels + 1), np.float32)
    coef[..., channels] = means[2 * channels]
    idx = None if where is None else np.flatnonzero(where)
    rows = [x.ravel() if idx is None else x.ravel().take(idx) for x in means]
    mean_i, mean_ip, mean_p, mp = rows[:channels], rows[channels : 2 * channels], rows[2 * channels], rows[2 * channels + 1 :]
    cov = [mean_ip[c] - mean_i[c] * mean_p for c in range(channels)]
    e = np.float32(eps)
    if channels == 1:
        a = [cov[0] / (mp[0] - mean_i[0] * mean_i[0] + e)]
    else:
        mr, mg, mb = mean_i
        # Per-pixel 3x3 covariance of the colours (+ eps on the diagonal), inverted by cofactors.
        s_rr = mp[0] - mr * mr + e
        s_rg = mp[1] - mr * mg
        s_rb = mp[2] - mr * mb
        s_gg = mp[3] - mg * mg + e
        s_gb = mp[4] - mg * mb
        s_bb = mp[5] - mb * mb + e
        c_rr = s_gg * s_bb - s_gb * s_gb
        c_rg = s_gb * s_rb - s_rg * s_bb
        c_rb = s_rg * s_gb - s_gg * s_rb
        c_gg = s_rr * s_bb - s_rb * s_rb
        c_gb = s_rb * s_rg - s_rr * s_gb
        c_bb = s_rr * s_gg - s_rg * s_rg
        inv = np.float32(1) / (s_rr * c_rr + s_rg * c_rg + s_rb * c_rb)
        vr, vg, vb = cov[0] * inv, cov[1] * inv, cov[2] * inv
        a = [c_rr * vr + c_rg * vg + c_rb * vb, c_rg * vr + c_gg * vg + c_gb * vb, c_rb * vr + c_gb * vg + c_bb * vb]
    fit = np.empty((rows[0].size, channels + 1), np.float32)
    b = mean_p.copy()
    for c in range(channels):
        fit[:, c] = a[c]
        b -= a[c] * mean_i[c]
    fit[:, channels] = b
    coef_flat = coef.reshape(-1, channels + 1)
    if idx is None:
        coef_flat[:] = fit
    else:
        coef_flat[idx] = fit
    return _box(coef, r)
