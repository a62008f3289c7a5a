"""Model manifest and store: which files the worker needs, where they live, whether they are intact.

``manifest`` (manifest.toml → ModelSpec), ``lockfile`` (facts recorded by downloads), ``hashing``
(streamed sha256), ``download`` (Hub / PyPI fetching), ``store`` (the models folder). See
docs/models.md."""

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
