"""Turn attempts into numbers: latency percentiles, delay vs execution, cold vs warm, failures,
stuck jobs, and cost per 1,000 images; written as ``report.json`` and ``report.md``.

Cost model (RunPod bills a worker per second from start to stop, see :mod:`.prices`):

* **warm**: mean ``executionTime`` of the successful warm requests of a pipeline, divided by
  the images per request — what steady traffic costs;
* **cold start**: ``delayTime`` of the cold request minus the warm median ``delayTime`` — the
  worker start (container + model load) a scaled-to-zero endpoint pays before its first job;
* not included: the endpoint's idle timeout after each burst (default 5 s of billed time).

Where a server reports no ``executionTime`` (the SDK's local API), the client's wall time
stands in and the report says so.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import prices as price_table
from .runner import Attempt


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``None`` for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _stats(values: list[float]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    return {
        "n": len(vals),
        "p50": percentile(vals, 50),
        "p95": percentile(vals, 95),
        "mean": statistics.fmean(vals) if vals else None,
        "max": max(vals) if vals else None,
    }


def _images_per_request(a: Attempt) -> int:
    return max(1, sum(1 for c in a.images if c.ok and c.role == "image"))


def summarize(attempts: list[Attempt], gpu: price_table.GpuPrice) -> dict[str, Any]:
    groups: dict[tuple, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault((a.case, a.mode), []).append(a)
    rows = []
    for (case, mode), items in groups.items():
        ok = [a for a in items if a.ok]
        rows.append({
            "case": case, "pipeline": items[0].pipeline, "api": items[0].api, "mode": mode,
            "requests": len(items), "ok": len(ok), "failed": len(items) - len(ok),
            "latency_s": _stats([a.latency_s for a in ok]),
            "delay_ms": _stats([a.delay_ms for a in ok]),
            "execution_ms": _stats([a.execution_ms for a in ok]),
            "worker_ms": _stats([a.worker_ms for a in ok]),
        })

    phases = {}
    for phase in ("cold", "warm"):
        items = [a for a in attempts if a.phase == phase and a.ok]
        phases[phase] = {
            "requests": len([a for a in attempts if a.phase == phase]),
            "ok": len(items),
            "latency_s": _stats([a.latency_s for a in items]),
            "delay_ms": _stats([a.delay_ms for a in items]),
            "execution_ms": _stats([a.execution_ms for a in items]),
        }
    cold_starts = []
    warm_delay = phases["warm"]["delay_ms"]["p50"]
    for a in attempts:
        if a.phase == "cold":
            entry = {"seq": a.seq, "case": a.case, "mode": a.mode, "ok": a.ok, "latency_s": a.latency_s,
                     "delay_ms": a.delay_ms, "execution_ms": a.execution_ms,
                     "workers_ready_before": a.workers_ready_before}
            if a.delay_ms is not None and warm_delay is not None:
                entry["cold_start_ms"] = max(0.0, a.delay_ms - warm_delay)
            cold_starts.append(entry)

    costs = []
    for pipeline in sorted({a.pipeline for a in attempts}):
        warm = [a for a in attempts if a.pipeline == pipeline and a.ok and a.phase == "warm"]
        basis = "executionTime"
        per_image = [a.execution_ms / 1000 / _images_per_request(a) for a in warm if a.execution_ms is not None]
        if not per_image:
            basis = "worker-reported processing time (the server reported no executionTime)"
            per_image = [a.worker_ms / 1000 / _images_per_request(a) for a in warm if a.worker_ms is not None]
        if not per_image:
            basis = "client latency (the server reported no executionTime)"
            per_image = [a.latency_s / _images_per_request(a) for a in warm if a.latency_s is not None]
        if not warm:
            basis = "no successful warm request"
        entry: dict[str, Any] = {"pipeline": pipeline, "basis": basis, "warm_requests": len(warm)}
        if per_image:
            mean_s = statistics.fmean(per_image)
            entry.update({
                "seconds_per_image": mean_s,
                "usd_per_image": mean_s * gpu.per_second,
                "usd_per_1000_images": price_table.cost_per_1000(mean_s, gpu),
            })
        colds = [c for c in cold_starts if c.get("cold_start_ms") is not None
                 and next(a for a in attempts if a.seq == c["seq"]).pipeline == pipeline]
        if colds:
            cs = statistics.fmean(c["cold_start_ms"] for c in colds) / 1000
            entry["cold_start_s"] = cs
            entry["usd_per_cold_start"] = cs * gpu.per_second
        costs.append(entry)

    failures = [{"seq": a.seq, "case": a.case, "mode": a.mode, "status": a.status, "job_id": a.job_id,
                 "error": a.error} for a in attempts if not a.ok]
    grouped: dict[tuple, dict[str, Any]] = {}
    for f in failures:
        g = grouped.setdefault((f["case"], f["status"], f["error"]), {
            "case": f["case"], "status": f["status"], "error": f["error"], "count": 0, "requests": [], "modes": []})
        g["count"] += 1
        g["requests"].append(f["seq"])
        if f["mode"] not in g["modes"]:
            g["modes"].append(f["mode"])
    stuck = [{"seq": a.seq, "case": a.case, "mode": a.mode, "job_id": a.job_id, "state": a.stuck,
              "cancel": a.cancel} for a in attempts if a.stuck]
    warnings = [{"seq": a.seq, "case": a.case, "image": c.filename, "warning": c.warning}
                for a in attempts for c in a.images if c.warning]
    return {
        "requests": len(attempts),
        "ok": sum(a.ok for a in attempts),
        "failed": sum(not a.ok for a in attempts),
        "timing_fields_reported": any(a.delay_ms is not None or a.execution_ms is not None for a in attempts),
        "by_case": rows,
        "phases": phases,
        "cold_starts": cold_starts,
        "costs": costs,
        "failures": failures,
        "failure_groups": list(grouped.values()),
        "stuck": stuck,
        "warnings": warnings,
    }


def build_report(attempts: list[Attempt], *, target: str, gpu: price_table.GpuPrice, config: dict,
                 image: dict, started: datetime, finished: datetime) -> dict[str, Any]:
    return {
        "tool": "ben2-worker endpoint test",
        "target": target,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "config": config,
        "image": image,
        "gpu_price": {
            "pool": gpu.pool, "label": gpu.label, "memory_gb": gpu.memory_gb,
            "usd_per_second": gpu.per_second, "usd_per_hour": round(gpu.per_hour, 4),
            "as_of": price_table.PRICES_AS_OF, "source": price_table.PRICE_SOURCE,
        },
        "summary": summarize(attempts, gpu),
        "attempts": [a.as_dict() for a in attempts],
    }


# ---------------------------------------------------------------------- rendering


def _s(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ms_as_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1000:.2f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    gpu = report["gpu_price"]
    out = [
        f"# Endpoint test: {report['target']}",
        "",
        f"{report['started']} → {report['finished']} · {s['requests']} requests: "
        f"**{s['ok']} ok, {s['failed']} failed**"
        + (f", {len(s['stuck'])} stuck" if s["stuck"] else ""),
        "",
        (f"Image: {report['image']['name']} ({report['image']['width']}x{report['image']['height']}, "
        f"{report['image']['bytes']:,} bytes). Runs per case and mode: {report['config']['runs']}."),
        "",
    ]
    if not s["timing_fields_reported"]:
        out += [("> The server reported no `delayTime`/`executionTime` (the runpod SDK's local API does not): "
                "delay and execution columns are n/a and costs use the client's wall time."), ""]

    out += ["## Latency by request", "",
            ("Client latency is submit → final answer as this machine saw it (for `run`: `/run` plus "
            "`/status` polling). Delay = RunPod `delayTime` (queue + worker start), execution = "
            "`executionTime`; worker = the handler's own timing from the output. Seconds, successful requests only."),
            "",
            ("| case | pipeline | api | mode | ok/n | latency p50 | latency p95 | delay p50 | delay p95 "
            "| execution p50 | execution p95 | worker p50 |"),
            "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in s["by_case"]:
        out.append(
            f"| {r['case']} | {r['pipeline']} | {r['api']} | {r['mode']} | {r['ok']}/{r['requests']} "
            f"| {_s(r['latency_s']['p50'])} | {_s(r['latency_s']['p95'])} "
            f"| {_ms_as_s(r['delay_ms']['p50'])} | {_ms_as_s(r['delay_ms']['p95'])} "
            f"| {_ms_as_s(r['execution_ms']['p50'])} | {_ms_as_s(r['execution_ms']['p95'])} "
            f"| {_ms_as_s(r['worker_ms']['p50'])} |"
        )

    out += ["", "## Cold vs warm", "",
            ("Cold = the first request after the endpoint was idle (no ready worker per `/health`, or the "
            "first request where `/health` is unavailable); warm = the requests that follow."), "",
            "| phase | ok/n | latency p50 | latency p95 | delay p50 | delay p95 | execution p50 | execution p95 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for phase in ("cold", "warm"):
        p = s["phases"][phase]
        out.append(f"| {phase} | {p['ok']}/{p['requests']} | {_s(p['latency_s']['p50'])} | {_s(p['latency_s']['p95'])} "
                   f"| {_ms_as_s(p['delay_ms']['p50'])} | {_ms_as_s(p['delay_ms']['p95'])} "
                   f"| {_ms_as_s(p['execution_ms']['p50'])} | {_ms_as_s(p['execution_ms']['p95'])} |")
    if s["cold_starts"]:
        out.append("")
        for c in s["cold_starts"]:
            est = c.get("cold_start_ms")
            out.append(f"- request #{c['seq']} ({c['case']}, {c['mode']}): latency {_s(c['latency_s'])} s, "
                       f"delay {_ms_as_s(c['delay_ms'])}" + (" s" if c["delay_ms"] is not None else "")
                       + (f", cold start ≈ {_ms_as_s(est)} s (delay minus warm median delay)" if est is not None else ""))
    else:
        out += ["", ("No cold request was observed: a worker was already up (lower the endpoint's idle "
                "timeout or use `--idle-wait`).")]

    out += ["", "## Cost per 1,000 images", "",
            (f"GPU: **{gpu['label']}** ({gpu['pool'] or 'no pool id'}, {gpu['memory_gb']} GB) at "
            f"${gpu['usd_per_second']:.5f}/s (${gpu['usd_per_hour']:.2f}/h), prices as of {gpu['as_of']} — "
            f"{gpu['source']}."), "",
            "| pipeline | basis | warm requests | s per image | per 1,000 images | cold start s | per cold start |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in s["costs"]:
        out.append(f"| {c['pipeline']} | {c['basis']} | {c['warm_requests']} | {_s(c.get('seconds_per_image'), 3)} "
                   f"| {_usd(c.get('usd_per_1000_images'))} | {_s(c.get('cold_start_s'))} "
                   f"| {_usd(c.get('usd_per_cold_start'))} |")
    out += ["", ("Warm cost = mean execution time × price (what steady traffic pays). Not included: the idle "
            "timeout billed after each burst (default 5 s) and queue time without a worker.")]

    out += ["", "## Failures", ""]
    if s["failures"]:
        out += ["Identical failures are grouped; job ids are in report.json.", "",
                "| case | modes | requests | status | error |", "| --- | --- | --- | --- | --- |"]
        for g in s["failure_groups"]:
            out.append(f"| {g['case']} | {', '.join(g['modes'])} | {', '.join(f'#{n}' for n in g['requests'])} "
                       f"| {g['status']} | {_cell(g['error'] or '')} |")
    else:
        out.append("None.")
    if s["stuck"]:
        out += ["", "## Stuck jobs", "", "| # | case | mode | job | stuck in | cancel |", "| ---: | --- | --- | --- | --- | --- |"]
        for st in s["stuck"]:
            out.append(f"| {st['seq']} | {st['case']} | {st['mode']} | {st['job_id']} | {st['state']} | {_cell(st['cancel'])} |")
    if s["warnings"]:
        out += ["", "## Warnings", ""] + [f"- #{w['seq']} {w['case']} {w['image']}: {w['warning']}" for w in s["warnings"]]

    safety = [a for a in report["attempts"] if a.get("safety")]
    if safety:
        out += ["", "## Safety checks (full pipeline)", ""]
        seen = set()
        for a in safety:
            key = a["case"]
            if key in seen:
                continue
            seen.add(key)
            text = json.dumps(a["safety"], ensure_ascii=False)
            out.append(f"- {a['case']} (#{a['seq']}): {_cell(text[:600])}")

    out += ["", "## Every request", "",
            "| # | case | mode | phase | status | latency s | delay s | execution s | images | job |",
            "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for a in report["attempts"]:
        imgs = ", ".join(
            f"{c['width']}x{c['height']} {c['mode']}" if c["ok"] else f"✗ {c['problem']}" for c in a["images"]
        )
        out.append(f"| {a['seq']} | {a['case']} | {a['mode']} | {a['phase']} | {a['status']} | {_s(a['latency_s'])} "
                   f"| {_ms_as_s(a['delay_ms'])} | {_ms_as_s(a['execution_ms'])} | {_cell(imgs)} | {a['job_id'] or ''} |")
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path


def utc_now() -> datetime:
    return datetime.now(UTC)
