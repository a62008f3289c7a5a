"""The lock file (``models.lock.json``): facts the manifest could not pin (a checksum, a size,
a resolved commit) recorded by the first download, in the models folder and, reviewed, in the
repository. Trust on first use, written atomically."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ben2_worker.errors import ModelError
from ben2_worker.files import atomic_write

__all__ = ["LOCK_FILENAME", "packaged_lock_path", "read_lock", "write_json", "write_lock"]

LOCK_FILENAME = "models.lock.json"

def packaged_lock_path() -> Path:
    """``src/ben2_worker/models/models.lock.json``: recorded facts reviewed into the repo."""
    return Path(str(importlib.resources.files("ben2_worker.models").joinpath(LOCK_FILENAME)))


def read_lock(path: Path) -> dict[str, Any]:
    """A lock document (``{"schema": 1, "models": {...}}``); empty when the file is absent."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        return {"schema": 1, "models": {}}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model lock file {path}: {exc}. Fix or delete it.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ModelError(f"the model lock file {path} is not a ben2-worker lock file. Fix or delete it.")
    return data


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written all or nothing and readable by a non-root worker."""
    atomic_write(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), overwrite=True)


def write_lock(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a lock document atomically (used for the models-dir lock and the repo lock)."""
    doc = {"schema": 1, "models": dict(data.get("models", {}))}
    write_json(Path(path), doc)
    return Path(path)
