"""Fetching model files the store lacks: from the Hugging Face Hub (``huggingface_hub``, into a
staging folder, checked, then renamed into place) or, for NudeNet, out of the installed wheel.

:class:`StoreDownloads` is the download half of :class:`~ben2_worker.models.store.ModelStore`
(a mixin: it uses the store's paths, expected checksums, stamps and lock records)."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ben2_worker.errors import DownloadError
from ben2_worker.files import make_readable
from ben2_worker.models.hashing import CHUNK_SIZE, sha256_file
from ben2_worker.models.manifest import COMMIT_RE, SHA256_RE, ModelFile, ModelSpec

if TYPE_CHECKING:
    from ben2_worker.models.store import _Expected

__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_HUB_TIMEOUT", "STAGING_DIRNAME", "StoreDownloads", "fmt_size"]

STAGING_DIRNAME = ".downloads"
DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds to wait for the Hub before calling it unreachable (``HF_HUB_ETAG_TIMEOUT`` overrides).
DEFAULT_HUB_TIMEOUT = 5.0


def fmt_size(size: int | None) -> str:
    return "size unknown" if size is None else f"{size:,} bytes"


def _silent_tqdm_class() -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Silent(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


class StoreDownloads:
    """``ModelStore.download`` and its helpers (see the module docstring)."""

    models_dir: Path
    hub_endpoint: str = DEFAULT_ENDPOINT
    hub_offline: bool = False
    hub_timeout: float = DEFAULT_HUB_TIMEOUT

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
                    f"{dest} (sha256 {exp.sha256 or 'not pinned'}, {fmt_size(exp.size)})."
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
                make_readable(tmp)
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

    def _unreachable(
        self, spec: ModelSpec, f: ModelFile, endpoint: str, revision: str, exc: BaseException
    ) -> DownloadError:
        exp = self._expected(spec.name, f)
        return DownloadError(
            f"could not reach the Hugging Face Hub at {endpoint} to download {spec.repo}/{f.path_in_repo} "
            f"(revision {revision}) for model '{spec.name}': {type(exc).__name__}: {exc}. Fix: check the "
            f"network connection; or set HF_ENDPOINT to a reachable Hub mirror; or put the file by hand at "
            f"{self.file_path(f)} (sha256 {exp.sha256 or 'not pinned'}, {fmt_size(exp.size)}) and run "
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

        endpoint = self.hub_endpoint
        revision = self._revision(spec) or "main"
        first = todo[0]
        if self.hub_offline:
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
            if resolved is None and meta.commit_hash and COMMIT_RE.fullmatch(meta.commit_hash):
                resolved = meta.commit_hash
            exp = self._expected(spec.name, f)
            etag = (meta.etag or "").lower()
            if SHA256_RE.fullmatch(etag) and exp.sha256 and etag != exp.sha256:
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
                self._record(spec, revision if COMMIT_RE.fullmatch(revision) else None, records)


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
        make_readable(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
