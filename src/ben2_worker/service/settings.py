"""What the service is configured with: bind address, API keys, limits, callbacks.

Plain values, no environment reading here (configuration is read once, elsewhere, and handed
in). :func:`load_keys_file` reads the operator's keys file (TOML)."""

from __future__ import annotations

import ipaddress
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..api.safe_http import FetchPolicy

#: Shortest API key accepted: a guessable key on a network-facing box is no key at all.
MIN_KEY_CHARS = 16

#: RunPod's payload limits (/run 10 MB, /runsync 20 MB; docs/api.md), kept so a request that
#: works here also fits the platform.
RUN_BODY_LIMIT = 10 * 10**6
RUNSYNC_BODY_LIMIT = 20 * 10**6
#: remove.bg-style uploads (multipart or base64 JSON). Our own choice, see docs/service.md.
REMOVEBG_BODY_LIMIT = 25 * 2**20


class ServiceConfigError(ValueError):
    """A setting or the keys file is unusable; the message names it and what is allowed."""


@dataclass(frozen=True)
class ApiKey:
    """One client's key. ``name`` is what logs and metrics show; the key itself never is."""

    name: str
    key: str = field(repr=False)
    #: Requests per minute that start work (/run, /runsync, /v1.0/removebg); None: the default.
    rate_per_minute: float | None = None
    #: Requests that may arrive at once before the rate applies; None: the default.
    burst: int | None = None


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    keys: tuple[ApiKey, ...] = ()
    #: Default rate limit per key (or per client address when no keys are needed).
    rate_per_minute: float = 120.0
    burst: int = 20
    run_body_limit: int = RUN_BODY_LIMIT
    runsync_body_limit: int = RUNSYNC_BODY_LIMIT
    removebg_body_limit: int = REMOVEBG_BODY_LIMIT
    #: Any other route (status, cancel, playground ...): small JSON at most.
    other_body_limit: int = 64 * 1024
    #: Jobs run at once (one model per process: 1 keeps a GPU's memory predictable).
    concurrency: int = 1
    #: Jobs waiting beyond this are refused with 429.
    queue_limit: int = 64
    #: How long /runsync waits before answering IN_QUEUE/IN_PROGRESS with an id (RunPod: 90 s).
    runsync_wait_s: float = 90.0
    #: Finished jobs are kept this long for /status (RunPod keeps /run results 30 min).
    result_ttl_s: float = 1800.0
    #: HMAC secret for completion callbacks; without one, requests with a webhook are refused.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 5
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0
    #: The SSRF guard callbacks go through (public https only unless a test widens it).
    webhook_policy: FetchPolicy = FetchPolicy(timeout_s=10.0)
    #: If set, /v2/{endpoint_id}/... answers only for this id.
    endpoint_id: str | None = None

    def __post_init__(self) -> None:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ServiceConfigError("API key names must be unique")
        for k in self.keys:
            if len(k.key) < MIN_KEY_CHARS:
                raise ServiceConfigError(f"API key {k.name!r} is shorter than {MIN_KEY_CHARS} characters")
        for name in ("rate_per_minute", "runsync_wait_s", "result_ttl_s", "webhook_backoff_s", "webhook_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ServiceConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("burst", "run_body_limit", "runsync_body_limit", "removebg_body_limit", "other_body_limit",
                     "concurrency", "queue_limit", "webhook_attempts"):
            if getattr(self, name) < 1:
                raise ServiceConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.webhook_secret is not None and len(self.webhook_secret) < MIN_KEY_CHARS:
            raise ServiceConfigError(f"the webhook secret must be at least {MIN_KEY_CHARS} characters")
        if not self.loopback and not self.keys:
            raise ServiceConfigError(
                f"refusing to serve on {self.host} without API keys: anything but loopback needs keys "
                "(a keys file, see docs/service.md), or bind 127.0.0.1"
            )

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def keys_required(self) -> bool:
        """Keys are checked when any are configured, and always off loopback (then some must be)."""
        return bool(self.keys) or not self.loopback


def is_loopback_host(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_keys_file(path: Path) -> tuple[ApiKey, ...]:
    """Keys from a TOML file::

        [[keys]]
        name = "shop-frontend"
        key = "a-long-random-string"
        rate_per_minute = 60   # optional
        burst = 10             # optional
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServiceConfigError(f"cannot read the API keys file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ServiceConfigError(f"the API keys file {path} is not valid TOML: {exc}") from None
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ServiceConfigError(f"the API keys file {path} has no [[keys]] entries")
    keys = []
    allowed = {"name", "key", "rate_per_minute", "burst"}
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("key"), str):
            raise ServiceConfigError(f"{where} needs a string name and a string key")
        unknown = set(entry) - allowed
        if unknown:
            raise ServiceConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
        rate, burst = entry.get("rate_per_minute"), entry.get("burst")
        if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
            raise ServiceConfigError(f"{where}: rate_per_minute must be a positive number")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise ServiceConfigError(f"{where}: burst must be a whole number of at least 1")
        keys.append(ApiKey(entry["name"], entry["key"], None if rate is None else float(rate), burst))
    return tuple(keys)
