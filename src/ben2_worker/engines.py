"""The engine factory: the one place that turns settings plus a list of model folders into
loaded, checked engines. The RunPod handler, the CLI, the workflow runner and the ComfyUI pack
(which passes ComfyUI's folders, see comfy_nodes/paths.py) all build their engines here, so
every door finds the same files, checks them against the same pins and refuses a broken
install the same way."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import Ben2WorkerError, EngineUnavailableError, GpuUnavailableError, ModelCorruptError, ModelError, ModelMissingError
from .models.locate import ModelFolders, wheel_file
from .models.store import ModelStore, load_manifest, sha256_file
from .runtime import require_gpu_providers, thread_count, warm_up

if TYPE_CHECKING:
    from .cutout import CutoutEngine
    from .safety.caption import Captioner
    from .safety.classifier import SafetyClassifier
    from .safety.nudity import NudityDetector

log = logging.getLogger(__name__)

#: The models the full pipeline needs besides BEN2.
SAFETY_MODELS = ("florence2", "nudenet", "llama")


@dataclass
class Engines:
    """The loaded engines a process serves with, built once at start and injected into the
    handler, the workflow runner and the nodes. ``None`` means "not available here": nodes
    and pipelines that need it fail with a clear error, never with a fake result."""

    cutout: CutoutEngine | None = None
    caption: Captioner | None = None
    nudenet: NudityDetector | None = None
    classifier: SafetyClassifier | None = None
    settings: Settings = field(default_factory=Settings)

    def require_cutout(self) -> CutoutEngine:
        if self.cutout is None:
            raise EngineUnavailableError(
                "the BEN2 cut-out engine is not loaded in this worker "
                "(its model is missing: run `ben2-worker models download ben2`)"
            )
        return self.cutout


# ----------------------------------------------------------------------------- model files


def model_path(name: str, settings: Settings, models_dir: Path | None = None) -> Path:
    """Path of a model that passed the store's checks (checksums verified, stamped).

    A file that differs from its pin is refused, unless the operator set
    ``BEN2_WORKER_ALLOW_CUSTOM_MODELS=1`` for their own re-export (or a test stand-in): then
    whatever is at the model's path is used, with a warning. Nothing there is always refused.
    NudeNet is never swapped: its model ships in its wheel, and a damaged detector that loads
    would release what it should block."""
    store = ModelStore(models_dir or settings.models_dir, hub=settings.hub)
    try:
        return store.require(name, full_check=True)
    except ModelError as exc:
        path = store.path(name)
        if not settings.allow_custom_models or name == "nudenet" or not path.exists():
            if isinstance(exc, ModelCorruptError) and name != "nudenet":
                raise ModelCorruptError(
                    f"{exc} (to run a model of your own on purpose, set BEN2_WORKER_ALLOW_CUSTOM_MODELS=1)"
                ) from exc
            raise
        log.warning("using custom %s model %s: it does not match the manifest (%s); "
                    "BEN2_WORKER_ALLOW_CUSTOM_MODELS=1", name, path, exc)
        return path


def _store_root(path: Path, primary: str, folders: ModelFolders) -> Path | None:
    """The models root ``R`` with ``R / primary == path`` when the file sits at its manifest
    place inside one of ``folders`` (so the store's stamp lands in a models folder, never in,
    say, site-packages for NudeNet's wheel model)."""
    parts = Path(primary).parts
    if len(path.parts) <= len(parts) or tuple(path.parts[-len(parts):]) != parts:
        return None
    root = path.parents[len(parts) - 1]
    registered = {Path(os.path.abspath(d)) for d in folders.dirs(parts[0])}
    return root if Path(os.path.abspath(root / parts[0])) in registered else None


_checked: dict[tuple, Path] = {}
_checked_lock = threading.Lock()


def checked_model(name: str, path: Path, settings: Settings, folders: ModelFolders) -> Path:
    """``path`` (a file or, for Florence-2, a folder) after the pinned-checksum check of manifest
    model ``name``: through the store when it sits at its manifest place in ``folders``, else
    its one file hashed here. A file that differs from its pin is refused unless
    ``settings.allow_custom_models`` (never for NudeNet). A file hashed here is remembered by its
    stamp (path, size, mtime)."""
    spec = load_manifest()[name]
    root = _store_root(path, spec.primary, folders)
    if root is not None:  # the store: checksums verified once, then a stat per file (its stamps)
        return model_path(name, settings, root)
    custom_allowed = settings.allow_custom_models and name != "nudenet"
    st = path.stat()
    key = (name, str(path), st.st_size, st.st_mtime_ns, custom_allowed)
    with _checked_lock:
        if key in _checked:
            return _checked[key]
        if len(spec.files) == 1 and spec.files[0].sha256:
            pinned = spec.files[0].sha256
            actual = sha256_file(path)
            if actual != pinned:
                if not custom_allowed:
                    raise ModelCorruptError(
                        f"{path} is not the pinned {name} model (sha256 {actual}, expected {pinned}); "
                        + ("NudeNet's detector is never swapped (a damaged one would release what it should block)"
                           if name == "nudenet" else
                           "to run a model of your own on purpose, set BEN2_WORKER_ALLOW_CUSTOM_MODELS=1")
                    )
                log.warning("using custom %s model %s (sha256 %s, pinned %s): BEN2_WORKER_ALLOW_CUSTOM_MODELS=1",
                            name, path, actual, pinned)
            result = path
        elif custom_allowed:
            log.warning("using %s model %s outside its manifest place unverified: BEN2_WORKER_ALLOW_CUSTOM_MODELS=1", name, path)
            result = path
        else:
            raise ModelCorruptError(
                f"{path} cannot be checked against the pinned {name} model: place it as "
                f"{spec.primary.split('/', 1)[1]} in {folders.where(spec.primary.split('/')[0])}, or set "
                f"BEN2_WORKER_ALLOW_CUSTOM_MODELS=1 to run it unverified on purpose"
            )
        _checked[key] = Path(result)
        return Path(result)


def model_file(name: str, settings: Settings, folders: ModelFolders | None = None) -> Path:
    """Manifest model ``name`` found in ``folders`` (default: the settings' models folder) and checked.

    Inside ComfyUI, NudeNet may also be the model inside the installed nudenet wheel (the
    worker's images copy it into the models folder at build, where the store checks it)."""
    folders = folders or ModelFolders.under(settings.models_dir)
    spec = load_manifest()[name]
    path = folders.find(spec.primary)
    if path is None and name == "nudenet" and folders.in_comfyui:  # a pack install: the wheel's model
        path = wheel_file(spec.files[0].path_in_repo)
    if path is None:
        if not folders.in_comfyui:  # the store's message: expected checksum, the download command
            return model_path(name, settings, folders.root)
        folder, _, rest = spec.primary.partition("/")
        raise ModelMissingError(
            f"{spec.title} not found: put {rest} in {folders.where(folder)}"
            + (" (or install the nudenet package into ComfyUI's Python: its wheel ships the model)" if name == "nudenet"
               else f"; {folders.fix_hint(name)}")
        )
    return checked_model(name, path, settings, folders)


# ----------------------------------------------------------------------------- engines


def load_cutout_engine(settings: Settings, models_dir: Path | None = None, *, folders: ModelFolders | None = None,
                       providers: str | None = None) -> CutoutEngine:
    """BEN2 on ``providers`` (default: the settings')."""
    from .ben2 import Ben2Model
    from .cutout import CutoutEngine

    folders = folders or ModelFolders.under(models_dir or settings.models_dir)
    providers = providers or settings.providers
    session = settings.session
    model = Ben2Model(model_file("ben2", settings, folders), providers=providers, threads=settings.threads,
                      variant=session.ben2_variant, cache=session.cache, graph_level=session.graph_level,
                      cpu_arena=session.cpu_arena)
    engine = CutoutEngine(model, input_scaling=settings.input_scaling)
    # A GPU worker whose GPU provider failed to load refuses to start (never a silent CPU
    # fallback); on a GPU, one warm-up inference so the first job does not pay for it.
    if require_gpu_providers(providers, settings.device, model.info.providers):
        import numpy as np

        warm_up(lambda: engine.mattes([np.zeros((64, 64, 3), np.uint8)]))
    return engine


def load_nudity_engine(settings: Settings, folders: ModelFolders | None = None, *,
                       providers: str | None = None) -> NudityDetector:
    """NudeNet on the pinned model (never a custom one)."""
    from .safety.nudity import NudityDetector

    return NudityDetector(model_file("nudenet", settings, folders), providers=providers or settings.providers,
                          threads=settings.threads)


def load_caption_engine(settings: Settings, folders: ModelFolders | None = None, *, path: Path | None = None,
                        **options: Any) -> Captioner:
    """Florence-2 from the manifest's folder, or from ``path`` (a folder a node picked), checked either way."""
    from .safety.caption import Captioner

    folders = folders or ModelFolders.under(settings.models_dir)
    checked = model_file("florence2", settings, folders) if path is None else checked_model("florence2", Path(path), settings, folders)
    return Captioner(checked, **options)


def load_classifier_engine(settings: Settings, folders: ModelFolders | None = None, *, path: Path | None = None,
                           pinned: bool = True, **options: Any) -> SafetyClassifier:
    """The Llama GGUF classifier: the manifest's, or ``path`` (a file a node picked). ``pinned``:
    the safety classifier only runs the pinned, evaluated model (another GGUF needs
    BEN2_WORKER_ALLOW_CUSTOM_MODELS=1); the JSON extractor may run any GGUF."""
    from .safety.classifier import SafetyClassifier

    folders = folders or ModelFolders.under(settings.models_dir)
    if path is None:
        path = model_file("llama", settings, folders)
    elif pinned:
        path = checked_model("llama", Path(path), settings, folders)
    options.setdefault("threads", settings.threads)
    return SafetyClassifier(Path(path), **options)


def safety_models_present(settings: Settings) -> bool:
    store = ModelStore(settings.models_dir)
    return all(store.path(name).exists() for name in SAFETY_MODELS)


def load_safety_engines(engines: Engines) -> None:
    """Florence-2, NudeNet and the LLM classifier, each loaded once; any failure raises."""
    settings = engines.settings
    engines.nudenet = load_nudity_engine(settings)
    engines.caption = load_caption_engine(settings)
    import torch  # the classifier's process-wide thread pool

    torch.set_num_threads(thread_count(settings.threads))  # torch's pool is global: size it to the quota
    engines.classifier = load_classifier_engine(settings)


def build_engines(settings: Settings, pipelines: tuple[str, ...] | None = None) -> Engines:
    """Load what the pipelines need (default: ``settings.pipelines``); raise, naming the file, if
    a required one can't be. With no pipelines named, every pipeline whose models are present is
    served; a ``simple`` worker never loads (or imports) the safety stack."""
    required = settings.pipelines if pipelines is None else pipelines
    engines = Engines(settings=settings)
    try:
        engines.cutout = load_cutout_engine(settings)
    except Ben2WorkerError as exc:
        if required or isinstance(exc, GpuUnavailableError):  # every pipeline needs BEN2; a GPU worker its GPU
            raise
        log.warning("BEN2 not loaded, no pipeline can be served: %s", exc)
    want_full = required is not None and "full" in required
    if want_full or (required is None and safety_models_present(settings)):
        try:
            load_safety_engines(engines)
        except Ben2WorkerError as exc:
            if want_full:
                raise
            log.warning("full pipeline not served: %s", exc)
            engines.caption = engines.nudenet = engines.classifier = None
    return engines
