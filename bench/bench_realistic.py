"""Benchmark with real compute: ben2-worker vs rembg vs the user's node chain on a BEN2-sized model.

    python bench/bench_realistic.py [--sizes 1,4,12] [--repeats 1] [--model PATH]
                                    [--no-rembg] [--no-user-chain] [--startup-runs 1] [--json PATH]

The model is the realistic stand-in (bench/realistic_standin.py: ~90 M parameters, BEN2's I/O,
RANDOM WEIGHTS — its matte is meaningless, so these numbers are time, memory and load cost
only), built once into a cache outside the clone. Each size gets, in the same process:

* ben2-worker: per-stage medians (decode, resize, inference, matte, upscale, compose, encode),
  end-to-end p50/p95 over the repeats, images/s one at a time, peak RSS while it ran;
* rembg's ``ben_custom`` session on the same file (``remove(bytes)``, its whole path);
* the re-created user chain (bench/bench_cutout.py's ``run_user_chain``) on our session;

and the ratios. Then session creation in this process (the optimiser run vs the optimised graph
from the cache, and rembg's ``new_session``) and process start -> ready in fresh interpreters:
ours (imports + engine load), rembg's (import + new_session) and the user chain's floor
(``import torch`` + a default onnxruntime session, as a ComfyUI worker with the user's node).

With few repeats the p95 is the slowest run (nearest rank): say so when quoting it. The machine this
runs on is shared and loaded; compare ratios, not absolute times. Results: a table on stdout
and JSON in bench/results/ (one file per commit).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import commit, write_results  # noqa: E402
from bench_cutout import WORKFLOW_MATTE, make_input, make_rembg, run_ours, run_user_chain  # noqa: E402

STANDIN_NOTE = (
    "realistic BEN2 stand-in (benchmark fixture: ~90 M parameters, random weights, meaningless matte; "
    "time, memory and load cost only)"
)


# ----------------------------------------------------------------------------- measurement


class PeakRSS:
    """Peak resident set size of this process while the block runs, sampled every 5 ms
    (``ru_maxrss`` is a lifetime maximum, useless for comparing stages in one process)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRSS":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 2 samples, p95 is the slower one)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summarise(totals: list[float], rss: int) -> dict:
    return {
        "runs": len(totals),
        "p50_s": statistics.median(totals),
        "p95_s": percentile(totals, 95),
        "images_per_s": len(totals) / sum(totals),
        "peak_rss_mb": rss / 2**20,
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ben2_worker.runtime import available_cpus

    return {
        "cpu": cpu,
        "cpus_usable": available_cpus(),
        "loadavg_at_start": loadavg(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "note": "shared 2-core machine, loaded by other agents: compare ratios, not absolute times",
    }


# ------------------------------------------------------------------------- start -> ready


_READY_OURS = """
import sys, time
t0 = float(sys.argv[1])
from ben2_worker.ben2 import Ben2Model
from ben2_worker.cutout import CutoutEngine
CutoutEngine(Ben2Model(sys.argv[2], threads={threads}))
print("READY", time.time() - t0, flush=True)
"""

_READY_REMBG = """
import os, sys, time
t0 = float(sys.argv[1])
os.environ["U2NET_HOME"] = os.path.dirname(sys.argv[2])
from rembg import new_session
new_session("ben_custom", model_path=sys.argv[2])
print("READY", time.time() - t0, flush=True)
"""

_READY_USER = """
import sys, time
t0 = float(sys.argv[1])
import torch, numpy, PIL.Image, onnxruntime
onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
print("READY", time.time() - t0, flush=True)
"""


def start_to_ready(code: str, model: Path, env: dict) -> float:
    """Seconds from spawning a fresh interpreter to its READY line (interpreter start included)."""
    proc = subprocess.run([sys.executable, "-c", code, repr(time.time()), str(model)], env=env,
                          capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("READY"):
            return float(line.split()[1])
    raise RuntimeError(f"start -> ready probe failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")


def measure_startup(model: Path, runs: int, threads: int | None, with_rembg: bool, with_user: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out: dict = {}
    cache = model.parent / ".ort-cache"
    # The first start after a fresh install runs the optimiser and fills the cache.
    shutil.rmtree(cache, ignore_errors=True)
    out["ours_first_start_s"] = start_to_ready(_READY_OURS.format(threads=threads), model, env)
    out["ours_s"] = statistics.median(
        start_to_ready(_READY_OURS.format(threads=threads), model, env) for _ in range(runs))
    if with_rembg:
        try:
            out["rembg_s"] = statistics.median(start_to_ready(_READY_REMBG, model, env) for _ in range(runs))
        except RuntimeError as exc:
            print(f"rembg start -> ready failed: {exc}")
    if with_user:
        try:
            out["user_chain_floor_s"] = statistics.median(start_to_ready(_READY_USER, model, env) for _ in range(runs))
        except RuntimeError as exc:
            print(f"user-chain start -> ready failed (torch missing?): {exc}")
    return out


def measure_session_creation(model: Path, threads: int | None) -> dict:
    """Session creation in this process: optimiser on (no cache), first start (optimise and
    save), cache hit (optimiser skipped)."""
    from ben2_worker.ben2 import Ben2Model

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cache in (("optimiser_no_cache_s", False), ("first_start_fill_cache_s", Path(tmp)),
                             ("cache_hit_s", Path(tmp))):
            m = Ben2Model(model, threads=threads, cache=cache)
            out[label] = m.load.seconds
            if label == "cache_hit_s" and not m.load.optimized_from_cache:
                raise RuntimeError("the optimised-model cache was not used on the second load")
            del m
    return out


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,12", help="megapixels, comma-separated")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per pipeline and size")
    ap.add_argument("--model", type=Path, help="a BEN2-contract ONNX file (default: the realistic stand-in)")
    ap.add_argument("--threads", type=int, help="intra-op threads (default: all usable CPUs)")
    ap.add_argument("--no-rembg", action="store_true")
    ap.add_argument("--no-user-chain", action="store_true")
    ap.add_argument("--no-warmup", action="store_true", help="no untimed run at all (a loaded machine, few minutes)")
    ap.add_argument("--warmup-each", action="store_true",
                    help="an untimed run per pipeline and size (default: one untimed inference per session)")
    ap.add_argument("--startup-runs", type=int, default=1, help="fresh-process start -> ready runs (0: skip)")
    ap.add_argument("--json", type=Path, help="default: bench/results/realistic-<commit>.json")
    args = ap.parse_args(argv)

    from ben2_worker.ben2 import Ben2Model
    from ben2_worker.cutout import CutoutEngine, CutoutOptions

    if args.model is None:
        from realistic_standin import ensure_standin

        model_path, model_note = ensure_standin(), STANDIN_NOTE
    else:
        model_path, model_note = args.model, f"user-supplied model {args.model}"
    print(f"model: {model_note}\n  file: {model_path} ({model_path.stat().st_size / 1e6:.0f} MB)")
    label = "realistic BEN2 stand-in, meaningless matte" if args.model is None else args.model.name
    report: dict = {"commit": commit(), "machine": machine(), "model": {"note": model_note, "label": label,
                    "path": str(model_path), "bytes": model_path.stat().st_size}, "sizes": {}}
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cpus_usable']} usable CPUs, "
          f"load average {report['machine']['loadavg_at_start']} (shared, loaded)")

    report["session_creation"] = measure_session_creation(model_path, args.threads)
    model = Ben2Model(model_path, threads=args.threads)
    engine = CutoutEngine(model)
    rembg_run = None
    if not args.no_rembg:
        t0 = time.perf_counter()
        rembg_run = make_rembg(model_path)
        if rembg_run is not None:
            report["session_creation"]["rembg_new_session_s"] = time.perf_counter() - t0
    options = CutoutOptions(matte=WORKFLOW_MATTE)
    threads = model.session.get_session_options().intra_op_num_threads
    print(f"threads: {threads}, providers: {', '.join(model.info.providers)}; {args.repeats} timed run(s) per "
          f"pipeline and size after "
          f"{'no warm-up' if args.no_warmup else 'a warm-up each' if args.warmup_each else 'one warm-up per session'}\n")
    first = make_input(min(float(s) for s in args.sizes.split(",")))
    if not args.no_warmup:
        run_ours(engine, first, options)  # grows our session's arena once (the user chain shares it)
        if rembg_run is not None:
            rembg_run(first)  # ... and rembg's

    for mp in [float(s) for s in args.sizes.split(",")]:
        data = make_input(mp)
        entry: dict = {"input_bytes": len(data)}
        if args.warmup_each:
            run_ours(engine, data, options)
        with PeakRSS() as rss:
            ours = [run_ours(engine, data, options) for _ in range(args.repeats)]
        stages = {s: statistics.median(t.seconds.get(s, 0.0) for t in ours) for s in ours[0].seconds}
        entry["ours"] = {**summarise([t.total() for t in ours], rss.peak), "stages_s": stages}
        if not args.no_user_chain:
            if args.warmup_each:
                run_user_chain(model, data)
            with PeakRSS() as rss:
                user = [run_user_chain(model, data) for _ in range(args.repeats)]
            entry["user_chain"] = {**summarise([t.total() for t in user], rss.peak),
                                   "stages_s": {s: statistics.median(t.seconds.get(s, 0.0) for t in user)
                                                for s in user[0].seconds}}
        if rembg_run is not None:
            if args.warmup_each:
                rembg_run(data)
            with PeakRSS() as rss:
                rem = [rembg_run(data).total() for _ in range(args.repeats)]
            entry["rembg"] = summarise(rem, rss.peak)
        report["sizes"][f"{mp:g}MP"] = entry
        print_size(mp, entry, report["model"]["label"])

    if args.startup_runs > 0:
        report["start_to_ready"] = measure_startup(model_path, args.startup_runs, args.threads,
                                                   rembg_run is not None, not args.no_user_chain)
    print_footer(report)
    print()
    write_results(report, "realistic", args.json)
    return report


def print_size(mp: float, entry: dict, label: str) -> None:
    ours = entry["ours"]
    print(f"=== {mp:g} MP  ({label}; ms)")
    print("  ben2-worker stages: " + "  ".join(f"{k} {v * 1000:.0f}" for k, v in ours["stages_s"].items()))
    rows = [("ben2-worker", ours)] + [(name, entry[key]) for name, key in
                                      (("user's chain", "user_chain"), ("rembg", "rembg")) if key in entry]
    print(f"  {'pipeline':<13} {'p50 ms':>9} {'p95 ms':>9} {'img/s':>7} {'peak RSS MB':>12} {'p50 / ours':>11}")
    for name, r in rows:
        print(f"  {name:<13} {r['p50_s'] * 1000:9.0f} {r['p95_s'] * 1000:9.0f} {r['images_per_s']:7.3f} "
              f"{r['peak_rss_mb']:12.0f} {r['p50_s'] / ours['p50_s']:10.2f}x")
    if "user_chain" in entry:
        u = entry["user_chain"]["stages_s"]
        o_rest = ours["p50_s"] - ours["stages_s"].get("inference", 0.0)
        u_rest = sum(v for k, v in u.items() if k != "inference")
        print(f"  outside inference: ben2-worker {o_rest * 1000:.0f} ms, user's chain {u_rest * 1000:.0f} ms "
              f"-> {u_rest / o_rest:.1f}x")
    print()


def print_footer(report: dict) -> None:
    s = report["session_creation"]
    print("session creation in-process (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in s.items()))
    if "start_to_ready" in report:
        r = report["start_to_ready"]
        line = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in r.items())
        print(f"process start -> ready (s): {line}")
        for other in ("rembg_s", "user_chain_floor_s"):
            if other in r:
                print(f"  {other.removesuffix('_s')} / ours: {r[other] / r['ours_s']:.2f}x")


if __name__ == "__main__":
    main()
