"""The long fuzz run: every target of tests/fuzz_targets.py with many more cases than the
default suite, printing cases tried, crashes, hangs and memory hogs per target.

    python bench/fuzz.py                       # 300 cases per target, random seed
    python bench/fuzz.py --examples 2000 --seed 1
    python bench/fuzz.py --save-corpus         # add each target's shrunk failing input to tests/corpus

Engines are real: the BEN2 stand-in (a test fixture, not a model; built in a temporary folder)
on onnxruntime. A crash is an ``internal error: ...`` answer or an exception escaping the
handler or decoder; a hang a case over ``CASE_SECONDS``; a hog a case that grew the peak RSS
by more than ``CASE_MEMORY_MIB``. After each target two valid jobs (one per request format)
must still succeed. Timings are on whatever machine runs it (the project's is a loaded 2-core
one); JSON goes to bench/results/fuzz-<commit>.json."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzz_targets as ft  # noqa: E402
from benchlib import commit  # noqa: E402


def build_worker(models: Path):
    from standin_models import build_models_dir

    from ben2_worker.api.delivery import Delivery
    from ben2_worker.api.jobs import JobProcessor
    from ben2_worker.config import BudgetSettings, Settings
    from ben2_worker.engines import Engines, load_cutout_engine

    build_models_dir(models)
    s = Settings(models_dir=models, allow_custom_models=True, threads=1, max_pixels=4_000_000,
                 budget=BudgetSettings(max_job_pixels=12_000_000))
    return JobProcessor(Engines(cutout=load_cutout_engine(s), settings=s), delivery=Delivery(), job_timeout_s=60)


def targets(worker) -> dict:
    import numpy as np

    from ben2_worker.imaging import encode_image

    photo = encode_image(np.dstack([np.full((64, 96), 255, np.uint8), np.zeros((64, 96, 2), np.uint8)]), "png")
    upload = "photo.png"
    seeds = ft.seed_files()
    photo_b64 = ft.b64(photo)

    def job(inp):
        return {"id": "fuzz", "input": inp}

    return {
        "decode": (ft.mutated_image(seeds), lambda case: ft.judge_decode(case[0], case[1])),
        "input": (ft.json_values, lambda v: ft.judge_answer("input", repr(v)[:80], worker, job(v))),
        "input-string": (st.text(max_size=80), lambda t: ft.judge_answer("input-string", t[:80], worker, job(t))),
        "simple": (ft.simple_requests(photo_b64), lambda r: ft.judge_answer("simple", json.dumps(r)[:200], worker, job(r))),
        "graph": (ft.graphs(upload), lambda g: ft.judge_answer(
            "graph", json.dumps(g)[:200], worker, job({"workflow": g, "images": [{"name": upload, "image": photo_b64}]}))),
        "comfy-shape": (st.tuples(ft.json_values, ft.json_values), lambda wi: ft.judge_answer(
            "comfy-shape", repr(wi)[:120], worker, job({"workflow": wi[0], "images": wi[1]}))),
        "upload-simple": (ft.mutated_image(seeds), lambda c: ft.judge_answer("upload-simple", c[0], worker,
                                                                            job({"image": ft.b64(c[1])}))),
        "upload-comfy": (ft.mutated_image(seeds), lambda c: ft.judge_answer(
            "upload-comfy", c[0], worker, job({"workflow": ft.valid_workflow(upload),
                                               "images": [{"name": upload, "image": ft.b64(c[1])}]}))),
    }, [job({"image": photo_b64}), job({"workflow": ft.valid_workflow(upload), "images": [{"name": upload, "image": photo_b64}]})]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="cases per target (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--only", action="append", help="run only these targets")
    parser.add_argument("--save-corpus", action="store_true", help="write failing inputs to tests/corpus")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON summary")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        worker = build_worker(Path(tmp) / "models")
        table, valid = targets(worker)
        next_job_failures = []
        for name, (strategy, check) in table.items():
            if args.only and name not in args.only:
                continue
            body = _returning_none(check)
            test = settings(max_examples=args.examples, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))(given(strategy)(body))
            if args.seed is not None:
                test = seed(args.seed)(test)
            t0 = time.perf_counter()
            try:
                test()
                outcome = "ok"
            except ft.CaseFailed as exc:  # hypothesis re-raises the shrunk failure
                outcome = f"FAILED: {str(exc)[:300]}"
            for valid_job in valid:
                out = worker(valid_job)
                if "error" in out or not out.get("images"):
                    next_job_failures.append((name, str(out)[:200]))
            print(f"fuzz: {name:14s} {ft.TALLY.cases[name]:6d} cases  {time.perf_counter() - t0:7.1f} s  "
                  f"slowest {ft.TALLY.slowest.get(name, 0):.2f} s  {outcome}", flush=True)
        if args.save_corpus:
            for target, what, payload in ft.TALLY.inputs[-20:]:
                if payload is not None:
                    print("fuzz: saved", ft.save_case(target, what, payload, note=f"found by bench/fuzz.py: {target} {what}"))
    summary = ft.TALLY.summary()
    summary.update(seconds=round(time.perf_counter() - started, 1), examples_per_target=args.examples,
                   seed=args.seed, next_valid_job_failures=len(next_job_failures), commit=commit(),
                   note="BEN2 stand-in (test fixture); timings on a shared, loaded machine")
    print(f"fuzz: {summary['total_cases']} cases tried, {summary['crashes']} crashes, {summary['hangs']} hangs, "
          f"{summary['memory_hogs']} memory hogs, {len(next_job_failures)} failed next valid jobs "
          f"in {summary['seconds']} s")
    for failure in summary["failures"]:
        print("fuzz: failure:", failure)
    out = args.json or ROOT / "bench" / "results" / f"fuzz-{summary['commit']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fuzz: summary written to {out}")
    return 1 if summary["crashes"] or summary["hangs"] or summary["memory_hogs"] or next_job_failures else 0


def _returning_none(check):
    def body(value) -> None:  # @given tests must return None
        check(value)

    return body


if __name__ == "__main__":
    sys.exit(main())
