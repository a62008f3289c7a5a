"""Model manifest and store: which files the worker needs, where they live, whether they are intact.

See :mod:`ben2_worker.models.store` and docs/models.md."""

from __future__ import annotations

from ben2_worker.models.store import (
    CHUNK_SIZE,
    LOCK_FILENAME,
    PIPELINES,
    VERIFIED_FILENAME,
    FileStatus,
    ModelFile,
    ModelSpec,
    ModelStatus,
    ModelStore,
    load_manifest,
    models_for_pipeline,
    packaged_lock_path,
    read_lock,
    sha256_file,
    write_lock,
)

__all__ = [
    "CHUNK_SIZE",
    "LOCK_FILENAME",
    "PIPELINES",
    "VERIFIED_FILENAME",
    "FileStatus",
    "ModelFile",
    "ModelSpec",
    "ModelStatus",
    "ModelStore",
    "load_manifest",
    "models_for_pipeline",
    "packaged_lock_path",
    "read_lock",
    "sha256_file",
    "write_lock",
]
