"""Settings read once from the environment into a typed, immutable object.

Every knob has one name (``BEN2_WORKER_*``) and one default here, so the CLI, the RunPod
handler and the docs agree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_PIXELS = 50_000_000

#: ``unit``: RGB/255 with no mean/std (BEN2's own ONNX example and the user's node).
#: ``imagenet``: ImageNet mean/std, as BEN2's PyTorch reference. See docs/models.md.
INPUT_SCALINGS = ("unit", "imagenet")


def env_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A positive whole number from the environment (``1_000`` allowed), or ``default`` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        number = float(raw.replace("_", ""))  # "50000000.0" as some UIs write numbers
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {raw!r}")
    value = int(number)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    models_dir: Path = Path("models")
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Comma-separated preference list (``tensorrt,cuda,cpu``) or ``auto``.
    providers: str = "auto"
    input_scaling: str = "unit"
    #: Overrides the thread count derived from the container's CPU quota.
    threads: int | None = None
    #: Accept model files that differ from the pinned checksums (own re-exports, test stand-ins).
    allow_custom_models: bool = False
    #: Per-request budget (ben2_worker.budget, docs/reliability.md).
    max_job_pixels: int = 256_000_000
    max_outputs: int = 64
    max_output_pixels: int = 512_000_000
    max_output_bytes: int = 512 * 2**20
    max_nodes: int = 1000
    max_error_bytes: int = 16 * 1024
    max_jpeg_scans: int = 100
    #: ``gpu``: the image was built for a GPU; the worker refuses to start without one.
    device: str = "auto"
    #: Log request details (captions, full URLs, verdict texts): for debugging only.
    log_private: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        scaling = env.get("BEN2_WORKER_INPUT_SCALING", "unit").strip().lower() or "unit"
        if scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"BEN2_WORKER_INPUT_SCALING must be one of {', '.join(INPUT_SCALINGS)}, got {scaling!r}"
            )
        return cls(
            models_dir=Path(env.get("BEN2_WORKER_MODELS", "models")).expanduser(),
            max_pixels=env_int(env, "BEN2_WORKER_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            providers=env.get("BEN2_WORKER_PROVIDERS", "auto").strip() or "auto",
            input_scaling=scaling,
            threads=env_int(env, "BEN2_WORKER_THREADS", None),
            allow_custom_models=env.get("BEN2_WORKER_ALLOW_CUSTOM_MODELS", "").strip().lower() in ("1", "true", "yes"),
            max_job_pixels=env_int(env, "BEN2_WORKER_MAX_JOB_PIXELS", cls.max_job_pixels),
            max_outputs=env_int(env, "BEN2_WORKER_MAX_OUTPUTS", cls.max_outputs),
            max_output_pixels=env_int(env, "BEN2_WORKER_MAX_OUTPUT_PIXELS", cls.max_output_pixels),
            max_output_bytes=env_int(env, "BEN2_WORKER_MAX_OUTPUT_BYTES", cls.max_output_bytes),
            max_nodes=env_int(env, "BEN2_WORKER_MAX_NODES", cls.max_nodes),
            max_error_bytes=env_int(env, "BEN2_WORKER_MAX_ERROR_BYTES", cls.max_error_bytes),
            max_jpeg_scans=env_int(env, "BEN2_WORKER_MAX_JPEG_SCANS", cls.max_jpeg_scans),
            device=_choice(env, "BEN2_WORKER_DEVICE", ("auto", "gpu", "cpu")),
            log_private=env.get("BEN2_WORKER_LOG_PRIVATE", "").strip().lower() in ("1", "true", "yes"),
        )
