"""Building engines from settings: the one place that turns a models folder into loaded models,
shared by the CLI and the worker so both refuse a broken install the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings
from .errors import EngineUnavailableError, ModelCorruptError, ModelError

if TYPE_CHECKING:
    from .cutout import CutoutEngine

log = logging.getLogger(__name__)


def model_path(name: str, settings: Settings, models_dir: Path | None = None) -> Path:
    """Path of a model that passed the store's checks (checksums verified, stamped).

    A file that differs from its pin is refused, unless the operator set
    ``BEN2_WORKER_ALLOW_CUSTOM_MODELS=1`` for their own re-export (or a test stand-in): then
    whatever is at the model's path is used, with a warning. Nothing there is always refused."""
    from .models.store import ModelStore

    store = ModelStore(models_dir or settings.models_dir)
    try:
        return store.require(name, full_check=True)
    except ModelError as exc:
        path = store.path(name)
        if not settings.allow_custom_models or not path.exists():
            if isinstance(exc, ModelCorruptError):
                raise ModelCorruptError(
                    f"{exc} (to run a model of your own on purpose, set BEN2_WORKER_ALLOW_CUSTOM_MODELS=1)"
                ) from exc
            raise
        log.warning("using custom %s model %s: it does not match the manifest (%s); "
                    "BEN2_WORKER_ALLOW_CUSTOM_MODELS=1", name, path, exc)
        return path


def load_cutout_engine(settings: Settings, models_dir: Path | None = None):
    from .ben2 import Ben2Model
    from .cutout import CutoutEngine

    from .runtime import require_gpu_providers, warm_up

    path = model_path("ben2", settings, models_dir)
    model = Ben2Model(path, providers=settings.providers, threads=settings.threads)
    engine = CutoutEngine(model, input_scaling=settings.input_scaling)
    if require_gpu_providers(settings.providers, settings.device, model.info.providers):
        import numpy as np

        warm_up(lambda: engine.mattes([np.zeros((64, 64, 3), np.uint8)]))
    return engine


@dataclass
class Engines:
    """The loaded engines a process serves with, built once at start and injected into the
    handler, the workflow runner and the nodes. ``None`` means "not available here": nodes
    and pipelines that need it fail with a clear error, never with a fake result."""

    cutout: CutoutEngine | None = None
    caption: object | None = None  # Florence-2 (safety-stack milestone)
    nudenet: object | None = None  # NudeNet detector (safety-stack milestone)
    classifier: object | None = None  # LLM multi-domain classifier (safety-stack milestone)
    settings: Settings = field(default_factory=Settings)

    def require_cutout(self) -> CutoutEngine:
        if self.cutout is None:
            raise EngineUnavailableError(
                "the BEN2 cut-out engine is not loaded in this worker "
                "(its model is missing: run `ben2-worker models download ben2`)"
            )
        return self.cutout
