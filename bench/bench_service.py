"""Benchmark: what the HTTP service adds on top of the worker's own job processor, and what
importing it costs next to a UI library.

    python bench/bench_service.py [--sizes 1,4,12] [--repeats 5] [--gradio-python PATH]

In one process, against the BEN2 stand-in (tests/standin_models.py: inference is nearly free,
so the numbers are everything around the model), for JPEG photos of N MP:

* ``direct``: ``JobProcessor({"id", "input"})`` called in process, as the RunPod SDK calls it;
* ``runsync``: the same task-API job as ``POST /runsync`` over loopback HTTP (JSON, base64);
* ``removebg``: ``POST /v1.0/removebg`` with a multipart upload, PNG bytes back (the route
  also asks for the matte to compute the X-Foreground-* box, and decodes it).

Medians of ``--repeats`` runs; ratios are against ``direct`` measured in the same process.
Start-up: the median wall time of ``import ben2_worker.service.app`` in a fresh interpreter,
and, with ``--gradio-python``, of ``import gradio`` in that interpreter (a venv with Gradio
installed), measured the same way on the same machine. Results go to
bench/results/service-<commit>.json. Say whether the machine was loaded when quoting them."""

from __future__ import annotations

import argparse
import io
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


def photo_jpeg(megapixels: float) -> bytes:
    from PIL import Image

    from conftest import subject_photo

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    buf = io.BytesIO()
    Image.fromarray(subject_photo(w, h)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def import_seconds(python: str, module: str, repeats: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout.split()[-1])
            for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,4,12")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gradio-python", default=None)
    args = ap.parse_args()

    import base64

    import httpx

    from service_harness import LiveService
    from standin_models import build_models_dir

    from ben2_worker.api.jobs import JobProcessor

    results: dict = {"sizes": {}, "startup_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveService(models_dir=build_models_dir(Path(tmp)))
        direct = JobProcessor(live.service.engines)  # the same settings: base64 delivery
        client = httpx.Client(base_url=live.base, timeout=600)
        print(f"{'MP':>4} {'direct ms':>10} {'runsync ms':>11} {'ratio':>6} {'removebg ms':>12} {'ratio':>6}")
        for mp in (float(s) for s in args.sizes.split(",")):
            jpeg = photo_jpeg(mp)
            job = {"image": base64.b64encode(jpeg).decode()}
            d = median_ms(lambda: direct({"id": "bench", "input": job}), args.repeats)
            r = median_ms(lambda: client.post("/runsync", json={"input": job}).raise_for_status(), args.repeats)
            b = median_ms(lambda: client.post("/v1.0/removebg", files={"image_file": ("p.jpg", jpeg)}).raise_for_status(),
                          args.repeats)
            results["sizes"][str(mp)] = {"direct_ms": d, "runsync_ms": r, "removebg_ms": b,
                                         "runsync_ratio": r / d, "removebg_ratio": b / d}
            print(f"{mp:>4g} {d:>10.1f} {r:>11.1f} {r / d:>6.2f} {b:>12.1f} {b / d:>6.2f}")
        client.close()
        live.stop()
    ours = import_seconds(sys.executable, "ben2_worker.service.app")
    results["startup_s"]["import ben2_worker.service.app"] = ours
    print(f"import ben2_worker.service.app: {ours:.2f} s")
    if args.gradio_python:
        gradio = import_seconds(args.gradio_python, "gradio")
        results["startup_s"]["import gradio"] = gradio
        print(f"import gradio: {gradio:.2f} s ({gradio / ours:.1f}x ours)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = ROOT / "bench" / "results" / f"service-{commit or 'unknown'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commit": commit, "repeats": args.repeats, **results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
