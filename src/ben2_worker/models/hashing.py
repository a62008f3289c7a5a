"""Streamed sha256 of model files (some are 6 GB: never read whole)."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: sha256 is computed in chunks of this size (8 MiB), so a 6 GB file never sits in memory.
CHUNK_SIZE = 8 * 1024 * 1024


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Streamed sha256 of a file (8 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
