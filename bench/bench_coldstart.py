"""Cold start: time from process start to the first finished simple job, models on local disk.

    python bench/bench_coldstart.py [--models DIR] [--runs 5]

Each run is a fresh interpreter doing what a RunPod worker does on a cold start: import the
worker, load the models (``BEN2_WORKER_PIPELINES=simple``), then run ``test_input.json``
through the runpod SDK's one-shot local mode and exit. With no --models it uses the BEN2
stand-in (a test fixture: real loading code, trivial weights), so the number is the worker's
own overhead; the real 223 MB model adds its session-creation time.

Baselines in the same run: an empty interpreter, and ``import torch`` (the floor of any
torch-based worker, such as ComfyUI with the user's node pack, before it loads anything).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="models folder (default: build the BEN2 stand-in)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    env = {**os.environ, "BEN2_WORKER_PIPELINES": "simple", "BEN2_WORKER_LOG_LEVEL": "WARNING"}
    tmp = tempfile.TemporaryDirectory()
    if args.models is None:
        from standin_models import build_models_dir

        env["BEN2_WORKER_MODELS"] = str(build_models_dir(tmp.name))
        env["BEN2_WORKER_ALLOW_CUSTOM_MODELS"] = "1"
        print("models: BEN2 stand-in (test fixture)")
    else:
        env["BEN2_WORKER_MODELS"] = str(args.models)
        print(f"models: {args.models}")

    test_input = json.loads((ROOT / "test_input.json").read_text())
    worker_cmd = [sys.executable, "-m", "ben2_worker.handler", "--test_input", json.dumps(test_input)]
    runs = []
    for _ in range(args.runs):
        elapsed, out = timed(worker_cmd, env)
        if '"error"' in out and "COMPLETED" not in out and "images" not in out:
            raise SystemExit(f"the job failed:\n{out[-3000:]}")
        runs.append(elapsed)
    empty = statistics.median(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(args.runs))
    worker = statistics.median(runs)
    print(f"process start -> first finished simple job: median {worker * 1000:.0f} ms over {args.runs} runs "
          f"(min {min(runs) * 1000:.0f}, max {max(runs) * 1000:.0f})")
    print(f"empty interpreter: {empty * 1000:.0f} ms")
    try:
        torch_t = statistics.median(timed([sys.executable, "-c", "import torch"], env)[0] for _ in range(args.runs))
        print(f"`import torch` alone: {torch_t * 1000:.0f} ms (the floor of a torch-based worker before it loads "
              f"anything); our whole cold start / that floor = {worker / torch_t:.2f}")
    except SystemExit:
        print("`import torch`: torch is not installed in this environment (the simple worker does not need it)")


if __name__ == "__main__":
    main()
