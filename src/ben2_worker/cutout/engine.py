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
from ..options import OUTPUT_OPTIONS, check_choice, check_range
from ..timing import StageTimer
from .compose import compose, parse_background
from .crop import CropMargin
from .layout import (LayoutOptions, fit_pixels, harden, lay_out, parse_output_size, parse_position, parse_scale,
                     resolve_format, size_limit)
from .matte import MatteOptions, shape_matte, upscale_matte
from .refine import estimate_foreground
from .shadow import ShadowOptions, compose_with_shadow, shadow_opacity
from .sizes import DEFAULT_TARGET_PIXELS, resize, smart_resize_size
from .upsample import guide_like_matte, guided_upsample

#: Every declared option's default: what a door that leaves an option out means.
_DEFAULTS = {o.name: o.default for o in OUTPUT_OPTIONS}
_ALIASES = {alias: o.name for o in OUTPUT_OPTIONS for alias in o.aliases.get("api", ())}


@dataclass(frozen=True)
class CutoutOptions:
    matte: MatteOptions = field(default_factory=MatteOptions)
    background: tuple[int, int, int] | None = None  # None: transparent RGBA
    mask_only: bool = False  # return the matte as a greyscale image (channels=alpha)
    crop: bool = False
    crop_margin: CropMargin = field(default_factory=CropMargin)
    refine: bool = False  # foreground colour estimation at the edges
    target_pixels: int = DEFAULT_TARGET_PIXELS  # working size of the matte options (SmartResize target)
    upsampling: str = "guided"  # guided (the photo shapes the matte's edges) or bilinear
    max_pixels: int | None = None  # the ``size`` preset's pixel budget; None: the photo's own size
    scale: float | None = None  # the subject's share of the canvas; None: original
    position: tuple[float, float] | None = None  # (x, y) fractions; None: original
    output_size: tuple[int, int] | None = None  # fixed canvas (width, height)
    semitransparency: bool = True  # False: every pixel fully opaque or clear
    shadow: ShadowOptions | None = None  # None: no shadow
    format: str = "png"  # as requested; :attr:`output_format` resolves ``auto``

    def __post_init__(self) -> None:
        check_choice("upsampling", self.upsampling)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> CutoutOptions:
        """From the declared output options (:mod:`ben2_worker.options`) as a door received
        them: the one mapping the task API and the CLI share. Options left out take their
        declared defaults, and an option's request aliases (``bg_color``) count as its name;
        a bad value raises InputError naming the option."""
        v = {**_DEFAULTS, **{_ALIASES.get(k, k): x for k, x in values.items() if k not in _DEFAULTS}, **values}
        shadow = None
        if v["add_shadow"]:
            check_range("shadow_opacity", v["shadow_opacity"])
            shadow = ShadowOptions(kind=check_choice("shadow_type", v["shadow_type"]),
                                   opacity=float(v["shadow_opacity"]) / 100, blur=float(v["shadow_blur"]),
                                   offset=(float(v["shadow_offset_x"]), float(v["shadow_offset_y"])))
        return cls(
            matte=MatteOptions(sensitivity=float(v["sensitivity"]), mask_blur=int(v["mask_blur"]),
                               mask_offset=int(v["mask_offset"])),
            background=parse_background(str(v["background"])),
            mask_only=bool(v["mask_only"]) or check_choice("channels", v["channels"]) == "alpha",
            crop=bool(v["crop"]),
            crop_margin=CropMargin.parse(v["crop_margin"]),
            refine=bool(v["refine"]),
            upsampling=check_choice("upsampling", v["upsampling"]),
            max_pixels=size_limit(v["size"]),
            scale=parse_scale(v["scale"]),
            position=parse_position(v["position"]),
            output_size=parse_output_size(v["output_size"]),
            semitransparency=bool(v["semitransparency"]),
            shadow=shadow,
            format=str(v["format"]),
        )

    @property
    def layout(self) -> LayoutOptions:
        return LayoutOptions(crop=self.crop, crop_margin=self.crop_margin, scale=self.scale, position=self.position,
                             output_size=self.output_size)

    @property
    def output_format(self) -> str:
        """The encoder's format: ``auto`` is PNG for a transparent cut-out or a matte, JPEG
        for a cut-out on a background colour (known before any pixel is made)."""
        return resolve_format(self.format, transparent=self.mask_only or self.background is None)


@dataclass
class CutoutResult:
    image: np.ndarray  # RGBA, RGB (background) or L (mask_only), on its output canvas
    alpha: np.ndarray  # (H, W) uint8 matte at full resolution (after ``size``), uncropped
    crop_box: tuple[int, int, int, int] | None  # applied crop in original pixels
    timings: StageTimer
    #: The matte at the working size it was shaped at (the workflow node's MASK output).
    matte: np.ndarray | None = None
    #: The subject's (left, top, width, height) on the output canvas; None when there is none.
    subject: tuple[int, int, int, int] | None = None


class CutoutEngine:
    """BEN2 model + the full-resolution pre/post-processing; one per process, shared."""

    def __init__(self, model: Ben2Model, *, input_scaling: str = "unit"):
        self.model = model
        self.input_scaling = input_scaling

    # ------------------------------------------------------------------ the three steps

    def model_square(self, rgb: np.ndarray) -> np.ndarray:
        """The photo as the model sees it: (S,S,3) uint8, area-reduced. It is also the guide's
        source for guided upsampling (made like the matte, upsample.guide_like_matte)."""
        return resize(rgb, self.model.size)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 RGB -> the model's (3,S,S) float32 input, straight from these pixels."""
        return to_model_input(self.model_square(rgb), self.input_scaling)

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
                    work_size: tuple[int, int] | None = None, square: np.ndarray | None = None,
                    timer: StageTimer | None = None) -> CutoutResult:
        """Raw matte + the original RGB -> the cut-out at the original's resolution (or the
        ``size`` preset's, which shrinks the photo first: a preview is cheaper to make).

        The matte is shaped at ``work_size`` (default: SmartResize's size for
        ``options.target_pixels``), so the options mean what they mean in the user's node.
        ``square``: the model's view of the photo (:meth:`model_square`), when the caller
        still has it; otherwise it is made again (the same pixels)."""
        t = timer or StageTimer()
        h, w = rgb.shape[:2]
        size = fit_pixels(w, h, options.max_pixels)
        if size != (w, h):
            with t("resize"):
                rgb, (w, h) = resize(rgb, size), size
        with t("matte"):
            matte = self.shape(raw, work_size or smart_resize_size(w, h, options.target_pixels, "smart"), options)
        return self.apply(matte, rgb, options, square=square, timer=t)

    def shape(self, raw: np.ndarray, work_size: tuple[int, int], options: CutoutOptions = CutoutOptions()) -> np.ndarray:
        """The first half of :meth:`postprocess`: the raw matte shaped at ``work_size`` (uint8)."""
        return shape_matte(raw, work_size, options.matte)

    def upscale(self, matte: np.ndarray, rgb: np.ndarray, options: CutoutOptions = CutoutOptions(), *,
                square: np.ndarray | None = None) -> np.ndarray:
        """The shaped matte at ``rgb``'s size: guided by ``rgb`` (the default) when the matte
        is no larger than the photo — at the same size too, where it still draws the edges the
        photo shows (×0.16 of plain's edge error at 1 MP, docs/edges.md) — and a plain
        bilinear resize when it would shrink the matte or ``upsampling`` is ``bilinear``."""
        h, w = rgb.shape[:2]
        mh, mw = matte.shape
        if options.upsampling == "bilinear" or mw > w or mh > h:
            return upscale_matte(matte, (w, h))
        guide = guide_like_matte(self.model_square(rgb) if square is None else square, (mw, mh))
        return guided_upsample(matte.astype(np.float32) * np.float32(1 / 255), rgb, guide_small=guide)

    def apply(self, matte: np.ndarray, rgb: np.ndarray, options: CutoutOptions = CutoutOptions(), *,
              square: np.ndarray | None = None, timer: StageTimer | None = None) -> CutoutResult:
        """The second half of :meth:`postprocess`: a shaped matte onto ``rgb`` at its size
        (upscale once, harden, refine, lay out, shadow, compose). The workflow node applies one
        matte to the working copy and, when asked, to the original."""
        t = timer or StageTimer()
        with t("upscale"):
            alpha = self.upscale(matte, rgb, options, square=square)
            if not options.semitransparency:
                alpha = harden(alpha)
        src = rgb
        if options.refine and not options.mask_only:
            with t("refine"):
                src = estimate_foreground(rgb, alpha)
        with t("layout"):
            canvas = lay_out(src, alpha, options.layout)
            placed = canvas.alpha if options.semitransparency else harden(canvas.alpha)
        if options.mask_only:
            image = placed
        elif options.shadow is not None:
            with t("shadow"):
                shade = shadow_opacity(placed, canvas.subject, options.shadow)
                image = compose_with_shadow(canvas.rgb, placed, shade, options.shadow.colour, options.background)
        else:
            with t("compose"):
                image = compose(canvas.rgb, placed, options.background)
        box = canvas.source_box if options.crop and canvas.subject is not None else None
        return CutoutResult(image=image, alpha=alpha, crop_box=box, timings=t, matte=matte, subject=canvas.subject)

    # ------------------------------------------------------------------ conveniences

    def mattes(self, images: list[np.ndarray], *, timers: list[StageTimer] | None = None) -> list[np.ndarray]:
        """Raw (S,S) float mattes for RGB images: :meth:`preprocess` each, one :meth:`forward`."""
        return self._mattes(images, timers or [StageTimer() for _ in images])[0]

    def _mattes(self, images: list[np.ndarray], timers: list[StageTimer]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Raw mattes and the model's squares (kept as the guides' source)."""
        if not images:
            return [], []
        squares = []
        for rgb, t in zip(images, timers):
            with t("resize"):
                squares.append(self.model_square(rgb))
        tensors = [to_model_input(sq, self.input_scaling) for sq in squares]
        return self.forward(tensors, timers), squares

    def cut_out(self, images: list[np.ndarray], options: CutoutOptions = CutoutOptions()) -> list[CutoutResult]:
        """Cut out a batch of (H,W,3) uint8 RGB images at their full resolution."""
        if not images:
            return []
        timers = [StageTimer() for _ in images]
        raws, squares = self._mattes(images, timers)
        return [self.postprocess(raw, rgb, options, square=sq, timer=t)
                for rgb, raw, sq, t in zip(images, raws, squares, timers)]
