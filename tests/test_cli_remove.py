"""``ben2-worker remove`` end to end on the stand-in model: real files in, real files out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, subject_photo
from PIL import Image, ImageOps
from typer.testing import CliRunner

from ben2_worker.cli import app


@pytest.fixture
def env(models_dir, monkeypatch):
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(models_dir))
    # The stand-in differs from the pinned BEN2 checksum: accepting it is this explicit switch.
    monkeypatch.setenv("BEN2_WORKER_ALLOW_CUSTOM_MODELS", "1")
    monkeypatch.setenv("BEN2_WORKER_THREADS", "1")
    return {"BEN2_WORKER_MODELS": str(models_dir), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1", "BEN2_WORKER_THREADS": "1"}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def save_jpeg(img: np.ndarray, path: Path, orientation: int | None = None) -> Path:
    pil = Image.fromarray(img)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    pil.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def test_12mp_exif_rotated_jpeg_comes_back_full_size_with_original_pixels(env, tmp_path):
    displayed = subject_photo(4000, 3000)  # what a viewer shows: landscape 12 MP
    # Stored portrait, with orientation 6 ("rotate 90° clockwise to display").
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))
    src = save_jpeg(stored, tmp_path / "camera.jpg", orientation=6)
    out = tmp_path / "out"
    result = invoke("remove", str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    cut = Image.open(out / "camera.png")
    assert cut.size == (4000, 3000) and cut.mode == "RGBA"
    rgba = np.asarray(cut)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
    assert reference.shape == (3000, 4000, 3)
    # Alpha where the matte says: the subject box (central half) opaque, the rest clear.
    alpha = rgba[..., 3]
    assert alpha[800:2200, 1100:2900].min() == 255
    assert alpha[:700].max() == 0 and alpha[:, :900].max() == 0 and alpha[2300:].max() == 0
    # ...and the original full-resolution pixels under it, bit for bit.
    assert np.array_equal(rgba[..., :3], reference)
    assert "1 written, 0 failed" in result.output


def test_folders_globs_and_a_bad_file(env, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "chelsea.jpg", src / "cat.jpg")
    Image.open(SAMPLES / "coffee.jpg").save(src / "sub" / "coffee.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    result = invoke("remove", str(src), str(SAMPLES / "rock*.jpg"), str(tmp_path / "missing.jpg"), "-o", str(out))
    assert result.exit_code == 1
    assert (out / "cat.png").is_file() and (out / "sub" / "coffee.png").is_file() and (out / "rocket.png").is_file()
    assert not (out / "broken.png").exists()
    assert "broken.jpg" in result.output and "missing.jpg" in result.output
    assert "3 written, 2 failed, 0 skipped" in result.output
    assert not list(out.rglob("*.part")), "no temporary files may be left behind"
    assert Image.open(out / "sub" / "coffee.png").size == (600, 400)


def test_never_overwrites_without_flag(env, tmp_path):
    src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
    out = tmp_path / "out"
    assert invoke("remove", str(src), "-o", str(out)).exit_code == 0
    target = out / "cat.png"
    target.write_bytes(b"precious")
    again = invoke("remove", str(src), "-o", str(out))
    assert again.exit_code == 0 and "0 written, 0 failed, 1 skipped" in again.output
    assert target.read_bytes() == b"precious"
    forced = invoke("remove", str(src), "-o", str(out), "--overwrite")
    assert forced.exit_code == 0 and Image.open(target).size == (451, 300)


def test_failed_encode_leaves_nothing_half_written(env, tmp_path, monkeypatch):
    import ben2_worker.files as files

    src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
    out = tmp_path / "out"

    real_fdopen = os.fdopen

    class ExplodingFile:
        def __init__(self, fd, mode):
            self.fh = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", ExplodingFile)
    result = invoke("remove", str(src), "-o", str(out))
    assert result.exit_code == 1 and "No space left" in result.output
    assert list(out.rglob("*")) == [], "neither the output nor a temp file may remain"


@pytest.mark.parametrize(
    ("args", "name", "mode", "check"),
    [
        (["--format", "webp"], "img.webp", "RGBA", None),
        (["--format", "jpg", "--background", "white"], "img.jpg", "RGB", "white"),
        (["--format", "jpg"], "img.jpg", "RGB", "white"),  # JPEG has no alpha: white by default
        (["--background", "#00FF00"], "img.png", "RGB", "green"),
        (["--background", "blue"], "img.png", "RGB", "blue"),
        (["--mask"], "img-mask.png", "L", None),  # the old name of --mask-only
        (["--mask-only"], "img-mask.png", "L", None),
        (["--crop", "--crop-margin", "10"], "img.png", "RGBA", "crop"),
        (["--refine"], "img.png", "RGBA", None),
        (["--sensitivity", "0.7", "--mask-offset", "-1", "--mask-blur", "2"], "img.png", "RGBA", None),
    ],
)
def test_output_options(env, tmp_path, args, name, mode, check):
    img = subject_photo(640, 480)
    src = tmp_path / "img.png"
    Image.fromarray(img).save(src)
    out = tmp_path / "out"
    result = invoke("remove", str(src), "-o", str(out), *args)
    assert result.exit_code == 0, result.output
    produced = Image.open(out / name)
    assert produced.mode == mode
    arr = np.asarray(produced)
    colours = {"white": (255, 255, 255), "green": (0, 255, 0), "blue": (0, 0, 255)}
    if check in colours:
        corner = arr[5, 5].astype(int)
        assert np.abs(corner - colours[check]).max() <= 3  # JPEG may shift a few levels
    if check == "crop":
        assert produced.size == (320 + 20, 240 + 20)
    if mode == "L":
        assert arr[240, 320] == 255 and arr[5, 5] == 0


def test_return_mask_writes_the_matte_beside_the_cutout(env, tmp_path):
    """The task API's return_mask, at the CLI: the cut-out and its matte."""
    src = tmp_path / "img.png"
    Image.fromarray(subject_photo(640, 480)).save(src)
    out = tmp_path / "out"
    assert invoke("remove", str(src), "-o", str(out), "--return-mask").exit_code == 0
    cut, matte = np.asarray(Image.open(out / "img.png")), np.asarray(Image.open(out / "img-mask.png"))
    assert cut.shape == (480, 640, 4) and matte.shape == (480, 640)
    assert np.array_equal(cut[..., 3], matte)


def test_missing_model_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(tmp_path / "empty"))
    src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
    result = invoke("remove", str(src), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "ben2-worker models download ben2" in result.output
    assert "BEN2_Base.onnx" in result.output


def test_standin_refused_without_explicit_switch(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(models_dir))
    monkeypatch.delenv("BEN2_WORKER_ALLOW_CUSTOM_MODELS", raising=False)
    src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
    result = invoke("remove", str(src), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "22cea62108ff53b7ccc20f7a008bf30494228d84b1687f29ecbe76936a998101" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--background", "mauve-ish"], "mauve-ish"),
        (["--format", "gif"], "gif"),
        (["--crop-margin", "-5"], "crop_margin"),
        (["--sensitivity", "2"], "sensitivity"),
    ],
)
def test_bad_options_are_named(env, tmp_path, args, needle):
    src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
    result = invoke("remove", str(src), "-o", str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    assert needle in result.output
    assert not (tmp_path / "out").exists()


def test_console_script_runs_on_the_bundled_samples(env, tmp_path):
    exe = Path(sys.executable).with_name("ben2-worker")
    proc = subprocess.run(
        [str(exe), "remove", str(SAMPLES), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 written, 0 failed" in proc.stderr
    assert "total" in proc.stderr  # the timings table
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        cut = Image.open(tmp_path / "out" / f"{name}.png")
        assert cut.mode == "RGBA" and cut.size == Image.open(SAMPLES / f"{name}.jpg").size


def test_outputs_get_normal_permissions(env, tmp_path):
    old = os.umask(0o022)
    try:
        src = shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "cat.jpg")
        assert invoke("remove", str(src), "-o", str(tmp_path / "out")).exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "cat.png").stat().st_mode & 0o777 == 0o644
