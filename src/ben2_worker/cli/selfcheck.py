"""`ben2-worker selfcheck`: the last build step of every image (see ben2_worker.ops.selfcheck).

A single command function, mounted by the main CLI with::

    from .selfcheck import selfcheck
    app.command("selfcheck")(selfcheck)

It also runs on its own (the Dockerfiles use this form): ``python -m ben2_worker.cli.selfcheck``.
Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ben2_worker.config import Settings
from ben2_worker.models.store import load_manifest
from ben2_worker.ops.selfcheck import FAIL, OK, SKIP, WARN, Report, SelfcheckOptions, parse_pipelines_option, run_selfcheck

_STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}


def _console(stderr: bool = False, columns: int | None = None) -> Console:
    # Build logs are not terminals: give the table room instead of rich's 80 columns.
    width = None if sys.stdout.isatty() else columns or 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width, emoji=False)


def _default_workflows(settings: Settings) -> list[Path]:
    if settings.workflows:
        return list(settings.workflows)
    here = Path("workflows")
    return [here] if here.is_dir() else []


def render(report: Report, console: Console) -> None:
    table = Table(title=f"ben2-worker selfcheck — models in {report.meta.get('models_dir')}", title_justify="left",
                  show_lines=False, expand=False)
    table.add_column("section", no_wrap=True)
    table.add_column("item", overflow="fold", max_width=48)
    table.add_column("status", no_wrap=True)
    table.add_column("detail / fix", overflow="fold")
    for c in report.checks:
        detail = Text(c.detail)
        if c.fix and c.status in (FAIL, WARN):
            detail.append("\nfix: ", style="bold")
            detail.append(c.fix)
        table.add_row(c.section, c.item, Text(c.status.upper(), style=_STYLE[c.status]), detail)
    console.print(table)


def selfcheck(
    models_dir: Annotated[Path | None, typer.Option("--models-dir", help="Models folder (default: $BEN2_WORKER_MODELS, else ./models).", show_default=False)] = None,
    pipelines: Annotated[str | None, typer.Option("--pipelines", help="Pipelines whose models and engines must be there: simple, or simple,full (default: $BEN2_WORKER_PIPELINES, else simple).", show_default=False)] = None,
    workflows: Annotated[list[Path] | None, typer.Option("--workflows", help="Workflow folder or file; repeatable (default: $BEN2_WORKER_WORKFLOWS, else ./workflows if it exists).", show_default=False)] = None,
    comfyui: Annotated[Path | None, typer.Option("--comfyui", help="A ComfyUI install (e.g. /comfyui): also check its node registry knows every node type.", show_default=False)] = None,
    require_gpu: Annotated[bool, typer.Option("--require-gpu", help="Fail unless onnxruntime has the CUDA provider (and llama.cpp was built with CUDA) with every library they link resolvable.")] = False,
    image_build: Annotated[bool, typer.Option("--image-build", help="Image-build strictness: verified stamps recorded and world-readable, whole-second model mtimes, ComfyUI registry must load.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Another manifest TOML (tests, mirrors).", hidden=True)] = None,
) -> None:
    """Check that this install can serve: model checksums, onnxruntime providers, workflow node types, workflows."""
    err = _console(stderr=True)
    try:
        settings = Settings.from_env()
        chosen = parse_pipelines_option(pipelines if pipelines is not None else settings.pipelines)
        if models_dir is None:
            models_dir = settings.models_dir
        specs = load_manifest(manifest) if manifest is not None else None
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    opts = SelfcheckOptions(
        models_dir=models_dir,
        pipelines=chosen,
        workflows=tuple(workflows) if workflows else tuple(_default_workflows(settings)),
        providers=settings.providers,
        comfyui=comfyui,
        require_gpu=require_gpu,
        image_build=image_build,
        manifest=specs,
    )
    report = run_selfcheck(opts)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        render(report, _console(columns=settings.columns))
        for c in report.failures:  # once more, one line each: greppable in CI and build logs
            err.print(f"FAIL {c.section}: {c.item}: {c.detail} -- fix: {c.fix}", markup=False, soft_wrap=True)
        err.print(report.summary_line(), markup=False)
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:  # pragma: no cover - exercised through the images
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(selfcheck)
    app(prog_name="ben2-worker selfcheck")


if __name__ == "__main__":  # pragma: no cover
    main()
