"""The GPU machine's half of bench/gpu.sh: build the realistic stand-in there, time it through
whatever GPU runtime is present, time our CPU pre/post-processing there, write one table.

    python bench/gpu_bench.py --out DIR [--budget-s 420] [--runs 20] [--tiny]

For a machine with an NVIDIA GPU and no network, onto which only this repository is copied.
Runtimes are tried in this order, each under the time left:

1. onnxruntime with TensorrtExecutionProvider / CUDAExecutionProvider, when that build is
   installed (the product's own path: ``Ben2Model(providers=...)``);
2. else the same network in torch on CUDA, fp16 and fp32 — a PROXY, labelled as such: it is
   not the ONNX file the worker runs, but the same layers and shapes;
3. onnxruntime on the CPU at 8 and all threads (a CPU endpoint's numbers on a bigger host).

Then our pre/post-processing (decode, resize, matte, upscale, compose, PNG encode) at 1, 4 and
12 MP on this machine's CPU with the cheap stand-in (tests/standin_models.py), so the table says
how much CPU work one GPU inference leaves per image. The stand-ins are BENCHMARK FIXTURES with
RANDOM WEIGHTS: time and memory only. ``--tiny`` builds a toy-sized stand-in (for the CPU-only
test of this script); its timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

TINY = {"size": 256, "depths": (1, 1, 1, 1), "width": 16}


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def gpu_facts() -> dict:
    facts: dict = {"host": platform.node(), "cpus": len(os.sched_getaffinity(0))}
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        facts["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    else:
        facts["nvidia_smi"] = "not found"
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["ort_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        facts["onnxruntime"] = None
        facts["ort_providers"] = []
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = bool(torch.cuda.is_available())
        if facts["torch_cuda"]:
            facts["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        facts["torch"] = None
        facts["torch_cuda"] = False
    return facts


def timed_runs(fn, runs: int, budget: Budget, per_run_guess: float) -> list[float]:
    """Run ``fn`` up to ``runs`` times, stopping early when the budget would run out."""
    times: list[float] = []
    for _ in range(runs):
        if times and budget.left() < 2 * max(times[-1], per_run_guess):
            break
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"runs": len(times), "p50_ms": statistics.median(times) * 1000,
            "p95_ms": ordered[max(0, -(-95 * len(ordered) // 100) - 1)] * 1000, "min_ms": ordered[0] * 1000}


def ort_rows(model: Path, facts: dict, budget: Budget, runs: int, size: int) -> list[dict]:
    import numpy as np

    from ben2_worker.ben2 import Ben2Model

    rows: list[dict] = []
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    gpu = [p for p in ("tensorrt", "cuda") if {"tensorrt": "TensorrtExecutionProvider",
                                                 "cuda": "CUDAExecutionProvider"}[p] in facts["ort_providers"]]
    for name in gpu:
        if budget.left() < 60:
            break
        try:
            t0 = time.perf_counter()
            m = Ben2Model(model, providers=name, cache=False)
            created = time.perf_counter() - t0
            m.predict(x)  # first run: TensorRT builds its engine here
            times = timed_runs(lambda: m.predict(x), runs, budget, 0.2)
            rows.append({"runtime": f"onnxruntime {name} ({', '.join(m.info.providers)})", "session_s": created,
                         **summary(times), "label": "MEASURED: the worker's own path"})
        except Exception as exc:  # noqa: BLE001 - report, do not stop the table
            rows.append({"runtime": f"onnxruntime {name}", "error": str(exc)[:300]})
    for threads in sorted({min(8, facts["cpus"]), facts["cpus"]}):
        if budget.left() < 45:
            rows.append({"runtime": f"onnxruntime CPU {threads} threads", "error": "skipped: time budget"})
            continue
        t0 = time.perf_counter()
        m = Ben2Model(model, providers="cpu", threads=threads, cache=False)
        created = time.perf_counter() - t0
        m.predict(x)
        times = timed_runs(lambda: m.predict(x), min(runs, 3), budget, 5.0)
        rows.append({"runtime": f"onnxruntime CPU, {threads} intra-op threads", "session_s": created, **summary(times),
                     "label": "MEASURED on this host's CPU"})
    return rows


def torch_rows(facts: dict, budget: Budget, runs: int, shape: dict) -> list[dict]:
    if not facts.get("torch_cuda"):
        return []
    import torch

    from realistic_standin import build_network

    rows = []
    for dtype in (torch.float16, torch.float32):
        if budget.left() < 45:
            break
        net = build_network(shape["size"], shape["depths"], width=shape["width"], float16_output=False).cuda()
        x = torch.rand(1, 3, shape["size"], shape["size"], device="cuda")
        if dtype == torch.float16:
            net = net.half()
            x = x.half()

        def run():
            with torch.inference_mode():
                net(x)
            torch.cuda.synchronize()

        run(), run()  # cuDNN autotuning, allocator growth
        times = timed_runs(run, runs, budget, 0.1)
        rows.append({"runtime": f"torch CUDA {str(dtype).removeprefix('torch.')} ({facts.get('torch_device')})",
                     **summary(times), "label": "PROXY: same network in torch, not the ONNX file the worker runs"})
        del net
        torch.cuda.empty_cache()
    return rows


def cpu_stage_rows(budget: Budget, sizes: list[float], repeats: int) -> list[dict]:
    """Our work around the model at each size, with the cheap stand-in (inference ~free)."""
    from bench_cutout import WORKFLOW_MATTE, make_input, run_ours
    from ben2_worker.ben2 import Ben2Model
    from ben2_worker.cutout import CutoutEngine, CutoutOptions
    from standin_models import build_ben2_standin

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = CutoutEngine(Ben2Model(build_ben2_standin(Path(tmp) / "cheap.onnx"), cache=False))
        options = CutoutOptions(matte=WORKFLOW_MATTE)
        for mp in sizes:
            if budget.left() < 20:
                rows.append({"size_mp": mp, "error": "skipped: time budget"})
                continue
            data = make_input(mp)
            run_ours(engine, data, options)
            runs = [run_ours(engine, data, options) for _ in range(repeats)]
            stages = {s: statistics.median(r.seconds.get(s, 0.0) for r in runs) * 1000 for s in runs[0].seconds}
            stages.pop("inference", None)
            rows.append({"size_mp": mp, "stages_ms": stages, "total_ms_excl_inference": sum(stages.values())})
    return rows


def write_table(out: Path, report: dict) -> Path:
    f = report["facts"]
    lines = [
        "# GPU benchmark (bench/gpu.sh)",
        "",
        f"Host: {f['host']}, {f['cpus']} CPUs; GPU: {f['nvidia_smi']}; onnxruntime {f['onnxruntime']} "
        f"(providers: {', '.join(f['ort_providers']) or 'none'}); torch {f['torch']} (CUDA: {f['torch_cuda']}).",
        f"Model: {report['model']}",
        "",
        f"## Inference, one {report['input_side']}² image",
        "",
        "| runtime | label | session s | p50 ms | p95 ms | runs |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["inference"]:
        if "error" in r:
            lines.append(f"| {r['runtime']} | not measured: {r['error']} | | | | |")
        else:
            sess = f"{r['session_s']:.2f}" if "session_s" in r else ""
            lines.append(f"| {r['runtime']} | {r['label']} | {sess} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['runs']} |")
    if not report["gpu_measured"]:
        lines.append("| (GPU) | NO GPU RUNTIME MEASURED: no onnxruntime GPU provider and no torch with CUDA worked "
                     "here | | | | |")
    lines += ["", "## Our CPU work per image (everything but inference), this host's CPU", "",
              "| size | stages (ms) | total ms |", "| --- | --- | ---: |"]
    for r in report["cpu_stages"]:
        if "error" in r:
            lines.append(f"| {r['size_mp']:g} MP | {r['error']} | |")
        else:
            st = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_ms"].items())
            lines.append(f"| {r['size_mp']:g} MP | {st} | {r['total_ms_excl_inference']:.0f} |")
    lines += ["", f"Wall time of the whole script: {report['wall_s']:.0f} s (budget {report['budget_s']:.0f} s).",
              "Stand-ins are benchmark fixtures with random weights: time and memory only, meaningless mattes.", ""]
    path = out / "gpu-table.md"
    path.write_text("\n".join(lines))
    (out / "gpu-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new measurements after this")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sizes", default="1,4,12")
    ap.add_argument("--tiny", action="store_true", help="toy-sized stand-in and 0.3 MP inputs (tests)")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    budget = Budget(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BEN2_WORKER_BENCH_CACHE", str(args.out / "standins"))

    facts = gpu_facts()
    print(f"facts: {json.dumps(facts)}", flush=True)
    shape = TINY if args.tiny else {"size": 1024, "depths": None, "width": None}
    from realistic_standin import DEPTHS, EMBED_DIM, STANDIN_LABEL, ensure_standin

    shape = {"size": shape["size"], "depths": shape["depths"] or DEPTHS, "width": shape["width"] or EMBED_DIM}
    report: dict = {"facts": facts, "budget_s": args.budget_s, "inference": [], "cpu_stages": [],
                    "model": STANDIN_LABEL + (" — TINY toy size (--tiny): timings mean nothing" if args.tiny else "")}
    model = None
    if facts["onnxruntime"]:
        try:
            t0 = time.perf_counter()
            model = ensure_standin(size=shape["size"], depths=shape["depths"], width=shape["width"])
            report["build_s"] = time.perf_counter() - t0
        except ImportError as exc:
            report["inference"].append({"runtime": "stand-in build", "error": f"needs torch and onnx: {exc}"})
    if model is not None:
        report["inference"] += ort_rows(model, facts, budget, args.runs, shape["size"])
    if not any("onnxruntime" in r["runtime"] and "CPU" not in r["runtime"] and "error" not in r
               for r in report["inference"]):
        report["inference"][:0] = torch_rows(facts, budget, args.runs, shape)  # no ORT GPU: the torch proxy
    report["input_side"] = shape["size"]
    report["gpu_measured"] = any("error" not in r and "CPU" not in r["runtime"] for r in report["inference"])
    sizes = [0.3] if args.tiny else [float(s) for s in args.sizes.split(",")]
    report["cpu_stages"] = cpu_stage_rows(budget, sizes, 1 if args.tiny else 3)
    report["wall_s"] = time.monotonic() - t_start
    path = write_table(args.out, report)
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
