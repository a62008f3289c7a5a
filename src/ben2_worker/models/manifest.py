"""The model manifest: ``manifest.toml`` (next to this file) read and checked into
:class:`ModelSpec` objects. Every model file the project uses is listed there once, with the
public source of every pinned fact; nothing here touches the models folder."""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..options import PIPELINES

__all__ = ["COMMIT_RE", "PIPELINES", "SHA256_RE", "ModelFile", "ModelSpec", "load_manifest", "models_for_pipeline", "parse_manifest"]

#: Where a model comes from; which pipelines exist is declared once, in options.py.
SOURCES = ("huggingface", "pypi")
UNKNOWN_MARKER = "unknown"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")

@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it lives in its source, where it goes, what it must be."""

    path_in_repo: str
    #: Relative to the models directory, POSIX separators.
    dest: str
    #: Lower-case hex, or None when no public source pins it (the lock file then records it).
    sha256: str | None
    size: int | None
    sha256_source: str = ""
    size_source: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    source: str  # "huggingface" | "pypi"
    repo: str  # Hub repo id, or the PyPI distribution name for source == "pypi"
    revision: str | None  # 40-hex commit on the Hub; the package version on PyPI
    files: tuple[ModelFile, ...]
    licence: str
    licence_url: str
    pipelines: tuple[str, ...]
    notes: str = ""
    revision_source: str = ""
    licence_source: str = ""

    @property
    def primary(self) -> str:
        """Relative path of what an engine loads: the one file, or the folder of a multi-file model."""
        if len(self.files) == 1:
            return self.files[0].dest
        parents = {str(PurePosixPath(f.dest).parent) for f in self.files}
        if len(parents) != 1:
            raise ValueError(f"model {self.name!r}: multi-file model files must share one folder")
        return parents.pop()

    @property
    def known_size(self) -> int | None:
        """Total bytes when every file's size is pinned, else None."""
        if any(f.size is None for f in self.files):
            return None
        return sum(f.size or 0 for f in self.files)


def _is_unknown(source: str) -> bool:
    return source.strip().lower().startswith(UNKNOWN_MARKER)


def _check_dest(name: str, dest: str) -> str:
    p = PurePosixPath(dest)
    if not dest or p.is_absolute() or ".." in p.parts or "\\" in dest:
        raise ValueError(f"model {name!r}: dest {dest!r} must be a relative path inside the models directory")
    return str(p)


def _parse_file(name: str, raw: Mapping[str, Any]) -> ModelFile:
    try:
        path_in_repo = str(raw["path_in_repo"])
        dest = _check_dest(name, str(raw["dest"]))
    except KeyError as exc:
        raise ValueError(f"model {name!r}: a file entry lacks {exc.args[0]!r}") from None
    sha = str(raw.get("sha256", "")).strip().lower()
    sha_source = str(raw.get("sha256_source", "")).strip()
    if sha:
        if not SHA256_RE.fullmatch(sha):
            raise ValueError(f"model {name!r}: {path_in_repo}: sha256 {sha!r} is not 64 hex digits")
        if not sha_source:
            raise ValueError(f"model {name!r}: {path_in_repo}: sha256 has no sha256_source")
    elif not _is_unknown(sha_source):
        raise ValueError(
            f"model {name!r}: {path_in_repo}: sha256 is empty; mark it explicitly with "
            f'sha256_source = "unknown: ..." or pin it'
        )
    size_raw = raw.get("size")
    size_source = str(raw.get("size_source", "")).strip()
    if size_raw is None:
        if not _is_unknown(size_source):
            raise ValueError(
                f"model {name!r}: {path_in_repo}: size is missing; mark it explicitly with "
                f'size_source = "unknown: ..." or pin it'
            )
        size = None
    else:
        if isinstance(size_raw, bool) or not isinstance(size_raw, int) or size_raw <= 0:
            raise ValueError(f"model {name!r}: {path_in_repo}: size must be a positive integer")
        size = size_raw
    return ModelFile(
        path_in_repo=path_in_repo,
        dest=dest,
        sha256=sha or None,
        size=size,
        sha256_source=sha_source,
        size_source=size_source,
    )


def _parse_model(name: str, raw: Mapping[str, Any]) -> ModelSpec:
    def req(key: str) -> str:
        value = str(raw.get(key, "")).strip()
        if not value:
            raise ValueError(f"model {name!r}: {key!r} is missing or empty")
        return value

    source = req("source")
    if source not in SOURCES:
        raise ValueError(f"model {name!r}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    revision = str(raw.get("revision", "")).strip()
    revision_source = str(raw.get("revision_source", "")).strip()
    if revision:
        if source == "huggingface" and not COMMIT_RE.fullmatch(revision):
            raise ValueError(f"model {name!r}: revision must be a full 40-hex commit, got {revision!r}")
        if not revision_source:
            raise ValueError(f"model {name!r}: revision has no revision_source")
    elif not _is_unknown(revision_source):
        raise ValueError(
            f"model {name!r}: revision is empty; mark it explicitly with "
            f'revision_source = "unknown: ..." or pin it'
        )
    pipelines = tuple(str(p) for p in raw.get("pipelines", ()))
    if not pipelines or any(p not in PIPELINES for p in pipelines):
        raise ValueError(f"model {name!r}: pipelines must be a non-empty subset of {PIPELINES}")
    files_raw = raw.get("files") or []
    if not files_raw:
        raise ValueError(f"model {name!r}: no files listed")
    files = tuple(_parse_file(name, f) for f in files_raw)
    spec = ModelSpec(
        name=name,
        title=req("title"),
        source=source,
        repo=req("repo"),
        revision=revision or None,
        files=files,
        licence=req("licence"),
        licence_url=req("licence_url"),
        pipelines=pipelines,
        notes=str(raw.get("notes", "")).strip(),
        revision_source=revision_source,
        licence_source=str(raw.get("licence_source", "")).strip(),
    )
    spec.primary  # noqa: B018 - validates that a multi-file model has one folder
    return spec


def parse_manifest(data: Mapping[str, Any]) -> dict[str, ModelSpec]:
    """Validate an already-parsed manifest document (the TOML's structure)."""
    if data.get("schema", 1) != 1:
        raise ValueError(f"unsupported manifest schema {data.get('schema')!r}")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError("manifest has no [models.*] tables")
    specs = {str(name): _parse_model(str(name), raw) for name, raw in models.items()}
    seen: dict[str, str] = {}
    for spec in specs.values():
        for f in spec.files:
            if f.dest in seen:
                raise ValueError(f"dest {f.dest!r} is used by both {seen[f.dest]!r} and {spec.name!r}")
            seen[f.dest] = spec.name
    return specs


def load_manifest(path: Path | str | None = None) -> dict[str, ModelSpec]:
    """The packaged manifest (or the TOML file at ``path``), validated, keyed by model name."""
    if path is None:
        text = importlib.resources.files("ben2_worker.models").joinpath("manifest.toml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_manifest(tomllib.loads(text))


def models_for_pipeline(manifest: Mapping[str, ModelSpec], pipeline: str) -> list[str]:
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    return [name for name, spec in manifest.items() if pipeline in spec.pipelines]
