"""The typed seams between the pipelines and their engines: one small Protocol per engine.

The pipelines, the workflow nodes and the node pack call engines only through these methods,
so a stand-in (a test model, a recording wrapper) or another build of an engine fits wherever
it satisfies the Protocol. Verdicts cross the seams as objects (dicts checked by
``safety.gate``'s parsers, then :class:`~ben2_worker.safety.gate.Verdict`); JSON text is
written only at the workflow node edge (``workflow.values.VerdictJSON``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .cutout import CutoutOptions, CutoutResult
    from .timing import StageTimer


@runtime_checkable
class CutoutSteps(Protocol):
    """BEN2 and its three steps (``cutout.CutoutEngine``)."""

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def forward(self, tensors: Any, timers: list[StageTimer] | None = None) -> list[np.ndarray]: ...

    def postprocess(self, raw: np.ndarray, rgb: np.ndarray, options: CutoutOptions = ..., *,
                    work_size: tuple[int, int] | None = None, timer: StageTimer | None = None) -> CutoutResult: ...


@runtime_checkable
class CaptionEngine(Protocol):
    """Florence-2 captioning (``safety.caption.Captioner``)."""

    def caption(self, rgb: np.ndarray, task: str = ..., *, num_beams: int = ..., max_new_tokens: int = ...,
                do_sample: bool = ..., seed: int | None = ...) -> str: ...


@runtime_checkable
class NudityEngine(Protocol):
    """NudeNet (``safety.nudity.NudityDetector``): the verdict object the gate checks."""

    def check(self, rgb: np.ndarray, threshold: float = ...) -> Mapping[str, Any]: ...


@runtime_checkable
class ClassifierEngine(Protocol):
    """The LLM safety classifier (``safety.classifier.SafetyClassifier``)."""

    def classify(self, caption: str, *, temperature: float = ..., max_new_tokens: int = ...) -> Mapping[str, Any]: ...

    def extract(self, text: str, instruction: str, schema: dict | None = None) -> Mapping[str, Any]: ...
