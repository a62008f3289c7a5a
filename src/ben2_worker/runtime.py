"""ONNX Runtime set-up shared by every engine: how many threads the container may really
use, and which execution providers to ask for.

Why: onnxruntime sizes its pools from the host's core count and pins threads to cores; in a
1-CPU container that oversubscribes the quota and, on some hosts, crashes with
``pthread_setaffinity_np`` errors. Setting the thread counts explicitly avoids both."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Short names accepted in configuration, in the order ``auto`` prefers them.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")

_warned: set[str] = set()


def _cgroup_cpu_limit(root: Path) -> float | None:
    """CPU quota in cores from cgroup v2 ``cpu.max`` or v1 ``cfs_quota/period``; None if unlimited."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: the smaller of its affinity mask and the cgroup quota, at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(cgroup_root)
    limit = affinity if quota is None else min(affinity, math.floor(quota) or 1)
    return max(1, limit)


def thread_count(override: int | None = None) -> int:
    """Intra-op threads for onnxruntime: an explicit override (capped at the CPUs we have), else all CPUs we may use."""
    cpus = available_cpus()
    return max(1, min(override, cpus)) if override else cpus


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def resolve_providers(requested: str | Iterable[str], available: Iterable[str] | None = None) -> list[str]:
    """Turn ``auto`` or ``"cuda,cpu"`` into onnxruntime provider names that exist here.

    A provider asked for by name but missing is logged once and skipped; CPU is always last,
    so a session can always be built."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    available = list(available)
    if isinstance(requested, str):
        names = [p.strip().lower() for p in requested.split(",") if p.strip()]
    else:
        names = [p.strip().lower() for p in requested]
    explicit = names and names != ["auto"]
    if not explicit:
        names = list(AUTO_ORDER)
    chosen: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name, name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        elif explicit:
            known = ", ".join(sorted(PROVIDER_ALIASES))
            if name not in PROVIDER_ALIASES and full not in PROVIDER_ALIASES.values():
                _warn_once(f"unknown execution provider {name!r} (known: {known}); ignoring it")
            else:
                _warn_once(
                    f"execution provider {name!r} ({full}) was requested but is not available "
                    f"(available: {', '.join(available)}); falling back"
                )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(threads: int | None = None):
    """Session options with explicit thread counts (see module docstring)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = thread_count(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a serverless CPU quota between requests for nothing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")


def gpu_required(requested: str | Iterable[str], device: str = "auto") -> bool:
    """Must this worker run on a GPU? Yes when the image was built for one (``device`` ``gpu``,
    ``BEN2_WORKER_DEVICE``) or the providers setting names a GPU provider without also naming
    ``cpu`` (naming ``cpu`` too is consent to fall back)."""
    if device == "gpu":
        return True
    names = [p.strip().lower() for p in (requested.split(",") if isinstance(requested, str) else requested) if p.strip()]
    full = {PROVIDER_ALIASES.get(n, n) for n in names}
    return bool(full & set(GPU_PROVIDERS)) and "CPUExecutionProvider" not in full


def require_gpu_providers(requested: str | Iterable[str], device: str, active: Iterable[str], *, what: str = "BEN2") -> bool:
    """Refuse to serve at CPU speed on a worker that must use a GPU; True when a GPU provider is active.

    ``active`` is what the built session really uses (``session.get_providers()``): onnxruntime
    silently drops a provider whose libraries fail to load, so asking for one proves nothing.
    Raises :class:`~ben2_worker.errors.GpuUnavailableError` naming the most likely cause."""
    from .errors import GpuUnavailableError

    active = list(active)
    on_gpu = any(p in GPU_PROVIDERS for p in active)
    if on_gpu or not gpu_required(requested, device):
        return on_gpu
    why = "BEN2_WORKER_DEVICE=gpu (the image is built for a GPU)" if device == "gpu" else f"BEN2_WORKER_PROVIDERS={requested}"
    raise GpuUnavailableError(
        f"{what} would run on {', '.join(active) or 'no provider'} but this worker must use a GPU ({why}): "
        f"{gpu_unavailable_cause()}. Fix the cause, or set BEN2_WORKER_DEVICE=auto (and no GPU-only "
        "BEN2_WORKER_PROVIDERS) to run on the CPU on purpose."
    )


def gpu_unavailable_cause(available: Iterable[str] | None = None, dev: Path = Path("/dev")) -> str:
    """Why onnxruntime cannot use a GPU here, as far as can be told without one."""
    import ctypes

    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    available = list(available)
    if not any(p in GPU_PROVIDERS for p in available):
        return (f"the installed onnxruntime has no GPU provider (available: {', '.join(available)}); "
                "install onnxruntime-gpu instead of onnxruntime")
    if not any(dev.glob("nvidia[0-9]*")):
        return f"no NVIDIA device is visible ({dev}/nvidia0 absent): the container has no GPU attached"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "the NVIDIA driver library libcuda.so.1 cannot be loaded (no driver mounted into the container)"
    return ("the CUDA provider failed to load: a CUDA 12 / cuDNN 9 library is missing or the driver is too old "
            "(onnxruntime's own error above names the file)")


def warm_up(run, what: str = "BEN2") -> float:
    """One inference at start on a GPU provider (kernels, cuDNN autotuning, TensorRT engines),
    so the first job neither discovers a broken provider nor pays for it. Returns seconds."""
    import time

    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    log.info("%s warm-up inference took %.2f s", what, seconds)
    return seconds
