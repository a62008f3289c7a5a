"""ComfyUI tensors <-> the worker's values, at the edge of each node.

ComfyUI: IMAGE is float32 ``[B,H,W,C]`` in 0..1 (C = 3, or 4 for a cut-out), MASK is
``[B,H,W]``. The worker's executors take one :class:`ImageValue` (uint8 pixels) per image, so a
batch is run image by image. Conversion rounds (``round(x * 255)``), so a tensor made here
converts back to exactly the same bytes.

**Provenance.** An IMAGE tensor this pack outputs carries the :class:`ImageValue` objects it was
made from (attribute ``_ben2_images``), so SmartResizeForModel -> BEN2 -> RestoreOriginalSize
gives the full-resolution cut-out exactly as the native runner does (docs/workflows.md). The
values are only reused while the tensor was not written in place since (torch's ``_version``
counter, or a sparse fingerprint for inference tensors, which keep no counter; no whole-array
comparison at each boundary); any other tensor — from another pack, a slice, a copy — is converted afresh and
runs literally.

torch is imported inside the functions only: ComfyUI has it, and importing the pack never needs it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..workflow.values import ImageValue, MaskValue

ATTR = "_ben2_images"


def _torch():
    import torch

    return torch


def images_in(tensor: Any, name: str = "image") -> list[ImageValue]:
    """An IMAGE tensor -> one ImageValue per batch item (the attached ones when still valid)."""
    torch = _torch()
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[-1] not in (3, 4) or 0 in tensor.shape:
        shape = tuple(tensor.shape) if hasattr(tensor, "shape") else type(tensor).__name__
        raise InputError(f"{name} must be a ComfyUI IMAGE, a [B,H,W,3|4] tensor; got {shape}", field=name)
    attached = getattr(tensor, ATTR, None)
    if attached is not None and _unchanged(tensor, attached):
        return list(attached[0])
    pixels = (tensor.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8).numpy()
    return [ImageValue(px) for px in pixels]


def _unchanged(tensor: Any, attached: tuple) -> bool:
    """Whether ``tensor`` still holds what it was made with: the same batch and no in-place
    write since. No whole-array comparison at each node boundary (see :func:`_stamp`)."""
    values, stamp = attached
    return len(values) == tensor.shape[0] and _stamp(tensor) == stamp


def _stamp(tensor: Any) -> tuple:
    """torch's count of in-place writes; inference tensors (ComfyUI runs nodes under
    ``torch.inference_mode()``) keep none, so there a fingerprint of every 7th pixel in each
    direction (1/49 of the pixels) plus the storage address stands in for it."""
    try:
        return ("version", tensor._version)
    except RuntimeError:
        return ("sample", tensor.data_ptr(), float(tensor[:, ::7, ::7].double().sum()))


def images_out(values: list[ImageValue]):
    """ImageValues -> one IMAGE tensor carrying them (see module docstring)."""
    torch = _torch()
    shapes = {v.pixels.shape for v in values}
    if len(shapes) != 1:
        raise InputError(f"images of one batch came out in different sizes {sorted(shapes)}; run them as separate batches")
    tensor = torch.from_numpy(np.stack([v.pixels for v in values])).to(torch.float32).div_(255.0)
    setattr(tensor, ATTR, (tuple(values), _stamp(tensor)))
    return tensor


def masks_out(values: list[MaskValue]):
    torch = _torch()
    return torch.from_numpy(np.stack([m.values for m in values]).astype(np.float32, copy=False))
