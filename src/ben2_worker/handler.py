"""The RunPod serverless entry point.

    python -m ben2_worker.handler                    # on RunPod (or: the SDK's one-shot test_input.json run)
    python -m ben2_worker.handler --rp_serve_api     # the SDK's local API; see `ben2-worker serve`

Models are loaded once, in :func:`start`, before the SDK takes the first job. Which pipelines
must be served is ``BEN2_WORKER_PIPELINES``: a named pipeline whose models are missing or
corrupt stops the worker here, with the file and the fix, instead of failing every job."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time

from .config import Settings
from .engines import Engines, load_cutout_engine
from .errors import Ben2WorkerError, GpuUnavailableError
from .pipelines import parse_pipelines, served_pipelines

log = logging.getLogger("ben2_worker")

_processor = None
STARTED_AT = time.perf_counter()


def build_engines(settings: Settings | None = None, pipelines: str | None = None) -> Engines:
    """Load what the configured pipelines need; raise (naming the file) if a required one can't be.

    With ``BEN2_WORKER_PIPELINES`` unset, every pipeline whose models are present is served;
    a ``simple`` worker never loads (or imports) the safety stack."""
    settings = settings or Settings.from_env()
    required = parse_pipelines(pipelines if pipelines is not None else os.environ.get("BEN2_WORKER_PIPELINES"))
    engines = Engines(settings=settings)
    try:
        engines.cutout = load_cutout_engine(settings)
    except Ben2WorkerError as exc:
        if required or isinstance(exc, GpuUnavailableError):  # every pipeline needs BEN2; a GPU worker its GPU
            raise
        log.warning("BEN2 not loaded, no pipeline can be served: %s", exc)
    want_full = required is not None and "full" in required
    if want_full or (required is None and _safety_models_present(settings)):
        try:
            load_safety_engines(engines)
        except Ben2WorkerError as exc:
            if want_full:
                raise
            log.warning("full pipeline not served: %s", exc)
            engines.caption = engines.nudenet = engines.classifier = None
    served = served_pipelines(engines)
    log.info("serving pipelines: %s (models in %s)", ", ".join(served) or "none", settings.models_dir)
    return engines


def _safety_models_present(settings: Settings) -> bool:
    from .models.store import ModelStore

    store = ModelStore(settings.models_dir)
    return all(store.path(name).exists() for name in ("florence2", "nudenet", "llama"))


def load_safety_engines(engines: Engines) -> None:
    """Florence-2, NudeNet and the LLM classifier, each loaded once; any failure raises."""
    from .runtime import thread_count
    from .safety.caption import Captioner
    from .safety.classifier import SafetyClassifier
    from .safety.nudity import NudityDetector

    settings = engines.settings
    engines.nudenet = NudityDetector.from_store(settings)
    engines.caption = Captioner.from_store(settings)
    import torch

    torch.set_num_threads(thread_count(settings.threads))  # torch's pool is global: size it to the quota
    engines.classifier = SafetyClassifier.from_store(settings)


def start_processor(engines: Engines | None = None):
    """Build the job processor once (engines, workflow runner, delivery)."""
    global _processor
    from .api.jobs import JobProcessor, runpod_progress

    _processor = JobProcessor(engines or build_engines(), progress=runpod_progress)
    return _processor


def handler(job: dict) -> dict:
    """RunPod handler: worker-comfyui requests (``workflow`` + ``images``) or the simple task API."""
    if _processor is None:
        start_processor()
    return _processor(job)


def _cpu_brand() -> dict:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return {"brand_raw": line.split(":", 1)[1].strip()}
    except OSError:
        pass
    import platform

    return {"brand_raw": platform.processor() or "unknown"}


def _import_runpod() -> None:
    """Import the SDK with a quick stand-in for ``cpuinfo``.

    The SDK's debugger module calls ``cpuinfo.get_cpu_info()`` at import time only to print the
    CPU's name; that probe runs a subprocess and costs ~1.1 s of every cold start. The stand-in
    reads the same name from /proc/cpuinfo; the real module is restored for anyone else."""
    import sys
    import types

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
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")  # the SDK logs whole outputs at DEBUG
    thread = threading.Thread(target=_import_runpod, name="import-runpod", daemon=True)
    thread.start()
    return thread


def start() -> None:
    """Load models, then hand the handler to the runpod SDK (which reads its own --rp_* flags)."""
    logging.basicConfig(level=os.environ.get("BEN2_WORKER_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    importing = preload_runpod()
    try:
        start_processor()
    except (Ben2WorkerError, ValueError) as exc:
        log.error("worker cannot start: %s", exc)
        raise SystemExit(f"ben2-worker cannot start: {exc}") from None
    importing.join()
    log.info("worker ready %.2f s after process start", time.perf_counter() - STARTED_AT)
    import runpod

    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    start()
