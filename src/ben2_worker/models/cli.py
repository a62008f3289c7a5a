"""`ben2-worker models list|download|verify|export-lock`.

Mounted by the main CLI with ``app.add_typer(models_app, name="models")``. Every failure is
printed as one line on stderr (no traceback) and exits non-zero:

* 1: a model is missing, corrupt or could not be downloaded;
* 2: a usage error (unknown model name, bad option).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ben2_worker.errors import Ben2WorkerError
from ben2_worker.config import Settings
from ben2_worker.models.store import PIPELINES, ModelSpec, ModelStore, load_manifest, models_for_pipeline

models_app = typer.Typer(
    name="models",
    help="List, download and verify the model files (BEN2, Florence-2, NudeNet, Llama).",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

ModelsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Models directory (default: $BEN2_WORKER_MODELS, else ./models).",
        show_default=False,
    ),
]
ManifestOpt = Annotated[
    Path | None,
    typer.Option("--manifest", help="Use another manifest TOML (testing, mirrors).", hidden=True),
]
NamesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Model names (see `ben2-worker models list`).", show_default=False),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every model in the manifest.")]
PipelineOpt = Annotated[
    str,
    typer.Option(
        "--pipeline",
        help="Without names: the models this pipeline needs (simple = ben2; full = all four).",
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _store(models_dir: Path | None, manifest_path: Path | None) -> ModelStore:
    try:
        settings = Settings.from_env()
        manifest = load_manifest(manifest_path) if manifest_path is not None else None
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        raise _fail(str(exc), 2) from None
    return ModelStore(models_dir or settings.models_dir, manifest, hub=settings.hub)


def _select(store: ModelStore, names: list[str] | None, all_: bool, pipeline: str) -> list[str]:
    if names:
        unknown = [n for n in names if n not in store.manifest]
        if unknown:
            raise _fail(
                f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(store.manifest)}", 2
            )
        return list(dict.fromkeys(names))
    if all_:
        return list(store.manifest)
    if pipeline not in PIPELINES:
        raise _fail(f"--pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}", 2)
    return models_for_pipeline(store.manifest, pipeline)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _files_cell(spec: ModelSpec) -> str:
    if len(spec.files) == 1:
        return spec.files[0].dest
    return f"{spec.primary}/ ({len(spec.files)} files)"


_STATE_STYLE = {
    "verified": "[green]verified[/green]",
    "present": "[green]present[/green] (not hashed)",
    "unpinned": "[yellow]present, no checksum pinned[/yellow]",
    "size_mismatch": "[red]wrong size[/red]",
    "corrupt": "[red]corrupt[/red]",
    "missing": "[red]missing[/red]",
}


@models_app.command("list")
def list_models(
    models_dir: ModelsDirOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Also compute checksums (slow for big files).")] = False,
    manifest: ManifestOpt = None,
) -> None:
    """Show every model: files, size, licence, state in the models directory, pinned revision."""
    store = _store(models_dir, manifest)
    table = Table(title=f"Models in {store.models_dir}", title_justify="left")
    for column in ("name", "file(s)", "size", "licence", "state", "pipelines", "revision"):
        table.add_column(column, overflow="fold")
    try:
        for name, spec in store.manifest.items():
            status = store.status(name, full=verify)
            rev = spec.revision or "unpinned"
            if spec.source == "huggingface" and spec.revision:
                rev = spec.revision[:12]
            table.add_row(
                name,
                _files_cell(spec),
                _human(spec.known_size),
                spec.licence,
                _STATE_STYLE.get(status.state, status.state),
                ", ".join(spec.pipelines),
                f"{spec.source}: {spec.repo} @ {rev}",
            )
    except Ben2WorkerError as exc:
        raise _fail(str(exc)) from None
    _out.print(table)


@models_app.command("download")
def download(
    names: NamesArg = None,
    all_: AllOpt = False,
    pipeline: PipelineOpt = "simple",
    force: Annotated[bool, typer.Option("--force", help="Download again even files that verify.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show download progress bars.")] = True,
    models_dir: ModelsDirOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Download models (default: those of `--pipeline simple`, i.e. BEN2), then verify them."""
    store = _store(models_dir, manifest)
    selected = _select(store, names, all_, pipeline)
    for name in selected:
        spec = store.manifest[name]
        _out.print(f"{name}: {spec.title} -> {store.path(name)}", markup=False)
        try:
            path = store.download(name, progress=progress, force=force)
            store.verify(name)
        except Ben2WorkerError as exc:
            raise _fail(str(exc)) from None
        _out.print(f"{name}: ok ({path})", markup=False)


@models_app.command("verify")
def verify(
    names: NamesArg = None,
    all_: AllOpt = False,
    pipeline: PipelineOpt = "simple",
    models_dir: ModelsDirOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Check every file's sha256 (default: the models of `--pipeline simple`). Exit 1 if any is bad."""
    store = _store(models_dir, manifest)
    selected = _select(store, names, all_, pipeline)
    bad = 0
    for name in selected:
        try:
            problems = store.check(name)
        except Ben2WorkerError as exc:
            problems = [exc]
        for exc in problems:
            _err.print(f"error: {exc}", markup=False, soft_wrap=True)
        bad += len(problems)
        if not problems:
            _out.print(f"{name}: verified ({store.path(name)})", markup=False)
    if bad:
        raise typer.Exit(1)


@models_app.command("export-lock")
def export_lock(
    dest: Annotated[
        Path | None,
        typer.Argument(help="Where to write [default: the packaged src/ben2_worker/models/models.lock.json]."),
    ] = None,
    models_dir: ModelsDirOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Copy checksums/revisions recorded by downloads (models.lock.json) into a lock in the repo."""
    store = _store(models_dir, manifest)
    try:
        written = store.export_lock(dest)
    except (Ben2WorkerError, OSError) as exc:
        raise _fail(str(exc)) from None
    _out.print(f"wrote {written}", markup=False)
