"""Output canvas (crop, scale, position, fixed canvas, size presets, semi-transparency,
channels, format) and shadows: pure functions checked on small synthetic cut-outs."""

from __future__ import annotations

import numpy as np
import pytest

from ben2_worker.cutout import CutoutOptions
from ben2_worker.cutout.layout import (
    CropMargin,
    LayoutOptions,
    fit_pixels,
    harden,
    lay_out,
    parse_output_size,
    parse_position,
    parse_scale,
    resolve_format,
    size_limit,
    subject_bbox,
)
from ben2_worker.cutout.shadow import (
    ShadowOptions,
    compose_with_shadow,
    contact_shadow,
    drop_shadow,
    shadow_opacity,
)
from ben2_worker.errors import InputError


def cutout(width=800, height=600, box=(300, 150, 500, 450)):
    """A red rectangle subject with a soft 2 px border, on a green backdrop that must never
    show through (its colour sits only where alpha is 0)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[...] = (0, 255, 0)
    alpha = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    alpha[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2] = 100
    alpha[y0:y1, x0:x1] = 255
    rgb[alpha > 0] = (255, 0, 0)
    return rgb, alpha


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("fn", "value", "field"),
    [
        (parse_scale, "5%", "scale"),
        (parse_scale, "120", "scale"),
        (parse_scale, "big", "scale"),
        (parse_position, "left", "position"),
        (parse_position, "10% 20% 30%", "position"),
        (parse_position, "150%", "position"),
        (parse_output_size, "2000", "output_size"),
        (parse_output_size, "0x100", "output_size"),
        (parse_output_size, "20000x100", "output_size"),
        (size_limit, "huge", "size"),
        (CropMargin.parse, "-3", "crop_margin"),
        (CropMargin.parse, "150%", "crop_margin"),
    ],
)
def test_bad_values_name_their_field(fn, value, field):
    with pytest.raises(InputError) as info:
        fn(value)
    assert info.value.field == field and repr(value) in str(info.value)


def test_parsing():
    assert parse_scale("85%") == pytest.approx(0.85) and parse_scale("original") is None and parse_scale(None) is None
    assert parse_position("center") == (0.5, 0.5) and parse_position("original") is None
    assert parse_position("20%") == (0.2, 0.2) and parse_position("0% 100%") == (0.0, 1.0)
    assert parse_output_size("2000x2000") == (2000, 2000) and parse_output_size(" 640 X 480 ") == (640, 480)
    assert CropMargin.parse("5%") == CropMargin(5.0, True) and CropMargin.parse(20) == CropMargin(20.0, False)


def test_size_presets_follow_remove_bg():
    assert size_limit("preview") == size_limit("small") == size_limit("regular") == 250_000
    assert size_limit("medium") == 1_500_000 and size_limit("hd") == 4_000_000
    assert size_limit("full") is size_limit("4k") is size_limit("auto") is None
    w, h = fit_pixels(4000, 3000, size_limit("preview"))
    assert w * h <= 250_000 and w * h > 240_000 and abs(w / h - 4 / 3) < 0.01
    assert fit_pixels(400, 300, 250_000) == (400, 300)  # never enlarged


def test_format_auto_and_channels():
    assert resolve_format("auto", transparent=True) == "png"
    assert resolve_format("auto", transparent=False) == "jpeg"
    # The options decide it before any pixel is made: a matte (channels=alpha) stays PNG.
    assert CutoutOptions.from_values({"format": "auto", "background": "white"}).output_format == "jpeg"
    assert CutoutOptions.from_values({"format": "auto", "background": "white", "channels": "alpha"}).output_format == "png"
    assert CutoutOptions.from_values({"format": "auto"}).output_format == "png"
    assert resolve_format("jpg", transparent=True) == "jpeg" and resolve_format("webp", transparent=False) == "webp"
    with pytest.raises(InputError):
        resolve_format("gif", transparent=False)


def test_harden_leaves_no_semi_transparency():
    _, alpha = cutout()
    hard = harden(alpha)
    assert set(np.unique(hard)) == {0, 255}
    assert (hard[alpha == 100] == 0).all() and (hard[alpha == 255] == 255).all()


# --------------------------------------------------------------------------- placement


def test_no_options_keep_the_frame():
    rgb, alpha = cutout()
    canvas = lay_out(rgb, alpha)
    assert canvas.rgb is rgb and canvas.alpha is alpha
    assert canvas.subject == (298, 148, 204, 304)


def test_crop_with_margin():
    rgb, alpha = cutout()
    canvas = lay_out(rgb, alpha, LayoutOptions(crop=True, crop_margin=CropMargin(10)))
    assert canvas.alpha.shape == (304 + 20, 204 + 20)
    assert canvas.source_box == (288, 138, 512, 462)
    assert canvas.subject == (10, 10, 204, 304)
    assert np.array_equal(canvas.alpha, alpha[138:462, 288:512])


def test_fixed_canvas_scale_and_centre():
    """The e-commerce square: the subject's box fills 85 % of a 2000x2000 canvas, centred."""
    rgb, alpha = cutout()
    canvas = lay_out(rgb, alpha, LayoutOptions(scale=0.85, output_size=(2000, 2000), position=(0.5, 0.5)))
    assert canvas.alpha.shape == (2000, 2000)
    left, top, w, h = canvas.subject
    assert abs(h - 1700) <= 2 and abs(w - 1700 * 204 / 304) <= 3
    assert abs(left + w / 2 - 1000) <= 2 and abs(top + h / 2 - 1000) <= 2
    # Premultiplied resampling: no green from the old backdrop anywhere the subject shows.
    shown = canvas.alpha > 0
    assert canvas.rgb[shown][:, 1].max() <= 1 and canvas.rgb[shown][:, 0].min() >= 250


@pytest.mark.parametrize(("position", "edge"), [((0.0, 0.0), "top-left"), ((1.0, 1.0), "bottom-right")])
def test_position_percentages_put_the_subject_against_the_edges(position, edge):
    rgb, alpha = cutout()
    canvas = lay_out(rgb, alpha, LayoutOptions(scale=0.5, position=position, output_size=(1000, 1000)))
    left, top, w, h = canvas.subject
    if edge == "top-left":
        assert left <= 1 and top <= 1
    else:
        assert left + w >= 999 and top + h >= 999


def test_scale_implies_center():
    """remove.bg: scaling the subject implies position=center unless a position is given."""
    rgb, alpha = cutout(box=(100, 100, 200, 300))  # in the left third of an 800x600 photo
    canvas = lay_out(rgb, alpha, LayoutOptions(scale=0.3))
    left, top, w, h = canvas.subject
    assert canvas.alpha.shape == alpha.shape
    assert abs((left + w / 2) - 400) <= 1 and abs((top + h / 2) - 300) <= 1


def test_output_size_without_scale_fits_the_whole_photo():
    rgb, alpha = cutout()  # 800x600 into 1000x1000: scaled 1.25, centred vertically
    canvas = lay_out(rgb, alpha, LayoutOptions(output_size=(1000, 1000)))
    left, top, w, h = canvas.subject
    assert abs(w - 204 * 1.25) <= 2 and abs(top - (125 + 148 * 1.25)) <= 2
    assert canvas.alpha[:120].max() == 0  # the letterbox above the photo is clear


def test_empty_matte_lays_out_without_a_subject():
    rgb = np.zeros((100, 100, 3), np.uint8)
    canvas = lay_out(rgb, np.zeros((100, 100), np.uint8), LayoutOptions(crop=True, scale=0.5, output_size=(50, 50)))
    assert canvas.subject is None and canvas.alpha.shape == (50, 50) and canvas.alpha.max() == 0


def test_subject_box_reports_the_placed_subject():
    rgb, alpha = cutout()
    canvas = lay_out(rgb, alpha, LayoutOptions(crop=True, scale=1.0, output_size=(600, 400)))
    x0, y0, x1, y1 = subject_bbox(canvas.alpha)
    assert canvas.subject == (x0, y0, x1 - x0, y1 - y0)
    assert y1 - y0 >= 398  # the tall subject fills the canvas's height


# --------------------------------------------------------------------------- shadows


def test_drop_shadow_follows_the_offset_and_opacity():
    _, alpha = cutout()
    shadow = drop_shadow(alpha, 300, ShadowOptions(offset=(10.0, 20.0), blur=1.0, opacity=0.5))
    ys, xs = np.nonzero(shadow > 64)
    ya, xa = np.nonzero(alpha == 255)
    assert abs(xs.mean() - xa.mean() - 30) < 2 and abs(ys.mean() - ya.mean() - 60) < 2
    assert abs(int(shadow.max()) - 128) <= 2


def test_contact_shadow_sits_at_the_base():
    _, alpha = cutout()
    box = subject_bbox(alpha)
    shadow = contact_shadow(alpha, (box[0], box[1], box[2] - box[0], box[3] - box[1]))
    rows = np.flatnonzero(shadow.max(axis=1) > 16)
    assert rows.min() >= 420 and rows.max() <= 480  # around the base row 452, nowhere else
    assert shadow[:400].max() == 0


def test_shadow_on_a_white_background():
    rgb, alpha = cutout()
    box = (298, 148, 204, 304)
    opts = ShadowOptions()
    shadow = shadow_opacity(alpha, box, opts)
    out = compose_with_shadow(rgb, alpha, shadow, opts.colour, (255, 255, 255))
    assert out.shape == (600, 800, 3)
    assert (out[alpha == 255] == (255, 0, 0)).all()  # the subject is untouched
    assert out[455:465, 300:500].mean() < 230  # darker just under the base
    assert (out[:20, :20] == 255).all()  # far away: pure white
    assert (out[..., 1][alpha == 0] <= 255).all() and out[..., 1][shadow == 0].min() == 255  # no green spill


def test_shadow_on_a_transparent_result_is_semi_transparent_black():
    rgb, alpha = cutout()
    opts = ShadowOptions(kind="drop")
    shadow = shadow_opacity(alpha, (298, 148, 204, 304), opts)
    out = compose_with_shadow(rgb, alpha, shadow, opts.colour, None)
    only_shadow = (alpha == 0) & (shadow > 20)
    assert only_shadow.any()
    assert (out[only_shadow][:, :3] <= 1).all() and (out[only_shadow][:, 3] == shadow[only_shadow]).all()
    assert (out[alpha == 255] == (255, 0, 0, 255)).all()


def test_shadow_options_are_checked():
    with pytest.raises(InputError) as info:
        ShadowOptions(opacity=2)
    assert info.value.field == "shadow_opacity"
    with pytest.raises(InputError):
        ShadowOptions(kind="floating")
    assert (shadow_opacity(np.zeros((10, 10), np.uint8), None) == 0).all()
