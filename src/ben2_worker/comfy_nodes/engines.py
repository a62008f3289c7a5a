"""The engines the pack's nodes run on, built by the worker's engine factory
(:mod:`ben2_worker.engines`) from ComfyUI's model folders, each lazily on first use and cached
for the life of the ComfyUI process, keyed by the model file's stamp (path, size, mtime) plus
the load options that change what gets loaded (BEN2's provider, Llama's n_ctx/n_gpu_layers,
Florence-2's precision/attention): a replaced model file is loaded again.

Optional engines import their library only when built; a missing library is an
:class:`EngineUnavailableError` saying what to install into ComfyUI's Python."""

from __future__ import annotations

import gc
import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from .. import engines as factory
from ..config import Settings
from ..engines import Engines
from ..errors import EngineUnavailableError
from . import paths

log = logging.getLogger("ben2_worker.comfy")

#: BEN2 node's ``provider`` widget -> our providers setting (CPU always last: a missing provider
#: is a logged fallback, as in the worker).
PROVIDERS = {"CPU": "cpu", "CUDA": "cuda,cpu", "DirectML": "directml,cpu"}

#: Python module -> (what it is, how to install it into ComfyUI's Python).
INSTALL = {
    "llama_cpp": (
        "llama-cpp-python",
        "pip install llama-cpp-python==0.3.36 (it compiles; for NVIDIA GPUs: "
        "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install llama-cpp-python==0.3.36 --no-binary llama-cpp-python)",
    ),
    "transformers": ("transformers >= 4.56 (native Florence-2)", "pip install \"transformers>=4.56\""),
    "onnxruntime": ("onnxruntime", "pip install onnxruntime-gpu (NVIDIA) or onnxruntime (CPU), or the pack's requirements.txt"),
}

_lock = threading.RLock()
_cache: dict[tuple, Any] = {}
_settings: Settings | None = None


def settings() -> Settings:
    """The worker's settings from the environment (``BEN2_WORKER_*``), read once per process."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = Settings.from_env()
        return _settings


def configure(new: Settings | None) -> None:
    """Replace the settings (None: read the environment again) and drop every cached engine."""
    global _settings
    with _lock:
        _settings = new
    release_all()


def require(module: str, node: str, *, names: tuple[str, ...] = ()) -> Any:
    """Import ``module`` (and check it has ``names``), or say what to install."""
    what, how = INSTALL[module]
    try:
        mod = importlib.import_module(module)
        missing = [n for n in names if not hasattr(mod, n)]
    except ImportError as exc:
        raise EngineUnavailableError(
            f"{node} needs {what}, which is not installed in ComfyUI's Python ({exc}). Install it: {how}; "
            f"then restart ComfyUI"
        ) from exc
    if missing:
        version = getattr(mod, "__version__", "?")
        raise EngineUnavailableError(
            f"{node} needs {what}; the installed {module} {version} has no {', '.join(missing)}. Install it: {how}; "
            f"then restart ComfyUI"
        )
    return mod


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    with _lock:  # one load at a time; ComfyUI runs one prompt at a time anyway
        engine = _cache.get(key)
        if engine is None:
            engine = build()
            _cache[key] = engine
        return engine


def release_all() -> int:
    """Drop every cached engine (FreeVRAMInline with unload_models); returns how many."""
    with _lock:
        engines = list(_cache.values())
        _cache.clear()
    for engine in engines:
        close = getattr(engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - releasing must not fail the node
                log.exception("closing %r failed", engine)
    count = len(engines)
    del engines
    gc.collect()
    return count


def cached_count() -> int:
    with _lock:
        return len(_cache)


# ----------------------------------------------------------------------------- builders
# Each builder finds its file with ComfyUI's folders, then hands the building to the worker's
# engine factory (ben2_worker.engines); what stays here is ComfyUI's per-process cache, keyed on
# the model file's stamp so a replaced file is loaded again (and IS_CHANGED can use the stamp).


def model_stamp(path: Path) -> tuple:
    """``(path, size, mtime_ns)``: what identifies a loaded model file (a folder: its newest file)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return str(path), sum(p.stat().st_size for p in files), max((p.stat().st_mtime_ns for p in files), default=0)
    return _stamp(path)


def _folders():
    return paths.model_folders(settings())


def cutout(provider: str):
    """BEN2 on the provider the node's widget asks for (``CPU``/``CUDA``/``DirectML``)."""
    require("onnxruntime", "BEN2_ONNX_RemoveBg")
    s, folders = settings(), _folders()
    path = factory.model_file("ben2", s, folders)
    providers = PROVIDERS.get(str(provider), "auto")
    return _cached(("cutout", *_stamp(path), providers),
                   lambda: factory.load_cutout_engine(s, folders=folders, providers=providers))


def nudenet_providers(s: Settings) -> str:
    """BEN2_WORKER_PROVIDERS when set; else CUDA when this onnxruntime has it, else CPU (not the
    worker's ``auto``, which tries TensorRT first: noisy in a ComfyUI without TensorRT)."""
    if s.providers != "auto":
        return s.providers
    ort = require("onnxruntime", "NudeNetSafetyChecker")
    return "cuda,cpu" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


def nudenet():
    require("onnxruntime", "NudeNetSafetyChecker")
    s, folders = settings(), _folders()
    path = factory.model_file("nudenet", s, folders)
    providers = nudenet_providers(s)
    return _cached(("nudenet", *_stamp(path), providers),
                   lambda: factory.load_nudity_engine(s, folders, providers=providers))


def classifier(model_path: str, n_ctx: int, n_gpu_layers: int, *, node: str, pinned: bool):
    """The Llama GGUF the widget names (by file name). ``pinned``: the safety classifier only
    runs the pinned, evaluated model (another GGUF needs BEN2_WORKER_ALLOW_CUSTOM_MODELS=1)."""
    require("llama_cpp", node)
    s, folders = settings(), _folders()
    path = folders.gguf(model_path)
    if pinned:
        path = factory.checked_model("llama", path, s, folders)
    return _cached(("classifier", *_stamp(path), int(n_ctx), int(n_gpu_layers)),
                   lambda: factory.load_classifier_engine(s, folders, path=path, pinned=False, n_ctx=int(n_ctx),
                                                          n_gpu_layers=int(n_gpu_layers)))


def require_florence(node: str = "Florence2ModelLoader") -> None:
    require("transformers", node, names=("Florence2ForConditionalGeneration", "Florence2Processor"))


def captioner(folder: Path, precision: str, attention: str):
    require_florence()
    s, folders = settings(), _folders()
    checked = factory.checked_model("florence2", Path(folder), s, folders)
    return _cached(("caption", *model_stamp(checked), precision, attention),
                   lambda: factory.load_caption_engine(s, folders, path=checked, device="auto", dtype=precision,
                                                       attention=attention))


def engines_with(**parts: Any) -> Engines:
    """An ``Engines`` container holding ``parts``, for the worker's node executors."""
    return Engines(settings=settings(), **parts)
