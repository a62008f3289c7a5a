"""Benchmark: ben2-worker's full-resolution cut-out against a faithful re-creation of the user's
ComfyUI node chain, and against rembg, on the same inputs in the same process.

    python bench/bench_cutout.py [--sizes 1,4,12] [--repeats 3] [--model PATH] [--no-rembg]

With no --model it builds the BEN2 stand-in (tests/standin_models.py), whose inference is
nearly free, so the numbers isolate everything around the model: decode, resizes, matte
shaping, compositing and encoding. Per-stage medians are printed for each size, then the
end-to-end time excluding inference and the ratio to the user's chain.

The user's chain (docs/contracts.md#the-users-workflows, simple workflow): LoadImage (PIL decode, float32 tensor) ->
SmartResizeForModel (PIL Lanczos to ~1 MP) -> BEN2_ONNX_RemoveBg (PIL bilinear to 1024²,
model, bilinear back, min-max, sensitivity 0.7, mask_offset -1 = one 3x3 min filter, putalpha)
-> RestoreOriginalSize (PIL Lanczos of the RGBA cut-out back to full size) -> save as PNG at
compress level 4 (ComfyUI's default). Tensor<->PIL conversions are float32 numpy, as ComfyUI
does with torch on the CPU.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ben2_worker.ben2 import Ben2Model  # noqa: E402
from ben2_worker.cutout import CutoutEngine, CutoutOptions, MatteOptions  # noqa: E402
from ben2_worker.imaging import decode_image, encode_image  # noqa: E402
from ben2_worker.timing import StageTimer  # noqa: E402

WORKFLOW_MATTE = MatteOptions(sensitivity=0.7, mask_blur=0, mask_offset=-1)  # the user's simple workflow


def make_input(megapixels: float) -> bytes:
    """A JPEG of the bundled astronaut photo enlarged to ~N MP at 4:3 and stored the way a phone
    held upright stores it: pixels in portrait, EXIF orientation 6 to display in landscape."""
    photo = Image.open(ROOT / "samples" / "astronaut.jpg").convert("RGB")
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    photo.resize((w, h), Image.BICUBIC).transpose(Image.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


# ----------------------------------------------------------------------------- our pipeline


def run_ours(engine: CutoutEngine, data: bytes, options: CutoutOptions) -> StageTimer:
    t = StageTimer()
    with t("decode"):
        image = decode_image(data)
    result = engine.cut_out([image.rgb], options)[0]
    t.merge(result.timings)
    with t("encode"):
        encode_image(result.image, "png")
    return t


# ------------------------------------------------------------------- the user's node chain


def _tensor2pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(255.0 * arr, 0, 255).astype(np.uint8))


def _pil2tensor(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.float32) / 255.0


def run_user_chain(model: Ben2Model, data: bytes, png_out: list[bytes] | None = None) -> StageTimer:
    """The chain on one photo; the PNG is appended to ``png_out`` when given."""
    t = StageTimer()
    with t("decode"):  # LoadImage: exif_transpose, RGB, float32 tensor
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        img = img.convert("RGB")
        tensor = _pil2tensor(img)
    ow, oh = img.size
    with t("resize"):  # SmartResizeForModel, 1024, smart, lanczos
        target = 1024 * 1024
        aspect = ow / oh
        nh = (target / aspect) ** 0.5
        nw, nh = int(round(aspect * nh / 2) * 2), int(round(nh / 2) * 2)
        small = _tensor2pil(tensor).resize((nw, nh), Image.LANCZOS)
        tensor = _pil2tensor(small)
        # BEN2 node preprocessing
        pil = _tensor2pil(tensor)
        x = (np.asarray(pil.resize((1024, 1024), Image.BILINEAR)).astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    with t("inference"):
        raw = model.predict(x)[0]
    with t("matte"):
        mask = np.asarray(Image.fromarray(raw.astype(np.float32), "F").resize((nw, nh), Image.BILINEAR))
        lo, hi = mask.min(), mask.max()
        if hi > lo:
            mask = (mask - lo) / (hi - lo)
        mask_u8 = (mask * 255).astype(np.uint8)
        mask_u8 = (np.clip(mask_u8.astype(np.float32) / 255.0 * 1.3, 0, 1) * 255).astype(np.uint8)
        mask_pil = Image.fromarray(mask_u8).filter(ImageFilter.MinFilter(3))
        rgba = pil.convert("RGBA")
        rgba.putalpha(mask_pil)
        tensor = _pil2tensor(rgba)
    with t("upscale"):  # RestoreOriginalSize, lanczos
        big = _tensor2pil(tensor).resize((ow, oh), Image.LANCZOS)
        tensor = _pil2tensor(big)
    with t("encode"):  # save: tensor -> PIL -> PNG at ComfyUI's compress level 4
        buf = io.BytesIO()
        _tensor2pil(tensor).save(buf, "PNG", compress_level=4)
    if png_out is not None:
        png_out.append(buf.getvalue())
    return t


# --------------------------------------------------------------------------------- rembg


def make_rembg(model_path: Path):
    import os

    # rembg only opens custom models inside its models folder ($U2NET_HOME).
    os.environ["U2NET_HOME"] = str(model_path.parent)
    try:
        from rembg import new_session, remove
    except ImportError:
        return None
    try:
        session = new_session("ben_custom", model_path=str(model_path))
    except Exception as exc:  # its custom sessions vary by version
        print(f"rembg: could not open a custom BEN session on {model_path}: {exc}")
        return None

    def run(data: bytes) -> StageTimer:
        t = StageTimer()
        with t("total"):
            remove(data, session=session)  # bytes in, PNG bytes out: rembg's whole path
        return t

    return run


# ---------------------------------------------------------------------------------- report


def median_timer(runs: list[StageTimer]) -> dict[str, float]:
    stages = list(runs[0].seconds)
    return {s: statistics.median(r.seconds.get(s, 0.0) for r in runs) for s in stages}


def excl_inference(stages: dict[str, float]) -> float:
    return sum(v for k, v in stages.items() if k != "inference")


def fmt_stages(stages: dict[str, float]) -> str:
    return "  ".join(f"{k} {v * 1000:7.1f}" for k, v in stages.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,12", help="megapixels, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, help="a BEN2-contract ONNX model (default: build the stand-in)")
    ap.add_argument("--no-rembg", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    model_path = args.model
    if model_path is None:
        from standin_models import build_ben2_standin

        model_path = build_ben2_standin(Path(tmp.name) / "BEN2_Base.onnx")
        print(f"model: BEN2 stand-in (test fixture) at {model_path}")
    else:
        print(f"model: {model_path}")
    model = Ben2Model(model_path)
    engine = CutoutEngine(model)
    rembg_run = None if args.no_rembg else make_rembg(model_path)
    print(f"threads: {model.session.get_session_options().intra_op_num_threads}, providers: {', '.join(model.info.providers)}")
    print("times in ms, median of", args.repeats, "runs\n")

    for mp in [float(s) for s in args.sizes.split(",")]:
        data = make_input(mp)
        w, h = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size
        print(f"=== {mp:g} MP input ({w}x{h} displayed, EXIF-rotated JPEG {len(data) / 1e6:.1f} MB)")
        plain = CutoutOptions(matte=WORKFLOW_MATTE)
        refined = CutoutOptions(matte=WORKFLOW_MATTE, refine=True)
        run_ours(engine, data, plain), run_user_chain(model, data)  # warm caches and allocators
        ours = median_timer([run_ours(engine, data, plain) for _ in range(args.repeats)])
        ours_refine = median_timer([run_ours(engine, data, refined) for _ in range(args.repeats)])
        theirs = median_timer([run_user_chain(model, data) for _ in range(args.repeats)])
        print(f"  ben2-worker        {fmt_stages(ours)}")
        print(f"  ben2-worker+refine {fmt_stages(ours_refine)}")
        print(f"  user's node chain  {fmt_stages(theirs)}")
        o, u = excl_inference(ours), excl_inference(theirs)
        print(f"  end-to-end excluding inference: ben2-worker {o * 1000:.1f} ms, user's chain {u * 1000:.1f} ms "
              f"-> {u / o:.1f}x faster")
        if rembg_run:
            r = median_timer([rembg_run(data) for _ in range(args.repeats)])["total"]
            total = sum(ours.values())
            print(f"  rembg (same model, its own pre/post-processing): {r * 1000:.1f} ms end to end "
                  f"vs ben2-worker {total * 1000:.1f} ms -> {r / total:.1f}x")
        print()


if __name__ == "__main__":
    main()
