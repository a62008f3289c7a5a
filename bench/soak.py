"""The soak: many jobs through one worker process, its resident memory sampled after every job.

    python bench/soak.py                      # 1,000 jobs
    python bench/soak.py --jobs 200 --big-every 0   # shorter, no 12 MP images

One JobProcessor (the handler's logic, in this process) over engines built by the worker's own
factory from a models folder of test stand-ins (tests/test_full_pipeline.py: the BEN2 stand-in,
a tiny random Florence-2, NudeNet's real detector, a tiny GGUF classifier; fixtures, not the
product's models). Jobs mix both request formats (the simple task API and the user's two
workflows), both pipelines, sizes from 0.1 MP to 12 MP (every ``--big-every``-th job; JPEG in,
JPEG/WebP out so a 12 MP answer fits RunPod's 20 MB) and a few bad requests.

Reported: RSS after the warm-up (``--warmup`` jobs) and at the end, its growth over the jobs
after the warm-up (the target: under 50 MB over the last 900 of 1,000), the least-squares slope
in MB per 100 jobs, the peak, and open file descriptors and threads (OS threads, onnxruntime's
and torch's pools included) before and after. Every job's answer must be the expected one
(allowed/success, or an error for a bad request). The project's machine is a shared, loaded
2-core one: seconds per job mean little. JSON goes to bench/results/soak.json."""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from benchlib import commit  # noqa: E402
from PIL import Image  # noqa: E402

WORKFLOWS = ROOT / "workflows"
SIMPLE_WORKFLOW = "BG_remove_BEN2_simple_2nd.api.json"
FULL_WORKFLOW = "BG_remove_BEN2_simple_1st.api.json"
#: (width, height) of the ordinary jobs, in turn; the big one every ``big_every`` jobs.
SIZES = ((320, 240), (640, 480), (1024, 768), (1280, 960), (1600, 1200), (800, 1200), (2048, 1536), (2400, 1800))
BIG = (4000, 3000)  # 12 MP
#: Of every 20 jobs: which kind each is (full-pipeline jobs are the slow ones).
KINDS = ("simple", "comfy", "simple", "comfy-full", "simple", "comfy", "simple-full", "simple", "comfy", "bad",
         "simple", "comfy", "simple", "comfy-full", "simple", "comfy", "simple", "simple-full", "comfy", "simple")


# ----------------------------------------------------------------------------- process figures


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- jobs


class JobMaker:
    """Deterministic jobs; encoded inputs cached per size (the worker decodes them every time)."""

    def __init__(self, *, big_every: int = 25):
        from conftest import subject_photo

        self.big_every = big_every
        self._photo = subject_photo
        self._encoded: dict[tuple, str] = {}
        self._workflows = {name: (WORKFLOWS / name).read_text() for name in (SIMPLE_WORKFLOW, FULL_WORKFLOW)}

    def _b64(self, size: tuple[int, int], fmt: str) -> str:
        key = (size, fmt)
        if key not in self._encoded:
            buf = io.BytesIO()
            Image.fromarray(self._photo(*size)).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            self._encoded[key] = base64.b64encode(buf.getvalue()).decode()
        return self._encoded[key]

    def job(self, n: int) -> tuple[dict, str, tuple[int, int]]:
        """(job, kind, size) for job number ``n``."""
        kind = KINDS[n % len(KINDS)]
        big = self.big_every and n % self.big_every == self.big_every - 1
        if big:
            kind = "simple-full" if n % (2 * self.big_every) == 2 * self.big_every - 1 else "simple"
        size = BIG if big else SIZES[n % len(SIZES)]
        if kind == "bad":
            return {"id": f"soak-{n}", "input": {"image": "data:image/png;base64,@@@"}}, kind, size
        if kind.startswith("simple"):
            inp = {"image": self._b64(size, "JPEG" if big else "PNG"),
                   "pipeline": "full" if kind.endswith("full") else "simple",
                   "output": {"format": ("jpeg", "webp")[n % 2] if big else "png", "return_mask": n % 3 == 0}}
            return {"id": f"soak-{n}", "input": inp}, kind, size
        workflow = json.loads(self._workflows[FULL_WORKFLOW if kind.endswith("full") else SIMPLE_WORKFLOW])
        name = f"soak-{n}.png"
        for node in workflow.values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = name
        return {"id": f"soak-{n}", "input": {"workflow": workflow, "images": [{"name": name, "image": self._b64(size, "PNG")}]}}, kind, size


def check_answer(kind: str, size: tuple[int, int], out: dict) -> str | None:
    """None when the answer is the one expected, else what is wrong."""
    if kind == "bad":
        return None if "error" in out and "internal error" not in out["error"] and "input.image" in out["error"] else f"bad job answered {str(out)[:200]}"
    if "error" in out:
        return f"{kind} failed: {out['error'][:300]}"
    images = out.get("images") or []
    if not images:
        return f"{kind}: no images: {str(out)[:200]}"
    entry = images[0]
    if kind.startswith("simple") and (entry.get("status") not in ("success", "allowed") or (entry["width"], entry["height"]) != size):
        return f"{kind}: {entry.get('status')} {entry.get('width')}x{entry.get('height')}, expected {size}"
    return None


# ----------------------------------------------------------------------------- the run


def build_worker(models_root: Path):
    """The job processor over the worker's own engine factory and full stand-in models."""
    from test_full_pipeline import build_full_models, settings_for

    from ben2_worker.api.delivery import Delivery
    from ben2_worker.api.jobs import JobProcessor
    from ben2_worker.engines import build_engines

    models = build_full_models(models_root, "SAFE")
    engines = build_engines(settings_for(models), pipelines=("simple", "full"))
    return JobProcessor(engines, delivery=Delivery())


def _settle() -> None:
    """Let threads that just finished their work exit, and free what is garbage."""
    gc.collect()
    time.sleep(0.2)


def soak(worker, jobs: int, *, warmup: int = 100, big_every: int = 25, log_every: int = 50) -> dict:
    maker = JobMaker(big_every=big_every)
    for n in range(min(len(KINDS), jobs)):  # encode the inputs up front: the cache is not the worker's memory
        maker.job(n)
    maker.job(big_every - 1) if big_every and jobs >= big_every else None
    _settle()
    start = {"rss_mb": round(rss_mb(), 1), "fds": open_fds(), "os_threads": os_threads(),
             "python_threads": threading.active_count()}
    rss, seconds, failures, kinds = [], [], [], {}
    at_warmup = None
    t_start = time.perf_counter()
    for n in range(jobs):
        job, kind, size = maker.job(n)
        t0 = time.perf_counter()
        out = worker(job)
        seconds.append(time.perf_counter() - t0)
        problem = check_answer(kind, size, out)
        if problem:
            failures.append(f"job {n}: {problem}")
        kinds[kind] = kinds.get(kind, 0) + 1
        del out, job
        rss.append(rss_mb())
        if n + 1 == warmup:
            _settle()
            at_warmup = {"rss_mb": round(rss_mb(), 1), "fds": open_fds(), "os_threads": os_threads(),
                         "python_threads": threading.active_count()}
        if log_every and (n + 1) % log_every == 0:
            print(f"soak: {n + 1:5d} jobs  rss {rss[-1]:7.1f} MB  fds {open_fds():3d}  threads {os_threads():3d}  "
                  f"{time.perf_counter() - t_start:6.0f} s", flush=True)
    _settle()
    end = {"rss_mb": round(rss_mb(), 1), "fds": open_fds(), "os_threads": os_threads(),
           "python_threads": threading.active_count()}
    return summarize(rss, seconds, start, at_warmup or start, end, warmup, failures, kinds, time.perf_counter() - t_start)


def summarize(rss, seconds, start, at_warmup, end, warmup, failures, kinds, total_s) -> dict:
    after = np.asarray(rss[warmup:]) if len(rss) > warmup else np.asarray(rss)
    slope = float(np.polyfit(np.arange(len(after)), after, 1)[0]) * 100 if len(after) > 1 else 0.0
    curve = {str(n): round(rss[n - 1], 1) for n in sorted({1, 10, 50, *range(100, len(rss) + 1, 100), len(rss)})
             if 0 < n <= len(rss)}
    return {
        "jobs": len(rss), "warmup_jobs": warmup, "kinds": dict(sorted(kinds.items())), "failures": len(failures),
        "failure_examples": failures[:10], "seconds": round(total_s, 1),
        "seconds_per_job": {"p50": round(float(np.percentile(seconds, 50)), 3),
                            "p95": round(float(np.percentile(seconds, 95)), 3), "max": round(max(seconds), 3)},
        "rss_mb": {"start": start["rss_mb"], "after_warmup": at_warmup["rss_mb"], "end": end["rss_mb"],
                   "peak": round(max(rss), 1), "growth_after_warmup": round(end["rss_mb"] - at_warmup["rss_mb"], 1),
                   "max_above_warmup": round(float(after.max()) - at_warmup["rss_mb"], 1),
                   "slope_per_100_jobs": round(slope, 2), "curve": curve},
        "fds": {"start": start["fds"], "after_warmup": at_warmup["fds"], "end": end["fds"]},
        "os_threads": {"start": start["os_threads"], "after_warmup": at_warmup["os_threads"], "end": end["os_threads"]},
        "python_threads": {"start": start["python_threads"], "after_warmup": at_warmup["python_threads"],
                           "end": end["python_threads"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--big-every", type=int, default=25, help="a 12 MP job every N jobs (0: none)")
    parser.add_argument("--limit-mb", type=float, default=50.0, help="allowed RSS growth after the warm-up")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ben2-soak-") as tmp:
        t0 = time.perf_counter()
        worker = build_worker(Path(tmp) / "models")
        print(f"soak: engines loaded in {time.perf_counter() - t0:.1f} s; {args.jobs} jobs, warm-up {args.warmup}")
        result = soak(worker, args.jobs, warmup=args.warmup, big_every=args.big_every)
    r = result["rss_mb"]
    print(f"soak: {result['jobs']} jobs in {result['seconds']} s ({result['failures']} unexpected answers); "
          f"RSS {r['start']} MB at start, {r['after_warmup']} MB after {args.warmup} jobs, {r['end']} MB at the end "
          f"(growth {r['growth_after_warmup']} MB over the last {result['jobs'] - args.warmup}, slope "
          f"{r['slope_per_100_jobs']} MB/100 jobs, peak {r['peak']} MB); fds {result['fds']}; OS threads {result['os_threads']}")
    for failure in result["failure_examples"]:
        print("soak: unexpected:", failure)
    result.update(commit=commit(), limit_mb=args.limit_mb,
                  note="test stand-in models (fixtures, not the product's); a shared, loaded 2-core machine")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"soak: written to {args.json}")
    leaked = result["fds"]["end"] > result["fds"]["after_warmup"] or result["os_threads"]["end"] > result["os_threads"]["after_warmup"]
    return 1 if result["failures"] or leaked or r["growth_after_warmup"] > args.limit_mb else 0


if __name__ == "__main__":
    sys.exit(main())
