"""int8 vs fp32 BEN2: speed-up and how far the mattes differ, on whatever model and photos you have.

    python bench/compare_int8.py --model models/ben2_onnx/BEN2_Base.onnx --images ~/photos [--limit 20]
    python bench/compare_int8.py            # the realistic stand-in and the bundled sample photo

The int8 variant is ``onnxruntime.quantization.quantize_dynamic`` of the model's MatMul/Gemm
weights (runtime.quantize_int8), built once into the model's cache folder. For each photo both
sessions cut it out through the same engine (same resize, same matte shaping); reported per
photo and overall: mean and max absolute difference of the raw matte (0..1), of the final
8-bit alpha at full resolution, the share of alpha pixels more than 8 levels apart, IoU of the
subject (alpha > 127), and inference time of each. How many MatMul/Gemm nodes were quantised
is printed too: a model whose weights are float16 behind Cast nodes (the published BEN2 mixes
fp16 and fp32) may keep some layers in float.

The real weights are the only meaningful input: with the stand-in (RANDOM WEIGHTS) the matte
difference says nothing about quality, only the speed-up carries over. int8 stays opt-in
(``BEN2_WORKER_BEN2_VARIANT=int8``) until someone with the weights has run this.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def matte_stats(raw32: np.ndarray, raw8: np.ndarray, a32: np.ndarray, a8: np.ndarray) -> dict:
    d_raw = np.abs(raw32.astype(np.float32) - raw8.astype(np.float32))
    d_a = np.abs(a32.astype(np.int16) - a8.astype(np.int16))
    s32, s8 = a32 > 127, a8 > 127
    union = np.logical_or(s32, s8).sum()
    return {
        "raw_mean_abs": float(d_raw.mean()),
        "raw_max_abs": float(d_raw.max()),
        "alpha_mean_abs_levels": float(d_a.mean()),
        "alpha_max_abs_levels": int(d_a.max()),
        "alpha_share_over_8_levels": float((d_a > 8).mean()),
        "subject_iou": float(np.logical_and(s32, s8).sum() / union) if union else 1.0,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="BEN2 ONNX file (default: the realistic stand-in)")
    ap.add_argument("--images", type=Path, nargs="*", help="photos or folders (default: samples/astronaut.jpg)")
    ap.add_argument("--limit", type=int, default=20, help="at most this many photos")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--reduced", action="store_true", help="the reduced stand-in (see bench_cpu_tuning.py --reduced)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from bench_realistic import STANDIN_NOTE, machine
    from benchlib import commit, write_results
    from ben2_worker.ben2 import Ben2Model
    from ben2_worker.cutout import CutoutEngine
    from ben2_worker.imaging import decode_file

    if args.model is None:
        from realistic_standin import ensure_standin

        model_path = ensure_standin(depths=(2, 2, 2, 2), width=64) if args.reduced else ensure_standin()
        note = STANDIN_NOTE + " — matte difference MEANINGLESS, speed-up only"
        if args.reduced:
            note = note.replace("~90 M parameters", "REDUCED: depths 2,2,2,2, width 64")
    else:
        model_path, note = args.model, f"{args.model}"
    paths: list[Path] = []
    for p in args.images or [ROOT / "samples" / "astronaut.jpg"]:
        paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    paths = paths[: args.limit]
    if not paths:
        raise SystemExit("no photos found")

    print(f"model: {note}")
    t0 = time.perf_counter()
    fp32 = Ben2Model(model_path, threads=args.threads)
    int8 = Ben2Model(model_path, threads=args.threads, variant="int8")
    print(f"sessions ready in {time.perf_counter() - t0:.1f} s (int8 file {int8.load.source.name}, "
          f"{int8.load.source.stat().st_size / 1e6:.0f} MB vs {model_path.stat().st_size / 1e6:.0f} MB)")
    from ben2_worker.runtime import default_cache_dir, variant_path

    q_src = variant_path(model_path, "int8", default_cache_dir(model_path))  # built by now: just its path
    ops32 = op_counts(model_path)
    float_mm = ops32.get("MatMul", 0) + ops32.get("Gemm", 0)
    report = {"commit": commit(), "machine": machine(), "model": note, "photos": [], "float_matmul_nodes": float_mm}
    ops8 = op_counts(q_src)
    report["quantised_nodes"] = ops8.get("MatMulInteger", 0) + ops8.get("DynamicQuantizeMatMul", 0)
    report["float_matmul_nodes_left"] = ops8.get("MatMul", 0) + ops8.get("Gemm", 0)
    print(f"MatMul/Gemm nodes: {float_mm} in fp32; int8 graph: {report['quantised_nodes']} quantised, "
          f"{report['float_matmul_nodes_left']} left in float")
    e32, e8 = CutoutEngine(fp32), CutoutEngine(int8)
    e32.mattes([np.zeros((64, 64, 3), np.uint8)]), e8.mattes([np.zeros((64, 64, 3), np.uint8)])  # warm-up
    t32s, t8s = [], []
    for path in paths:
        rgb = decode_file(path).rgb
        t = time.perf_counter()
        (raw32,) = e32.mattes([rgb])
        t32s.append(time.perf_counter() - t)
        t = time.perf_counter()
        (raw8,) = e8.mattes([rgb])
        t8s.append(time.perf_counter() - t)
        from ben2_worker.cutout import CutoutOptions

        a32 = e32.postprocess(raw32, rgb, CutoutOptions()).alpha
        a8 = e8.postprocess(raw8, rgb, CutoutOptions()).alpha
        stats = {"photo": str(path), "fp32_s": t32s[-1], "int8_s": t8s[-1], **matte_stats(raw32, raw8, a32, a8)}
        report["photos"].append(stats)
        print(f"  {path.name}: fp32 {t32s[-1]:.2f} s, int8 {t8s[-1]:.2f} s; raw matte mean |d| "
              f"{stats['raw_mean_abs']:.4f} (max {stats['raw_max_abs']:.3f}); alpha mean |d| "
              f"{stats['alpha_mean_abs_levels']:.2f} levels, {stats['alpha_share_over_8_levels'] * 100:.2f} % > 8 levels, "
              f"subject IoU {stats['subject_iou']:.4f}", flush=True)
    keys = ("raw_mean_abs", "alpha_mean_abs_levels", "alpha_share_over_8_levels", "subject_iou")
    report["summary"] = {
        "speedup": statistics.median(t32s) / statistics.median(t8s),
        "fp32_median_s": statistics.median(t32s),
        "int8_median_s": statistics.median(t8s),
        **{f"mean_{k}": statistics.fmean(p[k] for p in report["photos"]) for k in keys},
        "max_raw_abs": max(p["raw_max_abs"] for p in report["photos"]),
        "worst_subject_iou": min(p["subject_iou"] for p in report["photos"]),
    }
    s = report["summary"]
    print(f"int8 speed-up {s['speedup']:.2f}x (median inference {s['fp32_median_s']:.2f} s -> {s['int8_median_s']:.2f} s); "
          f"over {len(paths)} photo(s): raw matte mean |d| {s['mean_raw_mean_abs']:.4f}, max {s['max_raw_abs']:.3f}; "
          f"alpha mean |d| {s['mean_alpha_mean_abs_levels']:.2f} levels; worst subject IoU {s['worst_subject_iou']:.4f}")
    write_results(report, "int8", args.json)
    return report


if __name__ == "__main__":
    main()
