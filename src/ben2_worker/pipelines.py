"""The pipelines a worker serves, composed from the engines.

``simple``: BEN2 cut-out. ``full``: caption ∥ nudity check → classifier → fail-closed gate →
cut-out. A pipeline is served only when every engine it needs is loaded; a request for one that
is not gets a clear error, never a cut-out without its safety checks."""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .config import DEFAULT_SAFETY_TIMEOUT_S
from .cutout import CutoutOptions, CutoutResult
from .engines import Engines
from .errors import EngineUnavailableError, InputError, StageTimeoutError
from .options import PIPELINES
from .timing import StageTimer

if TYPE_CHECKING:
    from .safety.gate import Verdict

__all__ = ["PIPELINES", "FullResult", "SafetyOptions", "StageTimeout", "check_image", "require_pipeline",
           "run_full", "run_simple", "served_pipelines"]


def pipeline_models(pipeline: str) -> list[str]:
    """The models ``pipeline`` needs, as the model manifest declares them."""
    from .models.store import load_manifest, models_for_pipeline

    return models_for_pipeline(load_manifest(), pipeline)


def served_pipelines(engines: Engines) -> tuple[str, ...]:
    served = []
    if engines.cutout is not None:
        served.append("simple")
        if engines.caption is not None and engines.nudenet is not None and engines.classifier is not None:
            served.append("full")
    return tuple(served)


def parse_pipelines(value: str | None) -> tuple[str, ...] | None:
    """``BEN2_WORKER_PIPELINES`` ("simple", "simple,full"); None when unset (serve what is present)."""
    if value is None or not value.strip():
        return None
    names = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        raise ValueError(f"BEN2_WORKER_PIPELINES: unknown pipeline(s) {', '.join(unknown)}; choose from {', '.join(PIPELINES)}")
    return names


def require_pipeline(engines: Engines, pipeline: str) -> None:
    if pipeline not in PIPELINES:
        raise InputError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}", field="pipeline")
    served = served_pipelines(engines)
    if pipeline not in served:
        needs = ", ".join(pipeline_models(pipeline))
        raise EngineUnavailableError(
            f"pipeline {pipeline!r} is not served by this worker (it serves: {', '.join(served) or 'nothing'}); "
            f"it needs the engines for {needs}. Set BEN2_WORKER_PIPELINES and provide those models "
            "(`ben2-worker models download --pipeline " + pipeline + "`)."
        )


def run_simple(engines: Engines, images: list[np.ndarray], options: CutoutOptions) -> list[CutoutResult]:
    """The cut-out for a batch of RGB images, as one model batch where the model allows."""
    require_pipeline(engines, "simple")
    return engines.require_cutout().cut_out(images, options)


@dataclass(frozen=True)
class SafetyOptions:
    """The full pipeline's checks, defaulting to the user's full workflow (docs/contracts.md#the-users-workflows)."""

    nudenet_threshold: float = 0.6
    block_unsafe: bool = True
    block_borderline: bool = False
    nudenet_overrides_llama: bool = True
    caption_task: str = "more_detailed_caption"
    num_beams: int = 3
    max_new_tokens: int = 256
    #: Seconds each check may take before it counts as failed (and so blocks);
    #: the worker takes it from ``settings.safety_timeout_s`` (BEN2_WORKER_SAFETY_TIMEOUT).
    stage_timeout_s: float = DEFAULT_SAFETY_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings) -> SafetyOptions:
        """The defaults with the configured stage timeout (``settings.safety_timeout_s``)."""
        return cls(stage_timeout_s=settings.safety_timeout_s)


@dataclass
class FullResult:
    verdict: Verdict
    caption: str | None
    cutout: CutoutResult | None  # None when blocked: a blocked image is never cut out
    timings: StageTimer
    #: A check overran its time limit and its thread may still be busy: recycle the worker.
    stalled: bool = False


_checks_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="safety")


#: The old name of :class:`~ben2_worker.errors.StageTimeoutError`.
StageTimeout = StageTimeoutError


def _attempt(future: concurrent.futures.Future, deadline: float, limit: float, what: str):
    """The check's result, or the exception it raised / a timeout error — never raises."""
    try:
        return future.result(timeout=max(0.0, deadline - time.perf_counter()))
    except concurrent.futures.TimeoutError:
        future.cancel()
        return StageTimeoutError(f"{what} did not finish within {limit:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure is a verdict input: it blocks
        return exc


def check_image(engines: Engines, rgb: np.ndarray, safety: SafetyOptions, timer: StageTimer):
    """(caption, verdict, stalled) for one image: caption ∥ NudeNet, then the classifier, then the gate.

    Every failure — missing engine, exception, timeout, unparsable output — reaches the gate
    as an error and blocks (fail closed)."""
    from .cutout import working_copy
    from .safety.gate import decide

    t0 = time.perf_counter()
    # The user's workflow checks the ~1 MP SmartResize output: the same function makes it here
    # and in the workflow's SmartResizeForModel node, so the checks see the same pixels.
    work = working_copy(rgb)

    def caption():
        if engines.caption is None:
            raise EngineUnavailableError("no caption engine (Florence-2) in this worker")
        return engines.caption.caption(work, safety.caption_task, num_beams=safety.num_beams,
                                       max_new_tokens=safety.max_new_tokens, do_sample=False)

    def nudity():
        if engines.nudenet is None:
            raise EngineUnavailableError("no NudeNet engine in this worker")
        return engines.nudenet.check(work, safety.nudenet_threshold)

    limit = safety.stage_timeout_s
    deadline = time.perf_counter() + limit  # caption and NudeNet run side by side: one deadline
    cap_f = _checks_pool.submit(caption)
    nn_f = _checks_pool.submit(nudity)
    caption_text = _attempt(cap_f, deadline, limit, "captioning")
    nn_result = _attempt(nn_f, deadline, limit, "NudeNet")
    timer.add("caption+nudenet", time.perf_counter() - t0)
    t1 = time.perf_counter()
    if isinstance(caption_text, BaseException):
        # No caption, nothing to classify: the classifier's verdict is missing, which blocks.
        cls_result = EngineUnavailableError(f"no caption to classify: captioning failed ({caption_text})")
    elif not isinstance(caption_text, str) or not caption_text.strip():
        cls_result = EngineUnavailableError("no caption to classify: the caption is empty")
    elif engines.classifier is None:
        cls_result = EngineUnavailableError("no LLM classifier in this worker")
    else:
        cls_result = _attempt(_checks_pool.submit(engines.classifier.classify, caption_text),
                              time.perf_counter() + limit, limit, "the LLM classifier")
    timer.add("classify", time.perf_counter() - t1)
    stalled = any(isinstance(r, StageTimeoutError) for r in (caption_text, nn_result, cls_result))
    verdict = decide(nn_result, cls_result, block_unsafe=safety.block_unsafe,
                     block_borderline=safety.block_borderline,
                     nudenet_overrides_llama=safety.nudenet_overrides_llama)
    return (caption_text if isinstance(caption_text, str) else None), verdict, stalled


def run_full(engines: Engines, images: list[np.ndarray], options: CutoutOptions,
             safety: SafetyOptions = SafetyOptions()) -> list[FullResult]:
    """Safety checks before release: only allowed images are cut out (as one batch)."""
    require_pipeline(engines, "full")
    results = []
    for rgb in images:
        timer = StageTimer()
        caption, verdict, stalled = check_image(engines, rgb, safety, timer)
        results.append(FullResult(verdict=verdict, caption=caption, cutout=None, timings=timer, stalled=stalled))
    allowed = [i for i, r in enumerate(results) if r.verdict.allowed]
    if allowed:
        cutouts = engines.require_cutout().cut_out([images[i] for i in allowed], options)
        for i, cut in zip(allowed, cutouts):
            results[i].cutout = cut
            results[i].timings.merge(cut.timings)
    return results
