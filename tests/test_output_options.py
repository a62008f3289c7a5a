"""The output options hosted cut-out APIs offer (remove.bg's names: size, format auto, channels,
bg_color, crop + crop_margin, scale, position, add_shadow, semitransparency) plus a fixed canvas
(output_size) and the upsampling switch, through the real doors: the task API (RunPod handler)
and the CLI, on the BEN2 stand-in (tests/standin_models.py, a test fixture keyed on the red
channel, never a real model). One declaration (options.py), one mapping
(CutoutOptions.from_values), one assembly (CutoutEngine.apply): the same bytes from every door."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from conftest import subject_photo
from PIL import Image
from test_handler import engines, worker  # noqa: F401 - module fixtures
from typer.testing import CliRunner

from ben2_worker.cli import app
from ben2_worker.cutout import CutoutOptions
from ben2_worker.errors import InputError
from ben2_worker.imaging import encode_image

#: The must-show product shot: a white 2000x2000 e-commerce square, subject at 85 %, shadow.
PRODUCT = {"bg_color": "#FFFFFF", "output_size": "2000x2000", "scale": "85%", "add_shadow": True}
PRODUCT_FLAGS = ["--bg-color", "#FFFFFF", "--output-size", "2000x2000", "--scale", "85%", "--add-shadow"]
#: The product's box in the photo (fractions): 1600 x 1800 px of a 4000 x 3000 photo.
BOX = (0.3, 0.2, 0.7, 0.8)


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def cli_env(models_dir, monkeypatch):
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(models_dir))
    monkeypatch.setenv("BEN2_WORKER_ALLOW_CUSTOM_MODELS", "1")  # the stand-in: this explicit switch
    monkeypatch.setenv("BEN2_WORKER_THREADS", "1")


def _api(worker, data: bytes, output: dict) -> tuple[dict, bytes]:  # noqa: F811
    answer = worker({"id": "job", "input": {"image": base64.b64encode(data).decode(), "output": output}})
    assert "error" not in answer, answer
    (entry,) = answer["images"]
    return entry, base64.b64decode(entry["data"])


def _cli(tmp_path, data: bytes, flags: list[str]) -> bytes:
    src = tmp_path / "in" / "shot.jpg"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    dest = tmp_path / "out"
    run = CliRunner().invoke(app, ["remove", str(src), "-o", str(dest), *flags], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    (written,) = dest.iterdir()
    return written.read_bytes()


def test_12mp_product_shot_on_a_white_square_is_the_same_bytes_from_cli_and_task_api(worker, engines,  # noqa: F811
                                                                                     cli_env, tmp_path):
    photo = subject_photo(4000, 3000, box=BOX)
    data = _jpeg(photo)
    entry, from_api = _api(worker, data, PRODUCT)
    from_cli = _cli(tmp_path, data, PRODUCT_FLAGS)
    assert from_api == from_cli, "the CLI and the task API differ"
    assert (entry["width"], entry["height"]) == (2000, 2000)

    # What the engine makes of the decoded photo, by itself: the same bytes, and its layout.
    from ben2_worker.imaging import decode_image

    rgb = decode_image(data).rgb
    result = engines.cutout.cut_out([rgb], CutoutOptions.from_values(PRODUCT))[0]
    assert encode_image(result.image, "png") == from_api
    image = np.asarray(Image.open(io.BytesIO(from_api)))
    assert image.shape == (2000, 2000, 3)  # on a colour: no alpha channel
    left, top, w, h = result.subject
    # 1600 x 1800 px fitted into 85 % of the square: 1700 px high, centred.
    assert abs(h - 1700) <= 2 and abs(top - 150) <= 2 and abs(left + w / 2 - 1000) <= 2
    assert (image[:40] == 255).all() and (image[:, :100] == 255).all()  # white, beyond the shadow's reach
    # The shadow: below the subject's base (and right of it, the drop shadow's offset) the white
    # is darker; the subject's own pixels are the photo's (its red channel is 255 in the box).
    base = top + h
    assert image[base + 5 : base + 25, left + 50 : left + w - 50].mean() < 235
    assert (image[top + 20 : base - 20, left + 20 : left + w - 20, 0] >= 250).mean() > 0.99


def test_format_auto_is_png_when_transparent_and_jpeg_on_a_colour(worker):  # noqa: F811
    data = _jpeg(subject_photo(640, 480))
    entry, png = _api(worker, data, {"format": "auto"})
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).mode == "RGBA"
    entry, jpeg = _api(worker, data, {"format": "auto", "bg_color": "white"})
    assert jpeg.startswith(b"\xff\xd8") and entry["data"]
    _, matte = _api(worker, data, {"format": "auto", "bg_color": "white", "channels": "alpha"})
    assert Image.open(io.BytesIO(matte)).mode == "L"  # a matte stays lossless


def test_bg_color_is_background_and_channels_alpha_is_mask_only(worker):  # noqa: F811
    data = _jpeg(subject_photo(640, 480))
    assert _api(worker, data, {"bg_color": "F3FFFF"})[1] == _api(worker, data, {"background": "#f3ffff"})[1]
    assert _api(worker, data, {"channels": "alpha"})[1] == _api(worker, data, {"mask_only": True})[1]


def test_size_preview_cuts_out_at_a_quarter_megapixel(worker):  # noqa: F811
    entry, _ = _api(worker, _jpeg(subject_photo(2000, 1500)), {"size": "preview"})
    assert entry["width"] * entry["height"] <= 250_000 and abs(entry["width"] / entry["height"] - 4 / 3) < 0.01


def test_semitransparency_false_hardens_every_edge(worker):  # noqa: F811
    data = _jpeg(subject_photo(1600, 1200))
    soft = np.asarray(Image.open(io.BytesIO(_api(worker, data, {"scale": "50%"})[1])))[..., 3]
    hard = np.asarray(Image.open(io.BytesIO(_api(worker, data, {"scale": "50%", "semitransparency": False})[1])))
    assert ((soft > 0) & (soft < 255)).any()  # resampling the placed subject makes soft edges ...
    assert set(np.unique(hard[..., 3])) <= {0, 255}  # ... which are hardened again


def test_crop_with_margin_in_pixels_and_percent(worker):  # noqa: F811
    data = _jpeg(subject_photo(800, 600, box=(0.25, 0.25, 0.75, 0.75)))  # subject 400 x 300
    entry, _ = _api(worker, data, {"crop": True, "crop_margin": "20px"})
    assert abs(entry["width"] - 440) <= 2 and abs(entry["height"] - 340) <= 2
    entry, _ = _api(worker, data, {"crop": True, "crop_margin": "10%"})  # of the larger side: 40 px
    assert abs(entry["width"] - 480) <= 2 and abs(entry["height"] - 380) <= 2


def test_upsampling_bilinear_is_the_plain_enlargement(engines):  # noqa: F811
    """The switch-off: one bilinear enlargement of the working-size matte (the old default)."""
    from ben2_worker.cutout import shape_matte, smart_resize_size, upscale_matte

    rgb = subject_photo(1600, 1200)
    engine = engines.cutout
    raw = engine.mattes([rgb])[0]
    plain = engine.cut_out([rgb], CutoutOptions(upsampling="bilinear"))[0].alpha
    assert np.array_equal(plain, upscale_matte(shape_matte(raw, smart_resize_size(1600, 1200), CutoutOptions().matte),
                                               (1600, 1200)))


@pytest.mark.parametrize("output, needle", [
    ({"scale": "5%"}, "scale"),
    ({"scale": "big"}, "scale"),
    ({"position": "120%"}, "position"),
    ({"output_size": "2000x"}, "output_size"),
    ({"size": "huge"}, "size"),
    ({"channels": "rgb"}, "channels"),
    ({"shadow_opacity": 101, "add_shadow": True}, "shadow_opacity"),
    ({"upsampling": "nearest"}, "upsampling"),
    ({"crop_margin": "-3px"}, "crop_margin"),
])
def test_bad_values_are_named(worker, output, needle):  # noqa: F811
    answer = worker({"id": "bad", "input": {"image": base64.b64encode(_jpeg(subject_photo(64, 48))).decode(),
                                            "output": output}})
    assert "error" in answer and needle in answer["error"], answer


@pytest.mark.parametrize("flags, needle", [
    (["--scale", "5%"], "scale"),
    (["--upsampling", "nearest"], "upsampling"),
    (["--channels", "rgb"], "channels"),
    (["--shadow-type", "3D", "--add-shadow"], "shadow_type"),
])
def test_bad_cli_values_are_named(cli_env, tmp_path, flags, needle):
    src = tmp_path / "shot.jpg"
    src.write_bytes(_jpeg(subject_photo(64, 48)))
    run = CliRunner().invoke(app, ["remove", str(src), "-o", str(tmp_path / "out"), *flags])
    assert run.exit_code == 2 and needle in run.output, run.output


def test_from_values_takes_the_declared_defaults():
    assert CutoutOptions.from_values({}) == CutoutOptions()
    with pytest.raises(InputError, match="shadow_type"):
        CutoutOptions.from_values({"add_shadow": True, "shadow_type": "car"})
