"""BEN2 cut-outs at full resolution.

The user's ComfyUI chain shrinks a photo to ~1 MP, cuts it out there and enlarges the 1 MP
cut-out back, so a 12 MP photo comes back soft. Here the matte is computed at model
resolution, shaped (sensitivity, blur, offset) at the same ~1 MP working size the user's chain
uses — so every option means what it means in their node — then enlarged once and applied to
the **original** pixels.

One module per step: ``sizes`` (working size, the one resizer), ``matte`` (shaping),
``upsample`` (guided matte upsampling: the full-resolution photo shapes the full-resolution
matte, on by default), ``compose`` (matte on pixels), ``crop``, ``refine`` (edge colours),
``layout`` (output canvas: size, scale, position, output_size), ``shadow`` and ``engine`` (the
model and its preprocess / forward / postprocess steps). Everything but :class:`CutoutEngine` is a
pure function on numpy arrays; no torch."""

from ..options import BACKGROUND_PRESETS
from .compose import compose, parse_background
from .crop import CROP_ALPHA_THRESHOLD, CropMargin, crop_box, subject_bbox
from .engine import CutoutEngine, CutoutOptions, CutoutResult
from .layout import LayoutOptions, lay_out
from .matte import MatteOptions, shape_matte, upscale_matte
from .refine import REFINE_RADII, estimate_foreground
from .shadow import ShadowOptions
from .upsample import GuidedUpsampling, guided_upsample
from .sizes import (
    INTERPOLATIONS,
    RESIZE_TOLERANCE,
    SAFETY_INTERPOLATION,
    TARGET_PIXELS,
    check_interpolation,
    resize,
    smart_resize_size,
    working_copy,
)

__all__ = [
    "BACKGROUND_PRESETS",
    "CROP_ALPHA_THRESHOLD",
    "INTERPOLATIONS",
    "REFINE_RADII",
    "RESIZE_TOLERANCE",
    "SAFETY_INTERPOLATION",
    "TARGET_PIXELS",
    "CropMargin",
    "CutoutEngine",
    "CutoutOptions",
    "CutoutResult",
    "MatteOptions",
    "check_interpolation",
    "compose",
    "crop_box",
    "estimate_foreground",
    "parse_background",
    "resize",
    "shape_matte",
    "smart_resize_size",
    "subject_bbox",
    "upscale_matte",
    "working_copy",
    "guided_upsample",
    "GuidedUpsampling",
    "LayoutOptions",
    "lay_out",
    "ShadowOptions",
]
