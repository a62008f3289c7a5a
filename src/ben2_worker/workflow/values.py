"""Values that flow along a workflow's links.

ComfyUI passes IMAGE as float32 ``[B,H,W,C]`` tensors. Here an IMAGE is one
:class:`ImageValue`: uint8 pixels plus **provenance** — when the pixels are a resized copy of a
larger image (SmartResizeForModel's output, or BEN2's cut-out of such a copy), the value also
knows the full-resolution version of the same content (given, or computed on first use). That
lets RestoreOriginalSize hand back a true full-resolution cut-out instead of enlarging a ~1 MP
one; see docs/workflows.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

FullSource = Union["ImageValue", Callable[[], "ImageValue"], None]


def _checked(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4) or 0 in a.shape[:2]:
        raise ValueError(f"an IMAGE must be (H, W, 3|4) uint8, got {a.dtype} {a.shape}")
    return a


class ImageValue:
    """One image: ``pixels`` (H, W, 3) RGB or (H, W, 4) RGBA uint8.

    ``full_size``/``full_resolution()``: the same content at the larger size it was resized
    from, when known. Nodes that keep content (FreeVRAMInline, HybridSafetyGate) pass the very
    same object on; nodes that change pixels make a new value and decide what its full
    resolution version is (BEN2 applies its matte to the original pixels). A value may be made
    lazily (``make=``, ``shape=``): BEN2's working-size cut-out is only composed when a node
    reads it, not when RestoreOriginalSize goes straight to the full-resolution version."""

    __slots__ = ("_full", "_make", "_pixels", "_shape", "full_size")

    def __init__(self, pixels: np.ndarray | None, *, full: FullSource = None, full_size: tuple[int, int] | None = None,
                 make: Callable[[], np.ndarray] | None = None, shape: tuple[int, int, int] | None = None):
        if pixels is None:  # lazily made: only computed when a node reads the pixels
            if make is None or shape is None:
                raise ValueError("an IMAGE without pixels needs make= and shape=")
            self._pixels, self._make, self._shape = None, make, tuple(shape)
        else:
            a = _checked(np.asarray(pixels))
            self._pixels, self._make, self._shape = np.ascontiguousarray(a), None, a.shape
        if full is not None and full_size is None:
            if not isinstance(full, ImageValue):
                raise ValueError("full_size is required with a lazily computed full-resolution image")
            full_size = full.size
        if full_size is not None and tuple(full_size) == self.size:
            full, full_size = None, None  # same size: nothing to restore
        self._full = full
        self.full_size = tuple(full_size) if full_size is not None else None

    @property
    def pixels(self) -> np.ndarray:
        """(H, W, 3|4) uint8; computed on first use for a lazily made value."""
        if self._pixels is None:
            a = _checked(np.asarray(self._make()))  # type: ignore[misc]
            if a.shape != self._shape:
                raise RuntimeError(f"lazily made image is {a.shape}, expected {self._shape}")
            self._pixels, self._make = np.ascontiguousarray(a), None
        return self._pixels

    @property
    def width(self) -> int:
        return int(self._shape[1])

    @property
    def height(self) -> int:
        return int(self._shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    @property
    def channels(self) -> int:
        return int(self._shape[2])

    @property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) RGB; alpha, if any, is dropped (as the user's nodes convert('RGB'))."""
        if self.channels == 3:
            return self.pixels
        return np.ascontiguousarray(self.pixels[..., :3])

    def full_resolution(self) -> ImageValue | None:
        """The same content at ``full_size``, computed once on first call; None without provenance."""
        if self._full is None:
            return None
        if not isinstance(self._full, ImageValue):
            value = self._full()
            if value.size != self.full_size:
                raise RuntimeError(f"full-resolution image is {value.size}, expected {self.full_size}")
            self._full = value
        return self._full

    def __repr__(self) -> str:
        full = f", full_size={self.full_size}" if self.full_size else ""
        return f"ImageValue({self.width}x{self.height}x{self.channels}{full})"


class MaskValue:
    """One MASK: (H, W) float32 in 0..1, as ComfyUI's MASK without the batch axis."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray):
        a = np.asarray(values, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(f"a MASK must be (H, W), got {a.shape}")
        self.values = a

    @classmethod
    def from_uint8(cls, alpha: np.ndarray) -> MaskValue:
        return cls(alpha.astype(np.float32) * np.float32(1 / 255))

    @property
    def size(self) -> tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[0])

    def __repr__(self) -> str:
        return f"MaskValue({self.size[0]}x{self.size[1]})"


@dataclass(frozen=True)
class Florence2ModelRef:
    """What Florence2ModelLoader hands to Florence2Run (kijai's ``FL2MODEL``): which local
    model folder the workflow asked for, and its load options. The loaded model itself is the
    worker's caption engine."""

    name: str
    path: Path | None
    precision: str
    attention: str


class VerdictJSON(str):
    """A check's verdict as its node's STRING output: the JSON text (what ShowText shows and
    what another pack's node would parse) plus the object it was written from (``data``), so
    the gate in the same process reads the object instead of parsing the text back. JSON is
    written only at this node edge."""

    data: dict

    def __new__(cls, data: dict, **dumps: Any) -> VerdictJSON:
        text = super().__new__(cls, json.dumps(data, **dumps))
        text.data = data
        return text


def verdict_object(value: Any) -> Any:
    """What the gate decides on: the object behind a :class:`VerdictJSON`, else the value itself
    (JSON text from another pack's node, parsed and checked by the gate)."""
    return value.data if isinstance(value, VerdictJSON) else value
