"""`ben2-worker endpoint test`: the spec's "Deployment Testing" checklist against a live endpoint.

Mounted by the main CLI with ``app.add_typer(endpoint_app, name="endpoint")``. Exit codes:

* 0: every request succeeded and every returned image decoded at full resolution;
* 1: the run finished with failures (listed in the report);
* 2: unusable options (unknown GPU, no API key, no workflows, unreadable image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import DEFAULT_API_KEY_VARIABLE, secret_from_env
from ..ops.endpoint import cases as case_mod
from ..ops.endpoint import prices
from ..ops.endpoint.client import DEFAULT_BASE_URL, EndpointClient, endpoint_url, is_loopback
from ..ops.endpoint.report import build_report, utc_now, write_report
from ..ops.endpoint.runner import MODES, Attempt, EndpointTester, RunConfig

endpoint_app = typer.Typer(
    name="endpoint",
    help="Test a deployed RunPod endpoint (or `ben2-worker serve`) end to end.",
    no_args_is_help=True,
    add_completion=False,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False, soft_wrap=True)


@endpoint_app.callback()
def _group() -> None:
    """Test a deployed RunPod endpoint (or `ben2-worker serve`) end to end."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _split(value: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise _fail(f"{option}: {', '.join(bad) or 'nothing given'}; choose from {', '.join(allowed)}")
    return items


@endpoint_app.command("test")
def test(
    endpoint_id: Annotated[str | None, typer.Option("--endpoint-id", help="RunPod endpoint id. Leave out to use --base-url as the endpoint itself (e.g. http://127.0.0.1:8000 for `ben2-worker serve`).")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the RunPod API key (never printed or written).")] = DEFAULT_API_KEY_VARIABLE,
    base_url: Annotated[str, typer.Option("--base-url", help="RunPod's API root; the endpoint is {base-url}/{endpoint-id}.")] = DEFAULT_BASE_URL,
    runs: Annotated[int, typer.Option("--runs", min=1, max=100, help="Requests per case and mode (the first request of the test is the cold one).")] = 3,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: ./endpoint-report-<UTC time>).")] = None,
    gpu: Annotated[str, typer.Option("--gpu", help="The endpoint's GPU, for the cost: a pool id (ADA_24) or a name (RTX 4090, L4, H100).")] = prices.DEFAULT_GPU,
    pipelines: Annotated[str, typer.Option("--pipelines", help="Pipelines to test: simple, full or simple,full.")] = "simple,full",
    apis: Annotated[str, typer.Option("--apis", help="Request formats: comfy (worker-comfyui workflows), api (simple task API), or both.")] = "comfy,api",
    modes: Annotated[str, typer.Option("--modes", help="run (/run + /status polling), runsync, or both.")] = "run,runsync",
    image: Annotated[Path | None, typer.Option("--image", help="Photo to send (default: samples/astronaut.jpg, else a generated image). Keep it under ~7 MB: /run takes 10 MB of base64 JSON.")] = None,
    workflows: Annotated[Path | None, typer.Option("--workflows", help="Folder with the user's API-format workflows (default: ./workflows or the checkout's).")] = None,
    queue_timeout: Annotated[float, typer.Option("--queue-timeout", min=1, help="Seconds a job may stay IN_QUEUE (cold starts included) before it counts as stuck.")] = 600.0,
    job_timeout: Annotated[float, typer.Option("--job-timeout", min=1, help="Seconds a job may stay IN_PROGRESS before it counts as stuck.")] = 360.0,
    cancel_stuck: Annotated[bool, typer.Option("--cancel-stuck/--no-cancel-stuck", help="Cancel stuck jobs with /cancel/{id} (where the server has it).")] = True,
    idle_wait: Annotated[float, typer.Option("--idle-wait", min=0, help="Seconds to wait before each case so the endpoint scales to zero and every case gets a cold sample (0: only the first request is cold).")] = 0.0,
    runsync_wait: Annotated[int, typer.Option("--runsync-wait", min=1000, max=300_000, help="/runsync ?wait= in ms; a job still running then is polled via /status.")] = 90_000,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.1, help="Longest pause between /status polls (seconds).")] = 2.0,
) -> None:
    """Test an endpoint end to end and write report.md + report.json.

    Sends both pipelines' requests (worker-comfyui with the user's workflows, and the simple API)
    through /run + /status and /runsync; separates cold from warm runs; detects and cancels stuck
    jobs; decodes every returned image; reports p50/p95 latency, delay vs execution time,
    failures and cost per 1,000 images."""
    try:
        price = prices.find_price(gpu)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    wanted_pipelines = _split(pipelines, ("simple", "full"), "--pipelines")
    wanted_apis = _split(apis, ("comfy", "api"), "--apis")
    wanted_modes = _split(modes, MODES, "--modes")
    names = tuple(f"{a}-{p}" for a in wanted_apis for p in wanted_pipelines)

    try:
        url = endpoint_url(base_url, endpoint_id)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if endpoint_id is None and base_url.rstrip("/") == DEFAULT_BASE_URL:
        raise _fail("give --endpoint-id (or --base-url pointing at a local server such as http://127.0.0.1:8000)")
    api_key = secret_from_env(api_key_env)
    if api_key is None and not is_loopback(url):
        raise _fail(f"${api_key_env} is not set; export your RunPod API key there (or name another variable with --api-key-env)")
    try:
        client = EndpointClient(url, api_key)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    try:
        workflows_dir = case_mod.find_workflows_dir(workflows) if "comfy" in wanted_apis else Path(".")
        test_image = case_mod.load_image(image or case_mod.default_image_path())
        test_cases = case_mod.build_cases(test_image, workflows_dir, names)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None

    started = utc_now()
    out_dir = out or Path(f"endpoint-report-{started.strftime('%Y%m%dT%H%M%SZ')}")
    config = RunConfig(
        runs=runs, modes=wanted_modes, queue_timeout_s=queue_timeout, job_timeout_s=job_timeout,
        poll_interval_s=poll_interval, runsync_wait_ms=runsync_wait, cancel_stuck=cancel_stuck,
        idle_wait_s=idle_wait, images_dir=out_dir / "images",
    )
    target = url if endpoint_id is None else f"{base_url.rstrip('/')}/{endpoint_id} (key from ${api_key_env})"
    _err.print(f"testing {target}: {', '.join(names)} × {', '.join(wanted_modes)} × {runs} "
               f"with {test_image.name} ({test_image.width}x{test_image.height})")

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=_err, transient=False) as progress:
        task = progress.add_task("starting", total=len(test_cases) * len(wanted_modes) * runs)

        def on_progress(attempt: Attempt, text: str) -> None:
            label = f"#{attempt.seq} {attempt.case} {attempt.mode} ({attempt.phase}): {text}"
            progress.update(task, description=label, advance=1 if text.startswith("done") else 0)

        attempts = EndpointTester(client, test_cases, config, progress=on_progress).run()
        progress.update(task, completed=len(attempts), description="done")

    report = build_report(
        attempts, target=target, gpu=price,
        config={"runs": runs, "cases": list(names), "modes": list(wanted_modes), "queue_timeout_s": queue_timeout,
                "job_timeout_s": job_timeout, "idle_wait_s": idle_wait, "runsync_wait_ms": runsync_wait,
                "cancel_stuck": cancel_stuck, "cancel_supported": client.cancel_supported,
                "health_supported": client.health_supported},
        image={"name": test_image.name, "width": test_image.width, "height": test_image.height,
               "bytes": len(test_image.data), "mime": test_image.mime},
        started=started, finished=utc_now(),
    )
    json_path, md_path = write_report(report, out_dir)
    _print_summary(report)
    _err.print(f"report: {md_path} and {json_path}")
    if report["summary"]["failed"]:
        raise typer.Exit(1)


def _print_summary(report: dict) -> None:
    s = report["summary"]

    def sec(v):
        return "n/a" if v is None else f"{v:.2f}"

    table = Table(title=f"{s['ok']}/{s['requests']} ok (seconds)")
    for col in ("case", "mode", "ok", "p50", "p95", "delay", "exec"):
        table.add_column(col, justify="left" if col in ("case", "mode") else "right")
    for r in s["by_case"]:
        table.add_row(r["case"], r["mode"], f"{r['ok']}/{r['requests']}", sec(r["latency_s"]["p50"]),
                      sec(r["latency_s"]["p95"]),
                      sec(None if r["delay_ms"]["p50"] is None else r["delay_ms"]["p50"] / 1000),
                      sec(None if r["execution_ms"]["p50"] is None else r["execution_ms"]["p50"] / 1000))
    _out.print(table)
    for c in s["costs"]:
        if c.get("usd_per_1000_images") is not None:
            _out.print(f"{c['pipeline']}: ${c['usd_per_1000_images']:.4f} per 1,000 images on "
                       f"{report['gpu_price']['label']} (basis: {c['basis']})")
    for g in s["failure_groups"]:
        _out.print(f"[red]failed[/] {g['case']} ({', '.join(g['modes'])}) ×{g['count']}: {g['status']}: {g['error']}")
