"""The cut-out engine on the BEN2 stand-in: full-resolution mattes, the user's node options,
and the extras (mask-only, crop, refine, batching)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import subject_photo

from ben2_worker.ben2 import Ben2Model, to_model_input
from ben2_worker.cutout import (
    CropMargin,
    CutoutEngine,
    CutoutOptions,
    MatteOptions,
    compose,
    crop_box,
    estimate_foreground,
    shape_matte,
    smart_resize_size,
    subject_bbox,
)
from ben2_worker.errors import InputError, ModelError

BOX = (0.25, 0.25, 0.75, 0.75)


def assert_matte_follows_box(alpha: np.ndarray, box=BOX, margin: float = 0.08) -> None:
    """Opaque well inside the subject box, clear well outside it (``margin`` of each side)."""
    h, w = alpha.shape
    mx, my = margin * w, margin * h
    ys, xs = np.mgrid[0:h, 0:w]
    inside = (xs >= box[0] * w + mx) & (xs < box[2] * w - mx) & (ys >= box[1] * h + my) & (ys < box[3] * h - my)
    outside = (xs < box[0] * w - mx) | (xs >= box[2] * w + mx) | (ys < box[1] * h - my) | (ys >= box[3] * h + my)
    if inside.any():
        assert alpha[inside].min() == 255, "subject must be fully opaque"
    if outside.any():
        assert alpha[outside].max() == 0, "background must be fully clear"


# ----------------------------------------------------------------- SmartResize semantics


@pytest.mark.parametrize(
    ("size", "mode", "expected"),
    [
        ((4000, 3000), "smart", (1182, 886)),
        ((1024, 1024), "smart", (1024, 1024)),  # on target: kept
        ((1050, 1024), "smart", (1050, 1024)),  # within 5 %: kept
        ((1100, 1024), "smart", (1062, 988)),  # 7 % over: resized
        ((1100, 1024), "only_if_needed", (1100, 1024)),  # within 10 %: kept
        ((1024, 1024), "always_resize", (1024, 1024)),
        ((512, 512), "smart", (1024, 1024)),  # small images are enlarged, as the node does
    ],
)
def test_smart_resize_size_matches_node(size, mode, expected):
    assert smart_resize_size(*size, 1024 * 1024, mode) == expected


def test_smart_resize_even_sides_and_extreme_aspects():
    for w, h in [(10000, 10), (10, 10000), (1, 1), (7, 3), (50000, 1)]:
        nw, nh = smart_resize_size(w, h)
        assert nw % 2 == 0 and nh % 2 == 0 and nw >= 2 and nh >= 2
        assert abs(nw * nh - 1024 * 1024) / (1024 * 1024) < 0.35


def test_smart_resize_rejects_bad_mode():
    with pytest.raises(InputError, match="resize_mode"):
        smart_resize_size(100, 100, mode="sometimes")


# ----------------------------------------------------------------- matte shaping


def _raw_box(size=1024, lo=0.1, hi=0.9):
    raw = np.full((size, size), lo, np.float32)
    raw[256:768, 256:768] = hi
    return raw


def test_shape_matte_normalises_min_max():
    m = shape_matte(_raw_box(), (1024, 1024), MatteOptions())
    assert m.min() == 0 and m.max() == 255


def test_sensitivity_scales_alpha_like_the_node():
    raw = np.linspace(0, 1, 1024, dtype=np.float32)[None, :].repeat(1024, 0)
    base = shape_matte(raw, (1024, 1024), MatteOptions(sensitivity=1.0)).astype(int)
    boosted = shape_matte(raw, (1024, 1024), MatteOptions(sensitivity=0.5)).astype(int)
    # alpha * (2 - 0.5), clamped
    expected = np.clip(np.round(raw[0] * 1.5 * 255), 0, 255)
    assert np.abs(boosted[0] - expected).max() <= 1
    assert (boosted >= base).all()


def test_mask_offset_grows_and_shrinks_by_n_pixels():
    raw = _raw_box()
    grown = shape_matte(raw, (1024, 1024), MatteOptions(mask_offset=5))
    shrunk = shape_matte(raw, (1024, 1024), MatteOptions(mask_offset=-5))
    row = 512
    assert np.flatnonzero(grown[row])[[0, -1]].tolist() == [251, 772]
    assert np.flatnonzero(shrunk[row])[[0, -1]].tolist() == [261, 762]


def test_mask_blur_softens_edges():
    raw = _raw_box()
    sharp = shape_matte(raw, (1024, 1024), MatteOptions())
    soft = shape_matte(raw, (1024, 1024), MatteOptions(mask_blur=8))
    partial = lambda m: int(((m > 0) & (m < 255)).sum())  # noqa: E731
    assert partial(soft) > partial(sharp) * 10
    assert soft[512, 512] == 255 and soft[10, 10] == 0


@pytest.mark.parametrize("kwargs", [{"sensitivity": 1.5}, {"mask_blur": 65}, {"mask_offset": -65}])
def test_matte_options_ranges(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        MatteOptions(**kwargs)


# ----------------------------------------------------------------- full resolution


def test_12mp_matte_at_full_resolution_keeps_original_pixels(engine):
    img = subject_photo(4000, 3000)
    result = engine.cut_out([img])[0]
    assert result.image.shape == (3000, 4000, 4)
    assert_matte_follows_box(result.alpha, margin=0.01)
    # The original full-resolution pixels sit under the matte, untouched.
    assert np.array_equal(result.image[..., :3], img)
    # The edge is as sharp as the photo: the subject's edge here is a one-pixel step in the red
    # channel, and guided upsampling (the default) draws it so; a plain bilinear enlargement
    # leaves a soft band a few pixels wide at 12 MP, still not the ~4x wider band of an
    # upsampled 1 MP cut-out.
    band = ((result.alpha > 0) & (result.alpha < 255))[1500]
    plain = engine.cut_out([img], CutoutOptions(upsampling="bilinear"))[0].alpha
    plain_band = ((plain > 0) & (plain < 255))[1500]
    assert band.sum() < plain_band.sum() <= 2 * 8


@pytest.mark.parametrize(
    "size", [(1, 1), (2, 3), (10000, 10), (10, 10000), (1001, 667), (333, 5000), (1024, 1024), (4096, 512)]
)
def test_aspect_ratios(engine, size):
    w, h = size
    img = subject_photo(w, h)
    result = engine.cut_out([img])[0]
    assert result.alpha.shape == (h, w)
    assert result.image.shape == (h, w, 4)
    if min(w, h) < 16:
        # Too thin for a fractional margin: away from the subject's edges (1 % of the long
        # side; none across a side shorter than 16 px) the matte equals the red channel.
        import cv2

        kx = 2 * int(0.01 * w) + 1 if w >= 16 else 1
        ky = 2 * int(0.01 * h) + 1 if h >= 16 else 1
        subject = (img[..., 0] == 255).astype(np.uint8)
        core = cv2.erode(subject, np.ones((ky, kx), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
        clear = cv2.erode(1 - subject, np.ones((ky, kx), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
        assert core.any() and clear.any() or (w, h) == (1, 1)
        assert (result.alpha[core] == 255).all() and (result.alpha[clear] == 0).all()
    else:
        assert_matte_follows_box(result.alpha, margin=0.1)


def test_background_colour_composite(engine):
    img = subject_photo(800, 600)
    res = engine.cut_out([img], CutoutOptions(background=(0, 255, 0)))[0]
    assert res.image.shape == (600, 800, 3)
    assert (res.image[res.alpha == 0] == [0, 255, 0]).all()
    assert np.array_equal(res.image[res.alpha == 255], img[res.alpha == 255])


def test_compose_blends_partial_alpha():
    rgb = np.full((1, 3, 3), 200, np.uint8)
    alpha = np.array([[0, 128, 255]], np.uint8)
    out = compose(rgb, alpha, (0, 0, 0))
    assert out[0, :, 0].tolist() == [0, round(200 * 128 / 255), 200]
    rgba = compose(rgb, alpha, None)
    assert rgba.shape == (1, 3, 4) and rgba[0, :, 3].tolist() == [0, 128, 255]


def test_mask_only(engine):
    img = subject_photo(640, 480)
    res = engine.cut_out([img], CutoutOptions(mask_only=True))[0]
    assert res.image.shape == (480, 640)
    assert np.array_equal(res.image, res.alpha)


def test_crop_to_subject_with_margin(engine):
    img = subject_photo(1000, 800, box=(0.2, 0.3, 0.5, 0.6))
    res = engine.cut_out([img], CutoutOptions(crop=True))[0]
    x0, y0, x1, y1 = res.crop_box
    assert abs(x0 - 200) <= 3 and abs(x1 - 500) <= 3 and abs(y0 - 240) <= 3 and abs(y1 - 480) <= 3
    assert res.image.shape == (y1 - y0, x1 - x0, 4)
    res_m = engine.cut_out([img], CutoutOptions(crop=True, crop_margin=CropMargin.parse("10%")))[0]
    mx0, my0, mx1, my1 = res_m.crop_box
    assert (x0 - mx0, mx1 - x1) == (30, 30)  # 10 % of the subject's larger side (300 px)
    res_px = engine.cut_out([img], CutoutOptions(crop=True, crop_margin=CropMargin.parse("5000")))[0]
    assert res_px.crop_box == (0, 0, 1000, 800)  # clamped to the frame


def test_crop_of_empty_matte_keeps_frame(engine):
    img = subject_photo(300, 200, box=(0, 0, 0, 0))
    img[..., 0] = 0
    res = engine.cut_out([img], CutoutOptions(crop=True))[0]
    assert res.crop_box is None and res.image.shape == (200, 300, 4)


def test_crop_helpers():
    alpha = np.zeros((10, 10), np.uint8)
    assert subject_bbox(alpha) is None
    alpha[2:5, 3:8] = 200
    assert subject_bbox(alpha) == (3, 2, 8, 5)
    assert crop_box((3, 2, 8, 5), CropMargin(2), 10, 10) == (1, 0, 10, 7)
    for bad in ["-1", "abc", "150%"]:
        with pytest.raises(InputError, match="crop_margin"):
            CropMargin.parse(bad)


def test_refine_removes_background_colour_from_edges():
    # A red subject on a green background; the soft edge mixes both. The estimate must pull
    # edge colours towards the subject's red and away from the green they were mixed with.
    h, w = 200, 200
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, 100:] = 255
    alpha[:, 90:100] = np.linspace(0, 255, 12, dtype=np.uint8)[1:11]
    a = alpha[..., None] / 255.0
    rgb = (a * [220, 20, 20] + (1 - a) * [20, 200, 20]).round().astype(np.uint8)
    fg = estimate_foreground(rgb, alpha)
    band = (alpha > 0) & (alpha < 255)
    assert fg[band][:, 1].mean() < rgb[band][:, 1].mean() - 40  # less green
    assert fg[band][:, 0].mean() > rgb[band][:, 0].mean() + 40  # more red
    assert np.array_equal(fg[~band], rgb[~band])  # only the edge band changes


def test_refine_option_runs_end_to_end(engine):
    img = subject_photo(1200, 900)
    res = engine.cut_out([img], CutoutOptions(refine=True))[0]
    assert "refine" in res.timings.seconds
    assert np.array_equal(res.image[res.alpha == 255][:, :3], img[res.alpha == 255])


# ----------------------------------------------------------------- batching and the model


def test_batch_is_one_model_run_when_the_axis_is_dynamic(dynamic_ben2_path, engine):
    model = Ben2Model(dynamic_ben2_path, threads=1)
    assert model.info.batch is None and model.info.output_dtype == "tensor(float)"
    calls = []
    real_run = model.session.run
    model.session.run = lambda *a, **k: calls.append(a[1][model.info.input_name].shape) or real_run(*a, **k)
    images = [subject_photo(320 + 40 * i, 240) for i in range(4)]
    results = CutoutEngine(model).cut_out(images)
    assert calls == [(4, 3, 1024, 1024)]
    fixed = engine.cut_out(images)
    for a, b in zip(results, fixed):
        assert np.abs(a.alpha.astype(int) - b.alpha.astype(int)).max() <= 1


def test_fixed_batch_model_loops(ben2_model):
    assert ben2_model.info.batch == 1
    assert ben2_model.info.input_name == "input.1" and ben2_model.info.output_name == "17728"
    out = ben2_model.predict(np.zeros((3, 3, 1024, 1024), np.float32))
    assert out.shape == (3, 1024, 1024) and out.dtype == np.float32


def test_input_scalings():
    rgb = np.full((4, 4, 3), 255, np.uint8)
    assert np.allclose(to_model_input(rgb, "unit"), 1.0)
    x = to_model_input(rgb, "imagenet")
    assert np.allclose(x[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))
    with pytest.raises(ValueError, match="scaling"):
        to_model_input(rgb, "bogus")


def test_missing_and_broken_model_files(tmp_path):
    with pytest.raises(ModelError, match="models download ben2"):
        Ben2Model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="could not load BEN2 model"):
        Ben2Model(bad)
