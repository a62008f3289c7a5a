"""The worker's settings, read from the environment once, into typed, immutable objects.

This is the only module that reads (or writes) environment variables. Every other module takes
a :class:`Settings` (or one of its branches) from its caller, so a job never parses a variable
and a bad value stops the process at start with a :class:`~ben2_worker.errors.ConfigError`
naming the variable, the value and what is allowed. docs/configuration.md lists every variable
read here (a test compares that table with :data:`VARIABLES`).

One parser per type (whole number, seconds, yes/no, choice, text, path list) and one yes/no
dialect: ``1``/``true``/``yes``/``on`` and ``0``/``false``/``no``/``off`` (any case)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .models.download import DEFAULT_ENDPOINT, DEFAULT_HUB_TIMEOUT
from .models.manifest import PIPELINES

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_JOB_TIMEOUT_S = 300.0
DEFAULT_SAFETY_TIMEOUT_S = 120.0
DEFAULT_PUT_TIMEOUT_S = 120.0
DEFAULT_URL_MAX_BYTES = 50 * 2**20
DEFAULT_URL_TIMEOUT_S = 20.0
DEFAULT_HUB_ENDPOINT = DEFAULT_ENDPOINT
DEFAULT_HUB_TIMEOUT_S = DEFAULT_HUB_TIMEOUT
DEFAULT_MAX_JOB_PIXELS = 256_000_000
DEFAULT_MAX_OUTPUTS = 64
DEFAULT_MAX_OUTPUT_PIXELS = 512_000_000
DEFAULT_MAX_OUTPUT_BYTES = 512 * 2**20
DEFAULT_MAX_NODES = 1000
DEFAULT_MAX_ERROR_BYTES = 16 * 1024
#: Scans in one JPEG. Encoders write 1 (baseline) or about 10 (progressive); each extra scan makes
#: the decoder walk the whole image again, so 2,000 tiny scans in an 80 KB file cost ~7 s per 9 MP.
DEFAULT_MAX_JPEG_SCANS = 100
#: The self-hosted service (``ben2-worker serve``, docs/service.md).
DEFAULT_SERVICE_HOST = "127.0.0.1"
DEFAULT_SERVICE_PORT = 8000
DEFAULT_SERVICE_RATE_PER_MINUTE = 120
DEFAULT_SERVICE_BURST = 20
#: RunPod's payload limits (/run 10 MB, /runsync 20 MB; docs/api.md), kept so a request that
#: works here also fits the platform.
DEFAULT_RUN_BODY_LIMIT = 10 * 10**6
DEFAULT_RUNSYNC_BODY_LIMIT = 20 * 10**6
#: remove.bg-style uploads (multipart or base64 JSON): our own choice, see docs/service.md.
DEFAULT_REMOVEBG_BODY_LIMIT = 25 * 2**20
DEFAULT_RESULT_TTL_S = 1800.0
#: Shortest API key or webhook secret accepted: a guessable one on a network is none at all.
MIN_SECRET_CHARS = 16

#: ``unit``: RGB/255 with no mean/std (BEN2's own ONNX example and the user's node).
#: ``imagenet``: ImageNet mean/std, as BEN2's PyTorch reference. See docs/models.md.
INPUT_SCALINGS = ("unit", "imagenet")
#: onnxruntime graph optimisation levels and BEN2 file variants (``fp32``: the file as published),
#: declared here so the image's fetcher stage, which copies config.py without runtime.py, can parse them.
GRAPH_LEVELS = ("disable", "basic", "extended", "all")
MODEL_VARIANTS = ("fp32", "int8")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: ``BEN2_COMFY_COMPAT_NODES``: register the pack's stand-ins for third-party nodes.
COMPAT_MODES = ("auto", "always", "never")
#: ``BEN2_WORKER_DEVICE``: ``gpu`` (the image is built for one) refuses to start without a GPU.
DEVICES = ("auto", "gpu", "cpu")

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")

#: Every variable this module reads, in the order of docs/configuration.md's table.
VARIABLES = (
    "BEN2_WORKER_MODELS", "BEN2_WORKER_PIPELINES", "BEN2_WORKER_PROVIDERS", "BEN2_WORKER_THREADS",
    "BEN2_WORKER_INPUT_SCALING", "BEN2_WORKER_ALLOW_CUSTOM_MODELS", "BEN2_WORKER_BEN2_VARIANT",
    "BEN2_WORKER_ORT_CACHE", "BEN2_WORKER_GRAPH_LEVEL", "BEN2_WORKER_CPU_ARENA", "BEN2_WORKER_MAX_PIXELS",
    "BEN2_WORKER_DEVICE", "BEN2_WORKER_MAX_JOB_PIXELS", "BEN2_WORKER_MAX_JPEG_SCANS",
    "BEN2_WORKER_MAX_OUTPUTS", "BEN2_WORKER_MAX_OUTPUT_PIXELS", "BEN2_WORKER_MAX_OUTPUT_BYTES",
    "BEN2_WORKER_MAX_NODES", "BEN2_WORKER_MAX_ERROR_BYTES", "BEN2_WORKER_CONCURRENCY",
    "BEN2_WORKER_JOB_TIMEOUT", "BEN2_WORKER_SAFETY_TIMEOUT", "BEN2_WORKER_LOG_LEVEL", "BEN2_WORKER_LOG_PRIVATE",
    "BEN2_WORKER_WORKFLOWS", "BEN2_WORKER_URL_MAX_BYTES", "BEN2_WORKER_URL_TIMEOUT",
    "BEN2_WORKER_URL_ALLOW_HTTP", "BEN2_WORKER_URL_ALLOW_PRIVATE", "BEN2_WORKER_PUT_TIMEOUT",
    "BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "BUCKET_NAME",
    "BUCKET_REGION", "BEN2_COMFY_COMPAT_NODES", "HF_ENDPOINT", "HF_HUB_OFFLINE",
    "HF_HUB_ETAG_TIMEOUT", "RUNPOD_POD_ID", "RUNPOD_WEBHOOK_PING", "RUNPOD_LOG_LEVEL",
    "RUNPOD_API_KEY", "COLUMNS", "BEN2_SERVICE_HOST", "BEN2_SERVICE_PORT", "BEN2_SERVICE_KEYS_FILE",
    "BEN2_SERVICE_RATE_PER_MINUTE", "BEN2_SERVICE_BURST", "BEN2_SERVICE_RUN_MAX_BYTES",
    "BEN2_SERVICE_RUNSYNC_MAX_BYTES", "BEN2_SERVICE_REMOVEBG_MAX_BYTES", "BEN2_SERVICE_CONCURRENCY",
    "BEN2_SERVICE_QUEUE_LIMIT", "BEN2_SERVICE_RESULT_TTL", "BEN2_SERVICE_WEBHOOK_SECRET",
    "BEN2_SERVICE_ENDPOINT_ID",
)


# ----------------------------------------------------------------------------- parsers


def _raw(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _bad(name: str, raw: str, allowed: str) -> ConfigError:
    return ConfigError(f"{name}={raw!r} is not allowed: {allowed}", variable=name)


def parse_whole(env: Mapping[str, str], name: str, default: int | None, *, minimum: int = 1) -> int | None:
    """A whole number ≥ ``minimum`` (``1_000`` and ``50000000.0`` as some UIs write it)."""
    raw = _raw(env, name)
    if not raw:
        return default
    allowed = f"a whole number of at least {minimum}"
    try:
        number = float(raw.replace("_", ""))
    except ValueError:
        raise _bad(name, raw, allowed) from None
    if not number.is_integer() or number < minimum:
        raise _bad(name, raw, allowed)
    return int(number)


def parse_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive, finite number of seconds."""
    raw = _raw(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, raw, "a positive number of seconds") from None
    if not 0 < value < float("inf"):
        raise _bad(name, raw, "a positive number of seconds")
    return value


def parse_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """Yes/no in the one dialect: 1/true/yes/on or 0/false/no/off."""
    raw = _raw(env, name).lower()
    if not raw:
        return default
    if raw in _YES:
        return True
    if raw in _NO:
        return False
    raise _bad(name, raw, f"one of {'/'.join(_YES)} or {'/'.join(_NO)}")


def parse_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, *, upper: bool = False) -> str:
    raw = _raw(env, name)
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise _bad(name, raw, f"one of {', '.join(choices)}")
    return value


def parse_cache(env: Mapping[str, str], name: str) -> bool | Path:
    """``auto`` (or unset): True, the default place; ``off``: False, no cache; else a folder."""
    raw = _raw(env, name)
    if not raw or raw.lower() == "auto":
        return True
    if raw.lower() == "off":
        return False
    return Path(raw).expanduser()


def parse_list(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> tuple[str, ...] | None:
    """Comma-separated names out of ``choices`` (duplicates dropped); None when unset."""
    raw = _raw(env, name)
    if not raw:
        return None
    names = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    if not names or any(n not in choices for n in names):
        raise _bad(name, raw, f"a comma-separated list out of {', '.join(choices)}")
    return names


def parse_paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    """Paths separated by the OS path separator (``:``; ``;`` on Windows)."""
    return tuple(Path(p).expanduser() for p in _raw(env, name).split(os.pathsep) if p)


# ----------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class UrlSettings:
    """What URL inputs (and output PUT URLs) may be; see api/safe_http.py."""

    max_bytes: int = DEFAULT_URL_MAX_BYTES
    timeout_s: float = DEFAULT_URL_TIMEOUT_S
    allow_http: bool = False
    allow_private: bool = False


@dataclass(frozen=True)
class BudgetSettings:
    """What one request may make the worker do, beyond ``max_pixels`` per image; checked before
    the work (ben2_worker/budget.py, docs/reliability.md)."""

    #: Pixels all images of one job decode, together (counted from each header before decoding).
    max_job_pixels: int = DEFAULT_MAX_JOB_PIXELS
    #: Scans in one JPEG: each is another pass of the decoder over the whole image.
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_outputs: int = DEFAULT_MAX_OUTPUTS
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    #: Nodes in one workflow, checked before validation.
    max_nodes: int = DEFAULT_MAX_NODES
    #: Bytes of one error response (an error naming 10,000 nodes is cut, never megabytes).
    max_error_bytes: int = DEFAULT_MAX_ERROR_BYTES


@dataclass(frozen=True)
class S3Settings:
    """The operator's bucket, as given (api/delivery.py checks and splits the endpoint)."""

    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    bucket: str = ""
    region: str = ""


@dataclass(frozen=True)
class HubSettings:
    """The Hugging Face Hub as huggingface_hub itself reads it (HF_* variables)."""

    endpoint: str = DEFAULT_HUB_ENDPOINT
    offline: bool = False
    timeout_s: float = DEFAULT_HUB_TIMEOUT_S


@dataclass(frozen=True)
class RunpodSettings:
    """What the worker needs to know about the RunPod platform it may run on."""

    #: RUNPOD_POD_ID / RUNPOD_WEBHOOK_PING are set: progress updates reach the platform.
    on_platform: bool = False


@dataclass(frozen=True)
class SessionSettings:
    """How BEN2's onnxruntime session is built (runtime.create_session; docs/performance.md
    has the measurements behind the defaults)."""

    #: ``fp32`` (as published) or the opt-in ``int8`` dynamic quantisation.
    ben2_variant: str = "fp32"
    #: Optimised-graph cache: True beside the model (runtime.default_cache_dir), False none, or a folder.
    cache: bool | Path = True
    graph_level: str = "all"
    #: onnxruntime's CPU memory arena (off: lower idle RSS, slower runs).
    cpu_arena: bool = True


@dataclass(frozen=True)
class ApiKey:
    """One client's key for the service. ``name`` is what logs and metrics show; the key never is."""

    name: str
    key: str = field(repr=False)
    #: Requests per minute that start work (/run, /runsync, /v1.0/removebg); None: the default.
    rate_per_minute: float | None = None
    #: Requests that may arrive at once before the rate applies; None: the default.
    burst: int | None = None


def is_loopback_host(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServiceSettings:
    """The self-hosted service (``ben2-worker serve``; docs/service.md). Keys come from
    ``keys`` (Python callers) and the TOML ``keys_file`` (the service reads it when it starts:
    ``ben2_worker.service.keys``). Checked on construction, so settings that would expose an
    open box are refused before anything binds."""

    host: str = DEFAULT_SERVICE_HOST
    port: int = DEFAULT_SERVICE_PORT
    keys_file: Path | None = None
    keys: tuple[ApiKey, ...] = ()
    #: Default rate limit per key (or per client address when no keys are needed).
    rate_per_minute: float = float(DEFAULT_SERVICE_RATE_PER_MINUTE)
    burst: int = DEFAULT_SERVICE_BURST
    run_body_limit: int = DEFAULT_RUN_BODY_LIMIT
    runsync_body_limit: int = DEFAULT_RUNSYNC_BODY_LIMIT
    removebg_body_limit: int = DEFAULT_REMOVEBG_BODY_LIMIT
    #: Any other route (status, cancel, playground ...): small JSON at most.
    other_body_limit: int = 64 * 1024
    #: Jobs run at once (one model per process: 1 keeps a GPU's memory predictable).
    concurrency: int = 1
    #: Jobs waiting beyond this are refused with 429.
    queue_limit: int = 64
    #: How long /runsync waits before answering IN_QUEUE/IN_PROGRESS with an id (RunPod: 90 s).
    runsync_wait_s: float = 90.0
    #: Finished /run jobs are kept this long for /status (RunPod keeps /run results 30 min).
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    #: HMAC secret for completion callbacks; without one, requests with a webhook are refused.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 5
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0
    #: If set, /v2/{endpoint_id}/... answers only for this id.
    endpoint_id: str | None = None

    def __post_init__(self) -> None:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ConfigError("API key names must be unique", variable="BEN2_SERVICE_KEYS_FILE")
        for k in self.keys:
            if len(k.key) < MIN_SECRET_CHARS:
                raise ConfigError(f"API key {k.name!r} is shorter than {MIN_SECRET_CHARS} characters",
                                  variable="BEN2_SERVICE_KEYS_FILE")
        for name in ("rate_per_minute", "runsync_wait_s", "result_ttl_s", "webhook_backoff_s", "webhook_timeout_s"):
            value = getattr(self, name)
            if not (0 < value < float("inf")):
                raise ConfigError(f"service setting {name} must be a positive number, got {value!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"BEN2_SERVICE_PORT={self.port!r} is not allowed: a port from 1 to 65535",
                              variable="BEN2_SERVICE_PORT")
        for name in ("burst", "run_body_limit", "runsync_body_limit", "removebg_body_limit",
                     "other_body_limit", "concurrency", "queue_limit", "webhook_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"service setting {name} must be at least 1, got {getattr(self, name)!r}")
        if self.webhook_secret is not None and len(self.webhook_secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"the webhook secret must be at least {MIN_SECRET_CHARS} characters",
                              variable="BEN2_SERVICE_WEBHOOK_SECRET")
        if not self.loopback and not (self.keys or self.keys_file):
            raise ConfigError(
                f"refusing to serve on {self.host} without API keys: anything but loopback needs keys "
                "(BEN2_SERVICE_KEYS_FILE, see docs/service.md), or bind 127.0.0.1",
                variable="BEN2_SERVICE_HOST",
            )

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def keys_required(self) -> bool:
        """Keys are checked when any are configured, and always off loopback (then some must be)."""
        return bool(self.keys or self.keys_file) or not self.loopback


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
    #: Pipelines that must be served (start fails without their models); None: what is present.
    pipelines: tuple[str, ...] | None = None
    #: ``gpu``: the image was built for a GPU; the worker refuses to start without one.
    device: str = "auto"
    #: Jobs one RunPod worker takes at once (api/concurrent.py); None: 1 on CPU, a few on a GPU.
    concurrency: int | None = None
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    #: Seconds each safety check may take before it counts as failed (and so blocks).
    safety_timeout_s: float = DEFAULT_SAFETY_TIMEOUT_S
    put_timeout_s: float = DEFAULT_PUT_TIMEOUT_S
    log_level: str = "INFO"
    #: Log request details (sources, captions, verdict texts): for debugging only.
    log_private: bool = False
    #: Workflow folders or files the selfcheck runs (empty: ./workflows when present).
    workflows: tuple[Path, ...] = ()
    comfy_compat_nodes: str = "auto"
    #: Terminal width for tables printed to a non-terminal (build logs); None: 160.
    columns: int | None = None
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    urls: UrlSettings = field(default_factory=UrlSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    hub: HubSettings = field(default_factory=HubSettings)
    runpod: RunpodSettings = field(default_factory=RunpodSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Every setting from ``env`` (default: this process's environment); ConfigError on a bad value."""
        env = os.environ if env is None else env
        return cls(
            models_dir=Path(_raw(env, "BEN2_WORKER_MODELS") or "models").expanduser(),
            max_pixels=parse_whole(env, "BEN2_WORKER_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            providers=_raw(env, "BEN2_WORKER_PROVIDERS") or "auto",
            input_scaling=parse_choice(env, "BEN2_WORKER_INPUT_SCALING", INPUT_SCALINGS, "unit"),
            threads=parse_whole(env, "BEN2_WORKER_THREADS", None),
            allow_custom_models=parse_flag(env, "BEN2_WORKER_ALLOW_CUSTOM_MODELS"),
            pipelines=parse_list(env, "BEN2_WORKER_PIPELINES", PIPELINES),
            device=parse_choice(env, "BEN2_WORKER_DEVICE", DEVICES, "auto"),
            concurrency=parse_whole(env, "BEN2_WORKER_CONCURRENCY", None),
            job_timeout_s=parse_seconds(env, "BEN2_WORKER_JOB_TIMEOUT", DEFAULT_JOB_TIMEOUT_S),
            safety_timeout_s=parse_seconds(env, "BEN2_WORKER_SAFETY_TIMEOUT", DEFAULT_SAFETY_TIMEOUT_S),
            put_timeout_s=parse_seconds(env, "BEN2_WORKER_PUT_TIMEOUT", DEFAULT_PUT_TIMEOUT_S),
            log_level=parse_choice(env, "BEN2_WORKER_LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
            log_private=parse_flag(env, "BEN2_WORKER_LOG_PRIVATE"),
            workflows=parse_paths(env, "BEN2_WORKER_WORKFLOWS"),
            comfy_compat_nodes=parse_choice(env, "BEN2_COMFY_COMPAT_NODES", COMPAT_MODES, "auto"),
            columns=parse_whole(env, "COLUMNS", None),
            budget=BudgetSettings(
                max_job_pixels=parse_whole(env, "BEN2_WORKER_MAX_JOB_PIXELS", DEFAULT_MAX_JOB_PIXELS),
                max_jpeg_scans=parse_whole(env, "BEN2_WORKER_MAX_JPEG_SCANS", DEFAULT_MAX_JPEG_SCANS),
                max_outputs=parse_whole(env, "BEN2_WORKER_MAX_OUTPUTS", DEFAULT_MAX_OUTPUTS),
                max_output_pixels=parse_whole(env, "BEN2_WORKER_MAX_OUTPUT_PIXELS", DEFAULT_MAX_OUTPUT_PIXELS),
                max_output_bytes=parse_whole(env, "BEN2_WORKER_MAX_OUTPUT_BYTES", DEFAULT_MAX_OUTPUT_BYTES),
                max_nodes=parse_whole(env, "BEN2_WORKER_MAX_NODES", DEFAULT_MAX_NODES),
                max_error_bytes=parse_whole(env, "BEN2_WORKER_MAX_ERROR_BYTES", DEFAULT_MAX_ERROR_BYTES),
            ),
            urls=UrlSettings(
                max_bytes=parse_whole(env, "BEN2_WORKER_URL_MAX_BYTES", DEFAULT_URL_MAX_BYTES),
                timeout_s=parse_seconds(env, "BEN2_WORKER_URL_TIMEOUT", DEFAULT_URL_TIMEOUT_S),
                allow_http=parse_flag(env, "BEN2_WORKER_URL_ALLOW_HTTP"),
                allow_private=parse_flag(env, "BEN2_WORKER_URL_ALLOW_PRIVATE"),
            ),
            s3=S3Settings(
                endpoint_url=_raw(env, "BUCKET_ENDPOINT_URL"),
                access_key_id=_raw(env, "BUCKET_ACCESS_KEY_ID"),
                secret_access_key=_raw(env, "BUCKET_SECRET_ACCESS_KEY"),
                bucket=_raw(env, "BUCKET_NAME"),
                region=_raw(env, "BUCKET_REGION"),
            ),
            hub=HubSettings(
                endpoint=(_raw(env, "HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/"),
                offline=parse_flag(env, "HF_HUB_OFFLINE"),
                timeout_s=parse_seconds(env, "HF_HUB_ETAG_TIMEOUT", DEFAULT_HUB_TIMEOUT_S),
            ),
            runpod=RunpodSettings(
                on_platform=bool(_raw(env, "RUNPOD_POD_ID") or _raw(env, "RUNPOD_WEBHOOK_PING")),
            ),
            session=SessionSettings(
                ben2_variant=parse_choice(env, "BEN2_WORKER_BEN2_VARIANT", MODEL_VARIANTS, "fp32"),
                cache=parse_cache(env, "BEN2_WORKER_ORT_CACHE"),
                graph_level=parse_choice(env, "BEN2_WORKER_GRAPH_LEVEL", GRAPH_LEVELS, "all"),
                cpu_arena=parse_flag(env, "BEN2_WORKER_CPU_ARENA", True),
            ),
            service=_service_from_env(env),
        )


def _service_from_env(env: Mapping[str, str]) -> ServiceSettings:
    keys_file = _raw(env, "BEN2_SERVICE_KEYS_FILE")
    return ServiceSettings(
        host=_raw(env, "BEN2_SERVICE_HOST") or DEFAULT_SERVICE_HOST,
        port=parse_whole(env, "BEN2_SERVICE_PORT", DEFAULT_SERVICE_PORT),
        keys_file=Path(keys_file).expanduser() if keys_file else None,
        rate_per_minute=float(parse_whole(env, "BEN2_SERVICE_RATE_PER_MINUTE", DEFAULT_SERVICE_RATE_PER_MINUTE)),
        burst=parse_whole(env, "BEN2_SERVICE_BURST", DEFAULT_SERVICE_BURST),
        run_body_limit=parse_whole(env, "BEN2_SERVICE_RUN_MAX_BYTES", DEFAULT_RUN_BODY_LIMIT),
        runsync_body_limit=parse_whole(env, "BEN2_SERVICE_RUNSYNC_MAX_BYTES", DEFAULT_RUNSYNC_BODY_LIMIT),
        removebg_body_limit=parse_whole(env, "BEN2_SERVICE_REMOVEBG_MAX_BYTES", DEFAULT_REMOVEBG_BODY_LIMIT),
        concurrency=parse_whole(env, "BEN2_SERVICE_CONCURRENCY", 1),
        queue_limit=parse_whole(env, "BEN2_SERVICE_QUEUE_LIMIT", 64),
        result_ttl_s=parse_seconds(env, "BEN2_SERVICE_RESULT_TTL", DEFAULT_RESULT_TTL_S),
        webhook_secret=_raw(env, "BEN2_SERVICE_WEBHOOK_SECRET") or None,
        endpoint_id=_raw(env, "BEN2_SERVICE_ENDPOINT_ID") or None,
    )


#: The variable ``ben2-worker endpoint-test`` takes the RunPod API key from (``--api-key-env``).
DEFAULT_API_KEY_VARIABLE = "RUNPOD_API_KEY"


def secret_from_env(name: str = DEFAULT_API_KEY_VARIABLE, env: Mapping[str, str] | None = None) -> str | None:
    """The value of a variable the user named on the command line (``--api-key-env``), or None."""
    env = os.environ if env is None else env
    return _raw(env, name) or None


def quiet_runpod_sdk() -> None:
    """Default ``RUNPOD_LOG_LEVEL`` to INFO before the SDK is imported: at DEBUG it logs whole
    job outputs (base64 images). An operator's own value is kept."""
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")


def export_service_bind(service: ServiceSettings) -> None:
    """Write the address ``ben2-worker serve`` was told to bind into this process's environment,
    so the processes uvicorn starts for ``--workers N`` (which read their settings afresh) apply
    the same key rule as the parent: a box bound off loopback never runs one open worker."""
    os.environ["BEN2_SERVICE_HOST"] = service.host
    os.environ["BEN2_SERVICE_PORT"] = str(service.port)


def child_environment(**defaults: str) -> dict[str, str]:
    """This process's environment plus ``defaults`` (where unset), for a subprocess we start."""
    env = dict(os.environ)
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env
