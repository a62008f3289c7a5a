"""The operator's API keys file (TOML), read once when the service starts.

Everything else the service is configured with is read from the environment by config.py
(:class:`ben2_worker.config.ServiceSettings`); this module only parses the file that
``BEN2_SERVICE_KEYS_FILE`` names."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from ..config import ApiKey, ServiceSettings
from ..errors import ConfigError

VARIABLE = "BEN2_SERVICE_KEYS_FILE"


def _bad(message: str) -> ConfigError:
    return ConfigError(message, variable=VARIABLE)


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
        raise _bad(f"cannot read the API keys file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(f"the API keys file {path} is not valid TOML: {exc}") from None
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise _bad(f"the API keys file {path} has no [[keys]] entries")
    keys = []
    allowed = {"name", "key", "rate_per_minute", "burst"}
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("key"), str):
            raise _bad(f"{where} needs a string name and a string key")
        unknown = set(entry) - allowed
        if unknown:
            raise _bad(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
        rate, burst = entry.get("rate_per_minute"), entry.get("burst")
        if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
            raise _bad(f"{where}: rate_per_minute must be a positive number")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise _bad(f"{where}: burst must be a whole number of at least 1")
        keys.append(ApiKey(entry["name"], entry["key"], None if rate is None else float(rate), burst))
    return tuple(keys)


def with_keys_file(settings: ServiceSettings) -> ServiceSettings:
    """``settings`` with the keys file's keys added to its own (checked again: length, names)."""
    if settings.keys_file is None:
        return settings
    return dataclasses.replace(settings, keys=settings.keys + load_keys_file(settings.keys_file))
