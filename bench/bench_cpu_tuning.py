"""CPU endpoint tuning: onnxruntime threads, executor, graph optimisation level and memory arena
for BEN2, one configuration per fresh process, pinned to the CPU quota it simulates.

    python bench/bench_cpu_tuning.py [--model PATH] [--runs 1] [--configs default|full] [--json PATH]

Each configuration runs in its own interpreter whose affinity is cut to N CPUs (what a
container with an N-CPU quota can use), creates a session with the optimised-graph cache OFF
(so the optimisation level really runs) and times ``--runs`` inferences after one warm-up: wall
time, and CPU time of all its threads (on a loaded machine the CPU time is the steadier figure:
wall time there mostly measures the other tenants), with the peak RSS. Quotas above the CPUs this machine has cannot be measured here and are reported
as not measured. With no --model it uses the realistic stand-in (bench/realistic_standin.py:
RANDOM WEIGHTS, meaningless matte; time and memory only).

The default configurations answer one question each: what a 1-CPU quota gets; what a second
intra-op thread buys; whether the parallel executor (inter-op threads) helps; basic vs extended
vs all graph optimisations; and the memory arena on vs off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

#: (cpus, intra, inter, level, arena)
DEFAULT_CONFIGS = [
    (1, 1, 1, "all", True),
    (2, 1, 1, "all", True),
    (2, 2, 1, "all", True),
    (2, 2, 2, "all", True),
    (2, 2, 1, "basic", True),
    (2, 2, 1, "extended", True),
    (2, 2, 1, "all", False),
]
FULL_EXTRA = [(4, 4, 1, "all", True), (8, 8, 1, "all", True), (2, 2, 1, "disable", True)]


def run_one(model: Path, cpus: int, intra: int, inter: int, level: str, arena: bool, runs: int) -> dict:
    """In this (fresh) process: pin, build the session, time the runs."""
    import numpy as np

    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
    from bench_realistic import PeakRSS
    from ben2_worker.runtime import create_session

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        session, _ = create_session(model, providers=["CPUExecutionProvider"], threads=intra, cache_dir=None,
                                    graph_level=level, cpu_arena=arena, inter_op_threads=inter)
        created = time.perf_counter() - t0
        inp = session.get_inputs()[0]
        x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
        session.run(None, {inp.name: x})  # warm-up: arena growth, first-run allocations
        times, cpu = [], []
        for _ in range(runs):
            t, c = time.perf_counter(), time.process_time()
            session.run(None, {inp.name: x})
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    idle = PeakRSS()._rss()
    return {"session_s": created, "inference_s": times, "inference_cpu_s": cpu, "peak_rss_mb": rss.peak / 2**20,
            "rss_after_mb": idle / 2**20, "loadavg_after": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--reduced", action="store_true",
                    help="the stand-in with Swin depths 2,2,2,2 and width 64 (same layers, ~1/10 the compute): "
                         "for a loaded machine; relative effects only")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--configs", choices=("default", "full"), default="default")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_one(args.model, **cfg, runs=args.runs)))
        return None

    from bench_realistic import STANDIN_NOTE, machine
    from benchlib import commit, write_results

    if args.model is None:
        from realistic_standin import ensure_standin

        if args.reduced:
            model = ensure_standin(depths=(2, 2, 2, 2), width=64)
            note = STANDIN_NOTE.replace("~90 M parameters", "REDUCED: depths 2,2,2,2, width 64")
        else:
            model, note = ensure_standin(), STANDIN_NOTE
    else:
        model, note = args.model, f"user-supplied model {args.model}"
    have = len(os.sched_getaffinity(0))
    configs = DEFAULT_CONFIGS + (FULL_EXTRA if args.configs == "full" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    report = {"commit": commit(), "machine": machine(), "model": note, "runs": args.runs, "rows": []}
    print(f"model: {note}\nmachine: {report['machine']['cpu']}, {have} CPUs here, load {report['machine']['loadavg_at_start']}")
    print(f"{'cpus':>4} {'intra':>5} {'inter':>5} {'level':>8} {'arena':>5} {'session s':>9} {'infer s':>8} "
          f"{'CPU s':>7} {'peak RSS MB':>11} {'RSS after MB':>12} {'load':>5}")
    for cpus, intra, inter, level, arena in configs:
        row = {"cpus": cpus, "intra": intra, "inter": inter, "level": level, "arena": arena}
        if cpus > have:
            row["measured"] = False
            print(f"{cpus:>4} {intra:>5} {inter:>5} {level:>8} {str(arena):>5}   not measured: this machine has {have} CPUs")
            report["rows"].append(row)
            continue
        one = json.dumps({"cpus": cpus, "intra": intra, "inter": inter, "level": level, "arena": arena})
        proc = subprocess.run([sys.executable, __file__, "--model", str(model), "--runs", str(args.runs), "--one", one],
                              env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"config {one} failed:\n{proc.stderr[-3000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(got, measured=True, loadavg=list(os.getloadavg()))
        report["rows"].append(row)
        med = sorted(got["inference_s"])[len(got["inference_s"]) // 2]
        cpu = sorted(got["inference_cpu_s"])[len(got["inference_cpu_s"]) // 2]
        print(f"{cpus:>4} {intra:>5} {inter:>5} {level:>8} {str(arena):>5} {got['session_s']:9.2f} {med:8.2f} "
              f"{cpu:7.2f} {got['peak_rss_mb']:11.0f} {got['rss_after_mb']:12.0f} {got['loadavg_after'][0]:5.1f}",
              flush=True)
    write_results(report, "cpu-tuning", args.json)
    return report


if __name__ == "__main__":
    main()
