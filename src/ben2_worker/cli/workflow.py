"""`ben2-worker workflow convert|validate`: ComfyUI workflows without a ComfyUI server.

Mounted by the main CLI with ``app.add_typer(workflow_app, name="workflow")``. Exit codes:

* 0: converted / valid;
* 1: ``validate`` found problems (printed as ComfyUI's ``{"error", "node_errors"}`` JSON);
* 2: unusable input (unreadable file, not JSON, wrong format, a workflow ``convert`` refuses).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ben2_worker.config import Settings
from ben2_worker.engines import Engines
from ben2_worker.files import atomic_write
from ben2_worker.workflow import NODE_TYPES, WorkflowRunner, WorkflowValidationError, is_ui_workflow, ui_to_api

workflow_app = typer.Typer(
    name="workflow",
    help="Convert ComfyUI workflows from UI to API format and validate them (no ComfyUI needed).",
    no_args_is_help=True,
    add_completion=False,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

ModelsDirOpt = Annotated[
    Path | None,
    typer.Option("--models-dir", help="Models directory (default: $BEN2_WORKER_MODELS, else ./models).", show_default=False),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"error: {' '.join(str(message).split())}", markup=False)
    return typer.Exit(code)


def _load(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _fail(f"{path} is not UTF-8 text (expected a ComfyUI workflow .json)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _runner(models_dir: Path | None, check_models: bool) -> WorkflowRunner:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if models_dir is not None:
        settings = dataclasses.replace(settings, models_dir=models_dir)
    return WorkflowRunner(Engines(settings=settings), check_models=check_models)


@workflow_app.command()
def convert(
    ui_file: Annotated[Path, typer.Argument(help="A UI-format workflow (ComfyUI's Save / Export).", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the API-format JSON here (default: stdout).", show_default=False)] = None,
    check_models: Annotated[bool, typer.Option("--check-models/--no-check-models", help="Also require model widgets to resolve to files in the models directory.")] = False,
    models_dir: ModelsDirOpt = None,
) -> None:
    """Convert a UI-format workflow to API format (what worker-comfyui's `workflow` takes), validated."""
    data = _load(ui_file)
    if not is_ui_workflow(data):
        raise _fail(f"{ui_file} is not a UI-format workflow (no 'nodes' list); if it is already in API format there is nothing to convert")
    runner = _runner(models_dir, check_models)
    try:
        api = ui_to_api(data)
        runner.prepare(api)
    except WorkflowValidationError as exc:
        raise _fail(f"{ui_file}: {exc}") from None
    text = json.dumps(api, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        atomic_write(output, text.encode("utf-8"), overwrite=True)
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}") from None
    _err.print(f"wrote {output} ({len(api)} nodes)", markup=False)


@workflow_app.command()
def validate(
    workflow_file: Annotated[Path, typer.Argument(help="A workflow in UI or API format.", show_default=False)],
    check_models: Annotated[bool, typer.Option("--check-models/--no-check-models", help="Require model widgets (Florence-2 folder, GGUF file) to resolve to files in the models directory.")] = True,
    models_dir: ModelsDirOpt = None,
) -> None:
    """Check a workflow as the worker would before running it; prints OK or ComfyUI-style errors (exit 1)."""
    data = _load(workflow_file)
    runner = _runner(models_dir, check_models)
    try:
        plan = runner.plan(data)
    except WorkflowValidationError as exc:
        typer.echo(json.dumps({"error": exc.error, "node_errors": exc.node_errors}, indent=2, ensure_ascii=False))
        raise _fail(str(exc), 1) from None
    fmt = "UI format" if is_ui_workflow(data) else "API format"
    outputs = ", ".join(f"{nid} {plan.graph[nid]['class_type']}" for nid in plan.outputs)
    engines = sorted({NODE_TYPES[plan.graph[n]["class_type"]].engine for n in plan.order} - {None})
    typer.echo(
        f"OK: {workflow_file} ({fmt}): {len(plan.graph)} nodes, {len(plan.order)} to run; outputs: {outputs}; "
        f"engines needed: {', '.join(engines) or 'none'}"
    )
