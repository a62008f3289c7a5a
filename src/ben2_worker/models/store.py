"""The model store: one models directory, checked against the manifest.

:class:`ModelStore` answers "where is model X, is it there, is it intact" for the worker
(:meth:`ModelStore.require`, cheap at start-up thanks to a verified-stamp cache) and fetches
missing files (:meth:`ModelStore.download`, see :mod:`ben2_worker.models.download`). The
manifest is :mod:`ben2_worker.models.manifest`; facts it could not pin (``sha256 = ""`` / no
``size``) are recorded by the first download in the lock file
(:mod:`ben2_worker.models.lockfile`). Nothing is ever skipped silently: a file with no known
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

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ben2_worker.errors import ModelCorruptError, ModelError, ModelMissingError
from ben2_worker.models.download import StoreDownloads, fmt_size
from ben2_worker.models.hashing import CHUNK_SIZE, sha256_file
from ben2_worker.models.lockfile import LOCK_FILENAME, packaged_lock_path, read_lock, write_json, write_lock
from ben2_worker.models.manifest import (
    COMMIT_RE,
    PIPELINES,
    SHA256_RE,
    ModelFile,
    ModelSpec,
    load_manifest,
    models_for_pipeline,
    parse_manifest,
)

if TYPE_CHECKING:
    from ben2_worker.config import HubSettings

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
    "load_manifest",
    "models_for_pipeline",
    "packaged_lock_path",
    "parse_manifest",
    "read_lock",
    "sha256_file",
    "write_lock",
]

VERIFIED_FILENAME = ".verified.json"
_FIX_ENV_HINT = "BEN2_WORKER_MODELS"


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


# --------------------------------------------------------------------------- the store


class ModelStore(StoreDownloads):
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
        hub: HubSettings | None = None,
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
        if hub is not None:  # else the class defaults: huggingface.co, online, DEFAULT_HUB_TIMEOUT
            self.hub_endpoint, self.hub_offline, self.hub_timeout = hub.endpoint, hub.offline, hub.timeout_s
        if hub_timeout is not None:
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
            if sha is None and isinstance(entry.get("sha256"), str) and SHA256_RE.fullmatch(entry["sha256"]):
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
            if isinstance(rev, str) and COMMIT_RE.fullmatch(rev):
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
            f"(expected sha256 {sha}, {fmt_size(exp.size)}). {self._fix_hint(spec.name)}, "
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
            write_json(self.stamp_path, stamps)
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
