"""Sizes and the one resizer.

SmartResizeForModel's working size (aspect kept, ~target pixels, even sides) and the resize
every door uses — the cut-out's model input, the workflow's resize nodes and the safety checks'
working copy — so a photo is turned into the same pixels whichever door it came through."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError

#: SmartResizeForModel targets; the mask is shaped at this many pixels, aspect kept.
TARGET_PIXELS = {"1024 (BEN2/BiRefNet)": 1024 * 1024, "2048 (BiRefNet_HR)": 2048 * 2048}
DEFAULT_TARGET_PIXELS = 1024 * 1024
RESIZE_TOLERANCE = {"smart": 0.05, "only_if_needed": 0.10, "always_resize": None}

#: The user's resize nodes' interpolation names -> the cv2 filter used when *enlarging*.
#: Shrinking always averages areas (anti-aliased, as PIL's filters are), whatever the name.
INTERPOLATIONS = {"lanczos": cv2.INTER_LANCZOS4, "bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}

#: The interpolation the safety checks' working copy is made with: the user's workflows'
#: SmartResizeForModel setting, so the checks see the same pixels from the task API and the
#: workflow runner.
SAFETY_INTERPOLATION = "lanczos"


def smart_resize_size(
    width: int, height: int, target_pixels: int = DEFAULT_TARGET_PIXELS, mode: str = "smart"
) -> tuple[int, int]:
    """The size SmartResizeForModel resizes to: aspect kept, W*H ~ target, even sides.

    ``smart`` keeps the size when within 5 % of the target pixel count, ``only_if_needed``
    within 10 %, ``always_resize`` never keeps it."""
    if mode not in RESIZE_TOLERANCE:
        raise InputError(
            f"resize_mode must be one of {', '.join(RESIZE_TOLERANCE)}, got {mode!r}", field="resize_mode"
        )
    if width < 1 or height < 1:
        raise InputError(f"image size must be at least 1x1, got {width}x{height}", field="image")
    tolerance = RESIZE_TOLERANCE[mode]
    pixels = width * height
    if tolerance is not None and abs(pixels - target_pixels) / target_pixels < tolerance:
        return width, height
    aspect = width / height
    new_h = math.sqrt(target_pixels / aspect)
    new_w = aspect * new_h
    # Even sides as the node does; never 0 for extreme aspect ratios (their node would crash).
    return max(2, int(round(new_w / 2) * 2)), max(2, int(round(new_h / 2) * 2))


def check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}",
                         field="interpolation")
    return interpolation


def resize(pixels: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking (anti-aliased, like PIL's
    filters), ``interpolation`` (bilinear, bicubic, lanczos) when enlarging. cv2 is several
    times faster than PIL here. The one resizer of the package."""
    check_interpolation(interpolation)
    h, w = pixels.shape[:2]
    if (w, h) == tuple(size):
        return pixels
    shrinking = size[0] < w or size[1] < h
    flag = cv2.INTER_AREA if shrinking else INTERPOLATIONS[interpolation]
    return cv2.resize(pixels, tuple(size), interpolation=flag)


def working_copy(rgb: np.ndarray, target_pixels: int = DEFAULT_TARGET_PIXELS, mode: str = "smart",
                 interpolation: str = SAFETY_INTERPOLATION) -> np.ndarray:
    """The ~1 MP copy SmartResizeForModel makes: what the safety checks look at."""
    return resize(rgb, smart_resize_size(rgb.shape[1], rgb.shape[0], target_pixels, mode), interpolation)
