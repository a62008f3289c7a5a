"""The RunPod serverless entry point.

    python -m ben2_worker.handler                    # on RunPod (or: the SDK's one-shot test_input.json run)
    python -m ben2_worker.handler --rp_serve_api     # the SDK's local API; see `ben2-worker serve`

Settings are read and models loaded once, in :func:`start`, before the SDK takes the first
job. A bad setting (ConfigError, naming the variable) or a pipeline named in
``BEN2_WORKER_PIPELINES`` whose models are missing or corrupt stops the worker here, with the
fix, instead of failing every job."""

from __future__ import annotations

import functools
import importlib
import logging
import platform
import sys
import threading
import time
import types

from .config import Settings, quiet_runpod_sdk
from .engines import Engines, build_engines
from .errors import Ben2WorkerError, ConfigError
from .pipelines import served_pipelines

log = logging.getLogger("ben2_worker")

_processor = None
_jobs = None  # api.concurrent.ConcurrentJobs over _processor: the async handler's job slots
STARTED_AT = time.perf_counter()


def load_engines(settings: Settings) -> Engines:
    """The engines ``settings.pipelines`` need (see :func:`ben2_worker.engines.build_engines`)."""
    engines = build_engines(settings)
    served = served_pipelines(engines)
    log.info("serving pipelines: %s (models in %s)", ", ".join(served) or "none", settings.models_dir)
    return engines


def start_processor(engines: Engines | None = None, settings: Settings | None = None):
    """Build the job processor once (settings, engines, workflow runner, delivery). A bad
    setting raises ConfigError here, at start, never in a job."""
    global _processor, _jobs
    from .api.concurrent import ConcurrentJobs, default_concurrency
    from .api.jobs import JobProcessor, runpod_progress

    if engines is None:
        engines = load_engines(settings or Settings.from_env())
    on_platform = engines.settings.runpod.on_platform
    providers = engines.cutout.model.info.providers if engines.cutout is not None else ()
    concurrency = default_concurrency(engines.settings.concurrency, providers)
    _processor = JobProcessor(engines, progress=functools.partial(runpod_progress, on_platform=on_platform),
                              max_jobs=concurrency)
    _jobs = ConcurrentJobs(_processor, concurrency)
    log.info("taking up to %d job(s) at once", concurrency)
    return _processor


def handler(job: dict) -> dict:
    """RunPod handler: worker-comfyui requests (``workflow`` + ``images``) or the simple task API."""
    if _processor is None:
        start_processor()
    return _processor(job)


async def async_handler(job: dict) -> dict:
    """The handler the SDK gets: the same jobs, run in a thread each (api/concurrent.py), so
    several can be in flight on one worker (``concurrency_modifier``)."""
    if _jobs is None:
        start_processor()
    return await _jobs(job)


def concurrency_modifier(current: int) -> int:
    """RunPod's ``concurrency_modifier``: the configured (or default) number of jobs at once."""
    if _jobs is None:
        start_processor()
    return _jobs.modifier(current)


def _cpu_brand() -> dict:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return {"brand_raw": line.split(":", 1)[1].strip()}
    except OSError:
        pass
    return {"brand_raw": platform.processor() or "unknown"}


def _import_runpod() -> None:
    """Import the SDK with a quick stand-in for ``cpuinfo``.

    The SDK's debugger module calls ``cpuinfo.get_cpu_info()`` at import time only to print the
    CPU's name; that probe runs a subprocess and costs ~1.1 s of every cold start. The stand-in
    reads the same name from /proc/cpuinfo; the real module is restored for anyone else."""
    if "runpod" in sys.modules:
        return
    saved = sys.modules.get("cpuinfo")
    shim = types.ModuleType("cpuinfo")
    shim.get_cpu_info = _cpu_brand
    sys.modules["cpuinfo"] = shim
    try:
        importlib.import_module("runpod")
    finally:
        if saved is not None:
            sys.modules["cpuinfo"] = saved
        else:
            sys.modules.pop("cpuinfo", None)


def preload_runpod() -> threading.Thread:
    """Import the runpod SDK in the background while the models load (see _import_runpod)."""
    quiet_runpod_sdk()  # the SDK logs whole outputs at DEBUG
    thread = threading.Thread(target=_import_runpod, name="import-runpod", daemon=True)
    thread.start()
    return thread


def start() -> None:
    """Load models, then hand the handler to the runpod SDK (which reads its own --rp_* flags)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"ben2-worker cannot start: {exc}") from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    importing = preload_runpod()
    try:
        start_processor(settings=settings)
    except Ben2WorkerError as exc:
        log.error("worker cannot start: %s", exc)
        raise SystemExit(f"ben2-worker cannot start: {exc}") from None
    importing.join()
    log.info("worker ready %.2f s after process start", time.perf_counter() - STARTED_AT)
    import runpod

    runpod.serverless.start({"handler": async_handler, "concurrency_modifier": concurrency_modifier})


if __name__ == "__main__":
    start()
