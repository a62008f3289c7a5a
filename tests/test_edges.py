"""Full-resolution edges: guided matte upsampling judged against synthetic scenes whose true
alpha is known at every pixel (tests/synthetic_scenes.py), through the cut-out engine's own
postprocess step (the one every door calls) — from the real ONNX path of both BEN2 stand-in
variants (fixed batch float16, dynamic batch float32) and from the matte a network would hand
over. Numbers are error ratios against baselines run on the same scene; "today" is the
engine's ``upsampling=bilinear`` (one bilinear enlargement of the working-size matte)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from synthetic_scenes import STANDIN_RED, edge_band, frame_size, make_scene, model_matte

from ben2_worker.ben2 import Ben2Model
from ben2_worker.cutout import CutoutEngine, CutoutOptions, MatteOptions
from ben2_worker.cutout.upsample import estimate_softness, guided_upsample


def _edge_error(matte: np.ndarray, alpha: np.ndarray) -> float:
    band = edge_band(alpha)
    return float(np.abs(matte[band].astype(np.float32) - alpha[band].astype(np.float32)).mean() / 255)


def _far_from_edges(alpha: np.ndarray, value: int, px: int = 16) -> np.ndarray:
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode((alpha == value).astype(np.uint8), k).astype(bool)


def _plain(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = raw.astype(np.float32)
    m = (m - m.min()) / (m.max() - m.min())
    return np.clip(cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) * 255 + 0.5, 0, 255).astype(np.uint8)


def _today(engine, raw: np.ndarray, rgb: np.ndarray, options: MatteOptions = MatteOptions()) -> np.ndarray:
    return engine.postprocess(raw, rgb, CutoutOptions(matte=options, upsampling="bilinear")).alpha


def _ours(engine, raw: np.ndarray, rgb: np.ndarray, options: MatteOptions = MatteOptions()) -> np.ndarray:
    """The default: the engine's guided upsampling."""
    return engine.postprocess(raw, rgb, CutoutOptions(matte=options)).alpha


@pytest.fixture(scope="module")
def engine(ben2_path):
    """The engine over the BEN2 stand-in (a test fixture); the tests that feed it a synthetic
    matte use only its postprocess step."""
    return CutoutEngine(Ben2Model(ben2_path, threads=1))


@pytest.fixture(scope="module")
def scene2():
    return make_scene(*frame_size(2), seed=3)


# --------------------------------------------------------------------------- the fixture itself


def test_scene_is_deterministic_and_composited_from_its_truth():
    a, b = make_scene(640, 480, seed=5), make_scene(640, 480, seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.alpha, b.alpha)
    assert not np.array_equal(a.alpha, make_scene(640, 480, seed=6).alpha)
    t = a.alpha.astype(np.float32)[..., None] / 255
    expect = t * a.foreground + (1 - t) * a.background
    assert np.abs(a.image - expect).max() <= 1.0
    soft = (a.alpha > 0) & (a.alpha < 255)
    assert soft.mean() > 0.02 and (a.alpha == 255).mean() > 0.05 and (a.alpha == 0).mean() > 0.3
    assert a.strands.any()


def test_standin_palette_keys_the_subject_in_red():
    s = make_scene(400, 300, seed=1, palette="standin")
    lo, hi = STANDIN_RED
    expect = lo + (hi - lo) * s.alpha.astype(np.float32) / 255
    assert np.abs(s.image[..., 0] - expect).max() <= 1.0


# --------------------------------------------------------------------------- quality


def test_guided_upsampling_at_least_halves_the_edge_error(engine, scene2):
    raw = model_matte(scene2.alpha)
    plain = _edge_error(_plain(raw, scene2.size), scene2.alpha)
    today = _edge_error(_today(engine, raw, scene2.image), scene2.alpha)
    ours = _edge_error(_ours(engine, raw, scene2.image), scene2.alpha)
    assert ours <= 0.5 * plain, (ours, plain)
    assert ours <= 0.5 * today, (ours, today)


def test_solid_interiors_stay_solid_and_backgrounds_clear(engine, scene2):
    matte = _ours(engine, model_matte(scene2.alpha), scene2.image)
    assert (matte[_far_from_edges(scene2.alpha, 255)] == 255).all()
    assert (matte[_far_from_edges(scene2.alpha, 0)] == 0).all()


@pytest.mark.parametrize("variant", ["fixed batch, float16", "dynamic batch, float32"])
def test_standin_model_path_both_variants(variant, ben2_path, dynamic_ben2_path):
    """Photo in, cut-out out through ``cut_out`` (preprocess, forward, postprocess) on the real
    ONNX runtime (BEN2 stand-in, a test fixture), two photos as one batch."""
    path = ben2_path if variant.startswith("fixed") else dynamic_ben2_path
    engine = CutoutEngine(Ben2Model(path, threads=1))
    scenes = [make_scene(*frame_size(2), seed=seed, palette="standin") for seed in (4, 8)]
    results = engine.cut_out([s.image for s in scenes])
    bilinear = engine.cut_out([s.image for s in scenes], CutoutOptions(upsampling="bilinear"))
    raws = engine.mattes([s.image for s in scenes])
    for scene, result, today, raw in zip(scenes, results, bilinear, raws):
        ours = result.alpha
        e_ours = _edge_error(ours, scene.alpha)
        e_plain = _edge_error(_plain(raw, scene.size), scene.alpha)
        e_today = _edge_error(today.alpha, scene.alpha)
        assert e_ours <= 0.6 * e_plain and e_ours <= 0.5 * e_today, (e_ours, e_plain, e_today)
        assert (ours[_far_from_edges(scene.alpha, 255)] == 255).all()
        assert (ours[_far_from_edges(scene.alpha, 0)] == 0).all()
        assert np.array_equal(result.image[..., 3], ours)  # the cut-out carries that matte


# --------------------------------------------------------------------------- the user's matte options


@pytest.mark.parametrize("offset", [-3, 3])
def test_mask_offset_moves_the_edge_as_on_the_working_size(engine, scene2, offset):
    """Shaped at the working size, then guided: the subject grows/shrinks in the offset's
    direction by most of what the offset does on today's path. The photo pulls the edge back
    part of the way where the offset contradicts it (docs/edges.md: 70-95 % of the change)."""
    raw = model_matte(scene2.alpha)
    shifted = MatteOptions(mask_offset=offset)
    area = lambda m: float(m.astype(np.float64).sum()) / 255  # noqa: E731
    d_today = area(_today(engine, raw, scene2.image, shifted)) - area(_today(engine, raw, scene2.image))
    d_ours = area(_ours(engine, raw, scene2.image, shifted)) - area(_ours(engine, raw, scene2.image))
    assert np.sign(d_ours) == np.sign(offset)
    assert 0.6 * abs(d_today) <= abs(d_ours) <= 1.2 * abs(d_today), (d_ours, d_today)


def test_mask_blur_stays_soft(engine, scene2):
    """A blurred matte is matched by an equally soft guide: the feathered transition survives."""
    raw = model_matte(scene2.alpha)
    blurred = MatteOptions(mask_blur=8)
    soft = lambda m: float(((m > 12) & (m < 243)).mean())  # noqa: E731
    assert soft(_ours(engine, raw, scene2.image, blurred)) >= 0.9 * soft(_today(engine, raw, scene2.image, blurred))


def test_sensitivity_keeps_more_of_the_subject(engine, scene2):
    raw = model_matte(scene2.alpha)
    area = lambda m: float(m.astype(np.float64).sum())  # noqa: E731
    assert area(_ours(engine, raw, scene2.image, MatteOptions(sensitivity=0.5))) > area(_ours(engine, raw, scene2.image)) * 1.01


# --------------------------------------------------------------------------- mechanics


@pytest.mark.parametrize("sigma", [0.0, 1.0, 1.5])
def test_softness_is_measured_from_the_matte(sigma):
    scene = make_scene(*frame_size(1), seed=2)
    raw = model_matte(scene.alpha, blur_sigma=sigma)
    small = cv2.resize(scene.image, raw.shape[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    unsure = ((raw > 0.02) & (raw < 0.98)).astype(np.uint8)
    assert estimate_softness(small, raw, unsure) == sigma


def test_decided_mattes_pass_through_as_labels():
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    assert (guided_upsample(np.zeros((64, 64), np.float32), rgb) == 0).all()
    assert (guided_upsample(np.ones((64, 64), np.float32), rgb) == 255).all()
    half = np.zeros((64, 64), np.float32)
    half[:, 40:] = 1.0  # a hard edge: only a thin band is filtered, the rest stays decided
    out = guided_upsample(half, rgb)
    assert (out[:, :150] == 0).all() and (out[:, 290:] == 255).all()


def test_precomputed_small_guide_gives_the_same_matte(scene2):
    raw = model_matte(scene2.alpha)
    small = cv2.resize(scene2.image, raw.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.array_equal(guided_upsample(raw, scene2.image), guided_upsample(raw, scene2.image, guide_small=small))
