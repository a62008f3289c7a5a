"""The BEN2 matting model behind onnxruntime, loaded once and shared.

It knows nothing about files, requests or compositing: tensors in, mattes out. Input and output
names, the batch axis and the output dtype are read from the session, because the published
``BEN2_Base.onnx`` has a fixed batch of 1 and a float16 output while re-exports differ."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .runtime import MODEL_VARIANTS, create_session, default_cache_dir, resolve_providers, usable_cache_dir

log = logging.getLogger(__name__)

MODEL_SIZE = 1024
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class ModelInfo:
    input_name: str
    output_name: str
    batch: int | None  # None: dynamic batch axis
    height: int
    width: int
    output_dtype: str
    providers: tuple[str, ...]


def to_model_input(rgb_square: np.ndarray, scaling: str = "unit") -> np.ndarray:
    """(S,S,3) uint8 RGB at model size -> (3,S,S) float32 as the model expects.

    ``unit`` is BEN2's ONNX example and the user's node (x/255); ``imagenet`` adds BEN2's
    PyTorch mean/std. Which one the published ONNX weights want is an open question: see
    ``ben2-worker compare-scaling``."""
    x = rgb_square.astype(np.float32) * np.float32(1 / 255)
    if scaling == "imagenet":
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    elif scaling != "unit":
        raise ValueError(f"unknown input scaling {scaling!r} (expected 'unit' or 'imagenet')")
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class Ben2Model:
    """One onnxruntime session for BEN2; ``predict`` is safe to call from several threads.

    ``variant="int8"`` runs a dynamically quantised copy of the model (built once into the
    cache; opt-in, see runtime). ``cache`` is where derived files go: True for the default
    place beside the model (runtime.default_cache_dir), a folder, or False for none (every
    start then runs the graph optimiser)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: str = "auto",
        threads: int | None = None,
        variant: str = "fp32",
        cache: bool | Path = True,
        graph_level: str = "all",
        cpu_arena: bool = True,
    ):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(
                f"BEN2 model not found at {path}; run `ben2-worker models download ben2` "
                "or point BEN2_WORKER_MODELS at the folder holding ben2_onnx/BEN2_Base.onnx"
            )
        if variant not in MODEL_VARIANTS:
            raise ValueError(f"BEN2 variant must be one of {', '.join(MODEL_VARIANTS)}, got {variant!r}")
        chosen = resolve_providers(providers)
        cache_dir = default_cache_dir(path) if cache is True else (usable_cache_dir(Path(cache)) if cache else None)
        try:
            self.session, self.load = create_session(
                path, providers=chosen, threads=threads, cache_dir=cache_dir, variant=variant,
                graph_level=graph_level, cpu_arena=cpu_arena,
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"could not load BEN2 model {path} ({variant}): {exc}") from exc
        self.path = path
        self.info = self._read_info()
        self._lock = threading.Lock()
        log.info(
            "BEN2 %s loaded from %s in %.2f s%s (input %s, batch %s, output %s %s) on %s",
            variant, path, self.load.seconds, " (optimised graph from cache)" if self.load.optimized_from_cache else "",
            self.info.input_name, self.info.batch or "dynamic", self.info.output_name,
            self.info.output_dtype, ", ".join(self.info.providers),
        )

    def _read_info(self) -> ModelInfo:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{self.path}: expected 1 input and at least 1 output, got {len(inputs)}/{len(outputs)}")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1] not in (3, None) or isinstance(shape[1], str):
            raise ModelError(f"{self.path}: expected an NCHW RGB input, got shape {shape}")
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        height = shape[2] if isinstance(shape[2], int) else MODEL_SIZE
        width = shape[3] if isinstance(shape[3], int) else MODEL_SIZE
        return ModelInfo(
            input_name=inputs[0].name,
            output_name=outputs[0].name,
            batch=batch,
            height=height,
            width=width,
            output_dtype=outputs[0].type,
            providers=tuple(self.session.get_providers()),
        )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) the model wants."""
        return self.info.width, self.info.height

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N,3,H,W) float32 -> (N,H,W) float32 raw mattes.

        A model with a dynamic batch axis gets the whole batch in one run; a fixed-batch model
        is run once per ``info.batch`` images."""
        if batch.ndim != 4:
            raise ValueError(f"expected (N,3,H,W), got {batch.shape}")
        step = self.info.batch or len(batch)
        outs = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step], dtype=np.float32)
            # onnxruntime's run() is thread-safe, but concurrent runs on one CPU quota only
            # thrash the cache; serialising keeps latency predictable.
            with self._lock:
                out = self.session.run([self.info.output_name], {self.info.input_name: chunk})[0]
            out = np.asarray(out, dtype=np.float32)
            outs.append(out.reshape(len(chunk), out.shape[-2], out.shape[-1]))
        return np.concatenate(outs, axis=0)
