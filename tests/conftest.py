"""Shared fixtures: stand-in models the tests build themselves (never downloaded) and
photo-based test images whose matte is known exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLES = ROOT / "samples"
sys.path.insert(0, str(TESTS))

from standin_models import build_ben2_standin, build_models_dir  # noqa: E402

try:  # fuzz profiles (tests/test_fuzz.py): a fixed slice by default, --hypothesis-profile=long for more
    from hypothesis import HealthCheck, settings

    _FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    settings.register_profile("default-suite", max_examples=25, derandomize=True, database=None, **_FUZZ)
    settings.register_profile("long", max_examples=1500, **_FUZZ)
    settings.load_profile("default-suite")
except ImportError:  # hypothesis is in the test extra; without it only the fuzz tests fail to import
    pass


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder in the product layout holding the BEN2 stand-in (fixed batch, float16 out)."""
    return build_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def ben2_path(models_dir) -> Path:
    return models_dir / "ben2_onnx" / "BEN2_Base.onnx"


@pytest.fixture(scope="session")
def dynamic_ben2_path(tmp_path_factory) -> Path:
    """Variant with a dynamic batch axis and float32 output, as some re-exports have."""
    return build_ben2_standin(
        tmp_path_factory.mktemp("dyn") / "ben2_onnx" / "BEN2_Base.onnx", dynamic_batch=True, output_float16=False
    )


@pytest.fixture(scope="session")
def ben2_model(ben2_path):
    from ben2_worker.ben2 import Ben2Model

    return Ben2Model(ben2_path, threads=1)


@pytest.fixture(scope="session")
def engine(ben2_model):
    from ben2_worker.cutout import CutoutEngine

    return CutoutEngine(ben2_model)


def subject_photo(width: int, height: int, box: tuple[float, float, float, float] = (0.25, 0.25, 0.75, 0.75)) -> np.ndarray:
    """A real photo (the bundled astronaut, resized) whose red channel is 255 inside ``box``
    (fractions of the frame) and 0 outside, so the stand-in's matte is exactly that box while
    green and blue keep real photographic detail to check pixel preservation against."""
    import cv2
    from PIL import Image

    photo = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    img = cv2.resize(photo, (width, height), interpolation=cv2.INTER_LINEAR).copy()
    img[..., 0] = 0
    x0, y0 = int(box[0] * width), int(box[1] * height)
    x1, y1 = max(x0 + 1, int(box[2] * width)), max(y0 + 1, int(box[3] * height))
    img[y0:y1, x0:x1, 0] = 255
    return img
