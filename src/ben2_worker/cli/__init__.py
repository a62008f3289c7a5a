"""The ``ben2-worker`` command line: a thin adapter over the engines."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import options
from ..config import Settings
from ..engines import load_cutout_engine, model_path
from ..errors import Ben2WorkerError, InputError
from ..timing import StageTimer
from .lazy import LazyCommand, lazy_group

#: Commands imported only when run (cli/lazy.py): a cut-out never imports the workflow runner,
#: the endpoint tester or the self-check.
LAZY_COMMANDS = {
    "models": LazyCommand("ben2_worker.models.cli:models_app", "List, download and verify the models."),
    "workflow": LazyCommand("ben2_worker.cli.workflow:workflow_app", "Convert and validate ComfyUI workflows."),
    "endpoint": LazyCommand("ben2_worker.cli.endpoint:endpoint_app",
                            "Test a deployed RunPod endpoint and report latency and cost."),
    "selfcheck": LazyCommand("ben2_worker.cli.selfcheck:selfcheck",
                             "Check that this install can serve: model checksums, providers, workflow node types, workflows."),
}

app = typer.Typer(
    name="ben2-worker",
    help="BEN2 background removal: CLI, RunPod worker and model store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=lazy_group(LAZY_COMMANDS),
)

console = Console(stderr=True)
out_console = Console()

FORMATS = ("png", "webp", "jpg", "jpeg")


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@dataclass
class RunSummary:
    written: int = 0
    failed: int = 0
    skipped: int = 0


@app.command()
@options.typer_options("cli")
def remove(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the cut-outs.")] = Path("cutouts"),
    batch_size: Annotated[int, typer.Option(min=1, max=64, help="Images per model run (used as one batch when the model's batch axis allows).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    models_dir: Annotated[Optional[Path], typer.Option(help="Models folder (default: $BEN2_WORKER_MODELS or ./models).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log model loading and per-image timings.")] = False,
    **opts,
) -> None:
    """Cut the background out of images; outputs keep the input's full resolution.

    The cut-out options are the task API's ``output`` options (docs/options.md)."""
    from ..cutout import CutoutOptions
    from ..files import atomic_write, discover_inputs, output_path, read_input
    from ..imaging import FORMAT_EXTENSIONS, decode_image, encode_image

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        options = CutoutOptions.from_values(opts)
        fmt = options.output_format  # ``auto`` resolved from the options
    except (InputError, ValueError) as exc:
        raise _fail(str(exc))
    mask, quality = opts["mask_only"], opts["quality"]

    inputs, problems = discover_inputs(paths)
    for problem in problems:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    if not inputs:
        raise _fail("no input images found", code=1)

    started = time.perf_counter()
    try:
        engine = load_cutout_engine(settings, models_dir)
    except Ben2WorkerError as exc:
        raise _fail(str(exc), code=1)
    load_seconds = time.perf_counter() - started

    summary = RunSummary(failed=len(problems))
    totals = StageTimer()
    extension = FORMAT_EXTENSIONS[fmt]
    suffix = "-mask" if mask else ""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("cutting out", total=len(inputs))
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            decoded = []
            for item in chunk:
                dest = output_path(output, item, extension, suffix)
                if dest.exists() and not overwrite:
                    console.print(f"[yellow]skipped:[/] {dest} already exists (use --overwrite to replace it)", highlight=False, soft_wrap=True)
                    summary.skipped += 1
                    progress.advance(task)
                    continue
                timer = StageTimer()
                try:
                    with timer("read"):
                        data = read_input(item.path)
                    with timer("decode"):
                        image = decode_image(data, max_pixels=settings.max_pixels, name=str(item.path))
                except (Ben2WorkerError, OSError) as exc:
                    console.print(f"[red]failed:[/] {exc}", highlight=False, soft_wrap=True)
                    summary.failed += 1
                    progress.advance(task)
                    continue
                decoded.append((item, dest, image, timer))
            if not decoded:
                continue
            try:
                results = engine.cut_out([d[2].rgb for d in decoded], options)
            except Ben2WorkerError as exc:
                for item, *_ in decoded:
                    console.print(f"[red]failed:[/] {item.path}: {exc}", highlight=False, soft_wrap=True)
                summary.failed += len(decoded)
                progress.advance(task, len(decoded))
                continue
            for (item, dest, image, timer), result in zip(decoded, results):
                timer.merge(result.timings)
                try:
                    with timer("encode"):
                        data = encode_image(result.image, fmt, quality=quality, background=options.background or (255, 255, 255))
                    with timer("write"):
                        atomic_write(dest, data, overwrite=overwrite)
                        if opts["return_mask"] and not mask:
                            atomic_write(output_path(output, item, ".png", "-mask"), encode_image(result.alpha, "png"),
                                         overwrite=overwrite)
                except (Ben2WorkerError, OSError) as exc:
                    console.print(f"[red]failed:[/] {item.path}: {exc}", highlight=False, soft_wrap=True)
                    summary.failed += 1
                else:
                    summary.written += 1
                    totals.merge(timer)
                    if verbose:
                        h, w = result.image.shape[:2]
                        console.print(f"{item.path} -> {dest} ({w}x{h}) {timer.as_ms()}", highlight=False, soft_wrap=True)
                progress.advance(task)

    elapsed = time.perf_counter() - started
    if summary.written:
        _print_timings(totals, summary.written, load_seconds)
    status = "[green]done[/]" if not summary.failed else "[red]finished with failures[/]"
    console.print(
        f"{status}: {summary.written} written, {summary.failed} failed, {summary.skipped} skipped "
        f"in {elapsed:.2f} s -> {output}",
        highlight=False,
    )
    if summary.failed:
        raise typer.Exit(1)


@app.command("compare-scaling")
def compare_scaling(
    photos: Annotated[list[str], typer.Argument(help="Photos, folders or globs to compare on.")],
    model: Annotated[Optional[Path], typer.Option(help="A BEN2 ONNX file (default: the one in the models folder).")] = None,
    models_dir: Annotated[Optional[Path], typer.Option(help="Models folder (default: $BEN2_WORKER_MODELS or ./models).")] = None,
) -> None:
    """Run BEN2 with both input scalings (x/255, ImageNet mean/std) and report how far the mattes differ.

    Settles which scaling the published ONNX weights expect (docs/cutout.md)."""
    import numpy as np

    from ..ben2 import Ben2Model
    from ..cutout import CutoutEngine, MatteOptions, shape_matte, smart_resize_size
    from ..files import discover_inputs, read_input
    from ..imaging import decode_image
    settings = Settings.from_env()
    try:
        path = model or model_path("ben2", settings, models_dir)
        ben2 = Ben2Model(path, providers=settings.providers, threads=settings.threads)
    except Ben2WorkerError as exc:
        raise _fail(str(exc), code=1)
    engines = {s: CutoutEngine(ben2, input_scaling=s) for s in ("unit", "imagenet")}
    inputs, problems = discover_inputs(photos)
    for problem in problems:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    table = Table(title=f"BEN2 input scaling: unit (x/255) vs imagenet (mean/std) on {path}")
    for col in ("image", "mean |diff|", "IoU @0.5", "uncertain px unit", "uncertain px imagenet"):
        table.add_column(col, justify="right" if col != "image" else "left")
    diffs, ious, unc = [], [], {"unit": [], "imagenet": []}
    for item in inputs:
        try:
            rgb = decode_image(read_input(item.path), max_pixels=settings.max_pixels, name=str(item.path)).rgb
        except (Ben2WorkerError, OSError) as exc:
            console.print(f"[red]failed:[/] {exc}", highlight=False, soft_wrap=True)
            continue
        work = smart_resize_size(rgb.shape[1], rgb.shape[0])
        mattes, raw_unc = {}, {}
        for name, eng in engines.items():
            raw = eng.mattes([rgb])[0]
            # A well-fed sigmoid output is confident: few pixels between 0.05 and 0.95.
            raw_unc[name] = float(((raw > 0.05) & (raw < 0.95)).mean())
            mattes[name] = shape_matte(raw, work, MatteOptions()).astype(np.float32) / 255
        d = float(np.abs(mattes["unit"] - mattes["imagenet"]).mean())
        a, b = mattes["unit"] > 0.5, mattes["imagenet"] > 0.5
        union = (a | b).sum()
        iou = float((a & b).sum() / union) if union else 1.0
        diffs.append(d), ious.append(iou)
        for k in unc:
            unc[k].append(raw_unc[k])
        table.add_row(str(item.path), f"{d:.4f}", f"{iou:.3f}", f"{raw_unc['unit']:.2%}", f"{raw_unc['imagenet']:.2%}")
    if not diffs:
        raise _fail("no photos could be read", code=1)
    out_console.print(table)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    better = "unit" if mean(unc["unit"]) <= mean(unc["imagenet"]) else "imagenet"
    out_console.print(
        f"mean |diff| {mean(diffs):.4f}, mean IoU {mean(ious):.3f}; the more confident scaling is "
        f"[bold]{better}[/] (fewer uncertain pixels). Set BEN2_WORKER_INPUT_SCALING accordingly "
        "and record the result in docs/models.md."
    )


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default: $BEN2_SERVICE_HOST or 127.0.0.1); anything but loopback needs API keys.")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default: $BEN2_SERVICE_PORT or 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Processes, each with its own models and queue (rate limits are per process).")] = 1,
) -> None:
    """Run the self-hosted HTTP service: RunPod-style routes, remove.bg-compatible API, playground.

    Settings and keys come from the BEN2_SERVICE_* variables (docs/service.md); needs the
    ``service`` extra. The models load in the background: /health answers 503 until ready."""
    import dataclasses

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        bind = dataclasses.replace(settings.service, **{k: v for k, v in (("host", host), ("port", port)) if v is not None})
        import uvicorn

        from ..service.app import create_app
        from ..service.keys import with_keys_file

        with_keys_file(bind)  # a bad keys file stops us here, before anything binds
    except ImportError as exc:
        raise _fail(f"the service needs the 'service' extra (pip install 'ben2-worker[service]'): {exc}", code=1)
    except (Ben2WorkerError, ValueError) as exc:
        raise _fail(f"service cannot start: {exc}", code=1)
    if workers == 1:
        uvicorn.run(create_app(dataclasses.replace(settings, service=bind)), host=bind.host, port=bind.port,
                    log_level=settings.log_level.lower())
    else:  # each worker process reads its settings afresh from this environment
        from ..config import export_service_bind

        export_service_bind(bind)
        uvicorn.run("ben2_worker.service.app:create_app_from_env", factory=True, workers=workers,
                    host=bind.host, port=bind.port, log_level=settings.log_level.lower())


def _print_timings(totals: StageTimer, count: int, load_seconds: float) -> None:
    table = Table(title="mean ms per image", caption=f"{count} image(s); model load {load_seconds * 1000:.0f} ms")
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, seconds in totals.seconds.items():
        table.add_row(stage, f"{seconds / count * 1000:.1f}")
    table.add_row("[bold]total[/]", f"[bold]{totals.total() / count * 1000:.1f}[/]")
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
