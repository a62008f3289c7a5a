"""The cut-out engine: BEN2 plus its three public steps, the only assembly of a cut-out.

``preprocess`` (RGB -> model tensor), ``forward`` (tensors -> raw mattes, one model batch) and
``postprocess`` (raw matte + original RGB + options -> result). Every door — the task API, the
CLI, the workflow runner's BEN2 node and the ComfyUI node — maps its parameters onto these
steps, so one photo and one set of options give the same alpha through each (docs/cutout.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ben2 import Ben2Model, to_model_input
from ..timing import StageTimer
from .compose import compose, parse_background
from .crop import CropMargin, crop_box, subject_bbox
from .matte import MatteOptions, shape_matte, upscale_matte
from .refine import estimate_foreground
from .sizes import DEFAULT_TARGET_PIXELS, resize, smart_resize_size


@dataclass(frozen=True)
class CutoutOptions:
    matte: MatteOptions = field(default_factory=MatteOptions)
    background: tuple[int, int, int] | None = None  # None: transparent RGBA
    mask_only: bool = False  # return the matte as a greyscale image
    crop: bool = False
    crop_margin: CropMargin = field(default_factory=CropMargin)
    refine: bool = False  # foreground colour estimation at the edges
    target_pixels: int = DEFAULT_TARGET_PIXELS  # working size of the matte options (SmartResize target)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> CutoutOptions:
        """From the declared output options (:mod:`ben2_worker.options`) as a door received
        them: the one mapping the task API and the CLI share."""
        return cls(
            matte=MatteOptions(sensitivity=float(values["sensitivity"]), mask_blur=int(values["mask_blur"]),
                               mask_offset=int(values["mask_offset"])),
            background=parse_background(str(values["background"])),
            mask_only=bool(values["mask_only"]),
            crop=bool(values["crop"]),
            crop_margin=CropMargin.parse(values["crop_margin"]),
            refine=bool(values["refine"]),
        )


@dataclass
class CutoutResult:
    image: np.ndarray  # RGBA, RGB (background) or L (mask_only), at full resolution (cropped if asked)
    alpha: np.ndarray  # (H, W) uint8 matte at full resolution, uncropped
    crop_box: tuple[int, int, int, int] | None  # applied crop in original pixels
    timings: StageTimer
    #: The matte at the working size it was shaped at (the workflow node's MASK output).
    matte: np.ndarray | None = None


class CutoutEngine:
    """BEN2 model + the full-resolution pre/post-processing; one per process, shared."""

    def __init__(self, model: Ben2Model, *, input_scaling: str = "unit"):
        self.model = model
        self.input_scaling = input_scaling

    # ------------------------------------------------------------------ the three steps

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 RGB -> the model's (3,S,S) float32 input, straight from these pixels."""
        return to_model_input(resize(rgb, self.model.size), self.input_scaling)

    def forward(self, tensors: np.ndarray | list[np.ndarray], timers: list[StageTimer] | None = None) -> list[np.ndarray]:
        """Model inputs -> raw (S,S) float mattes, as one model batch where the model allows."""
        batch = np.ascontiguousarray(np.stack(list(tensors)) if isinstance(tensors, list) else tensors, np.float32)
        if not len(batch):
            return []
        t0 = time.perf_counter()
        raw = self.model.predict(batch)
        share = (time.perf_counter() - t0) / len(batch)  # one batched run, shared evenly
        for t in timers or ():
            t.add("inference", share)
        return list(raw)

    def postprocess(self, raw: np.ndarray, rgb: np.ndarray, options: CutoutOptions = CutoutOptions(), *,
                    work_size: tuple[int, int] | None = None, timer: StageTimer | None = None) -> CutoutResult:
        """Raw matte + the original RGB -> the cut-out at the original's resolution.

        The matte is shaped at ``work_size`` (default: SmartResize's size for
        ``options.target_pixels``), so the options mean what they mean in the user's node."""
        t = timer or StageTimer()
        h, w = rgb.shape[:2]
        with t("matte"):
            matte = self.shape(raw, work_size or smart_resize_size(w, h, options.target_pixels, "smart"), options)
        return self.apply(matte, rgb, options, timer=t)

    def shape(self, raw: np.ndarray, work_size: tuple[int, int], options: CutoutOptions = CutoutOptions()) -> np.ndarray:
        """The first half of :meth:`postprocess`: the raw matte shaped at ``work_size`` (uint8)."""
        return shape_matte(raw, work_size, options.matte)

    def apply(self, matte: np.ndarray, rgb: np.ndarray, options: CutoutOptions = CutoutOptions(), *,
              timer: StageTimer | None = None) -> CutoutResult:
        """The second half of :meth:`postprocess`: a shaped matte onto ``rgb`` at its size
        (enlarge once, crop, refine, compose). The workflow node applies one matte to the
        working copy and, when asked, to the original."""
        t = timer or StageTimer()
        h, w = rgb.shape[:2]
        with t("upscale"):
            alpha = upscale_matte(matte, (w, h))
        box = None
        if options.crop:
            with t("crop"):
                bbox = subject_bbox(alpha)
                box = crop_box(bbox, options.crop_margin, w, h) if bbox else None
        x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
        if options.mask_only:
            image = alpha if box is None else np.ascontiguousarray(alpha[y0:y1, x0:x1])
        else:
            src = rgb
            if options.refine:
                with t("refine"):
                    src = estimate_foreground(rgb, alpha)
            with t("compose"):  # compose only what the crop keeps
                image = compose(np.ascontiguousarray(src[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1]),
                                options.background)
        return CutoutResult(image=image, alpha=alpha, crop_box=box, timings=t, matte=matte)

    # ------------------------------------------------------------------ conveniences

    def mattes(self, images: list[np.ndarray], *, timers: list[StageTimer] | None = None) -> list[np.ndarray]:
        """Raw (S,S) float mattes for RGB images: :meth:`preprocess` each, one :meth:`forward`."""
        timers = timers or [StageTimer() for _ in images]
        if not images:
            return []
        tensors = []
        for rgb, t in zip(images, timers):
            with t("resize"):
                tensors.append(self.preprocess(rgb))
        return self.forward(tensors, timers)

    def cut_out(self, images: list[np.ndarray], options: CutoutOptions = CutoutOptions()) -> list[CutoutResult]:
        """Cut out a batch of (H,W,3) uint8 RGB images at their full resolution."""
        if not images:
            return []
        timers = [StageTimer() for _ in images]
        raws = self.mattes(images, timers=timers)
        return [self.postprocess(raw, rgb, options, timer=t) for rgb, raw, t in zip(images, raws, timers)]
