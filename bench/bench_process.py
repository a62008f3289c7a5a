"""Whole process, as a new user tries it: ``ben2-worker remove`` on one 12 MP JPEG, from process
start to the written file, against the re-created user chain as a whole process.

    python bench/bench_process.py [--mp 12] [--runs 5] [--importtime]

Both run as fresh interpreters, alternately (ours, theirs, ours, ...) so load from other
processes on this shared machine hits both alike; medians and the ratio are printed. Model:
the cheap BEN2 stand-in (tests/standin_models.py, a test fixture whose inference is nearly
free), so the comparison is everything around the model: imports, model load, decode,
resizes, matte, compose, PNG encode and write.

The user chain's process (``--as-user-chain``): ``import torch`` first — ComfyUI and the user's
node pack keep images as torch tensors, so a torch import is the floor of their process — then
bench/bench_cutout.py's ``run_user_chain`` (LoadImage -> SmartResize -> BEN2 node ->
RestoreOriginalSize -> PNG at compress level 4) on a default onnxruntime session, and the PNG
written to disk. Without torch installed that import is skipped and the row says so.
``--importtime`` also prints the CLI's heaviest imports (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
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


def user_chain_process(photo: Path, out: Path, model: Path) -> None:
    """What the re-created user chain does as one process (see module docstring)."""
    try:
        import torch  # noqa: F401 - the floor of a ComfyUI process
    except ImportError:
        print("NO-TORCH", flush=True)
    import onnxruntime

    from bench_cutout import run_user_chain

    class Session:  # the node's own session: default options, batch 1
        def __init__(self, path: Path):
            self.s = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def predict(self, x):
            import numpy as np

            out = self.s.run(None, {self.s.get_inputs()[0].name: x})[0]
            return np.asarray(out, np.float32).reshape(len(x), out.shape[-2], out.shape[-1])

    png: list[bytes] = []
    run_user_chain(Session(model), photo.read_bytes(), png)
    out.write_bytes(png[0])


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "ben2-worker"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from ben2_worker.cli import app; app()"]


def timed(cmd: list[str], env: dict, must_write: Path) -> float:
    must_write.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not must_write.is_file():
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def heaviest_imports(env: dict, module: str, top: int = 12) -> list[tuple[str, float]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env,
                          capture_output=True, text=True, timeout=300)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (x.strip() for x in line.removeprefix("import time:").split("|"))
        if cumulative.isdigit():
            rows.append((name, int(cumulative) / 1e6))
    total = next((s for n, s in rows if n == module), None)
    rows = [(n, s) for n, s in rows if n.count(".") <= 2 and n != module]
    rows.sort(key=lambda r: -r[1])
    return [(module, total or 0.0)] + rows[:top]


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", type=float, default=12.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--as-user-chain", nargs=3, metavar=("PHOTO", "OUT", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.as_user_chain:
        user_chain_process(*map(Path, args.as_user_chain))
        return None

    from bench_cutout import make_input
    from bench_realistic import machine
    from benchlib import commit, write_results
    from standin_models import build_models_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench-process-"))
    models = build_models_dir(tmp / "models")
    photo = tmp / "photo.jpg"
    photo.write_bytes(make_input(args.mp))
    env = {**os.environ, "BEN2_WORKER_MODELS": str(models), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    ours_cmd = cli_command() + ["remove", str(photo), "-o", str(tmp / "ours"), "--overwrite",
                                "--sensitivity", "0.7", "--mask-offset", "-1"]
    ours_out = tmp / "ours" / "photo.png"
    theirs_out = tmp / "theirs.png"
    theirs_cmd = [sys.executable, __file__, "--as-user-chain", str(photo), str(theirs_out),
                  str(models / "ben2_onnx" / "BEN2_Base.onnx")]
    print(f"input: {args.mp:g} MP EXIF-rotated JPEG ({photo.stat().st_size / 1e6:.1f} MB); model: cheap BEN2 stand-in "
          f"(test fixture, inference ~free); {args.runs} alternating runs each; load {os.getloadavg()[0]:.1f} "
          f"on a shared machine")
    timed(ours_cmd, env, ours_out), timed(theirs_cmd, env, theirs_out)  # page cache, .pyc files
    ours, theirs = [], []
    for _ in range(args.runs):
        ours.append(timed(ours_cmd, env, ours_out))
        theirs.append(timed(theirs_cmd, env, theirs_out))
    empty = statistics.median(timed([sys.executable, "-c", f"open({str(tmp / 'e')!r}, 'w')"], env, tmp / "e")
                              for _ in range(3))
    o, t = statistics.median(ours), statistics.median(theirs)
    report = {"commit": commit(), "machine": machine(), "mp": args.mp, "runs": args.runs,
              "ours_s": ours, "user_chain_s": theirs, "ours_median_s": o, "user_chain_median_s": t,
              "ratio": t / o, "empty_interpreter_s": empty,
              "model": "cheap BEN2 stand-in (tests/standin_models.py; test fixture)"}
    print(f"ben2-worker remove:     median {o:.2f} s  (runs {', '.join(f'{x:.2f}' for x in ours)})")
    print(f"user chain as process:  median {t:.2f} s  (runs {', '.join(f'{x:.2f}' for x in theirs)})")
    print(f"-> ben2-worker is {t / o:.2f}x faster, process start to written file; empty interpreter {empty:.2f} s")
    if args.importtime:
        rows = heaviest_imports(env, "ben2_worker.cli")
        report["cli_imports_s"] = rows
        print("heaviest imports of ben2_worker.cli (cumulative s, -X importtime):")
        for name, s in rows:
            print(f"  {s:6.3f}  {name}")
    write_results(report, "process", args.json)
    return report


if __name__ == "__main__":
    main()
