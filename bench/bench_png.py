"""PNG encoder benchmark: which encoder should ``imaging.encode_png`` use?

Encodes one 12 MP RGBA photo-like cut-out with each candidate and prints encode time,
output size, ratios against PIL ``compress_level=4`` (what the user's ComfyUI node
uses), whether PIL decodes the output back to identical pixels, and which ancillary
chunks the output carries.

    python bench/bench_png.py                 # synthetic photo + matte (deterministic)
    python bench/bench_png.py --photo a.jpg   # upscale a real photo to 12 MP instead
    python bench/bench_png.py --repeat 5

The synthetic image is smooth multi-scale structure plus sensor-like grain (a plain
gradient would compress unrealistically well), with a soft-edged alpha matte whose
transparent region keeps its RGB, as a background-removal cut-out does.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 4000, 3000  # 12 MP


def synthetic_photo(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """Photo-like RGB: several octaves of smooth noise, an edge or two, and fine grain."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((4, 90.0), (16, 45.0), (64, 20.0), (256, 8.0)):
        low = rng.normal(0.0, 1.0, (cells * height // width + 1, cells, 3)).astype(np.float32)
        img += amp * cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    # A few hard-ish edges, like object outlines.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img += 30.0 * (np.sin(xx / 97.0) * np.cos(yy / 61.0) > 0.3)[..., None]
    img += 128.0
    img += rng.normal(0.0, 2.5, img.shape).astype(np.float32)  # sensor grain
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_from_file(path: str, width: int = W, height: int = H) -> np.ndarray:
    import cv2

    rgb = np.asarray(Image.open(path).convert("RGB"))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)


def alpha_matte(width: int = W, height: int = H, seed: int = 1) -> np.ndarray:
    """A subject-shaped matte: solid inside, 0 outside, soft and ragged along the edge."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * 0.5, height * 0.55
    r = np.hypot((xx - cx) / (width * 0.28), (yy - cy) / (height * 0.4))
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = 0.06 * np.sin(7 * theta) + 0.03 * np.sin(23 * theta + 1.0)
    hair = rng.normal(0.0, 1.0, (height // 8, width // 8)).astype(np.float32)
    hair = cv2.resize(hair, (width, height), interpolation=cv2.INTER_LINEAR) * 0.04
    a = np.clip((1.0 + wobble + hair - r) / 0.04, 0.0, 1.0)
    return (a * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- candidates


def pil_png(level: int) -> Callable[[np.ndarray], bytes]:
    def enc(rgba: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, "PNG", compress_level=level)
        return buf.getvalue()

    return enc


def cv2_png(level: int, png_filter: str | None = None) -> Callable[[np.ndarray], bytes] | None:
    try:
        import cv2
    except ImportError:
        return None
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]
    if png_filter is not None:
        if not hasattr(cv2, "IMWRITE_PNG_FILTER"):
            return None
        params += [cv2.IMWRITE_PNG_FILTER, getattr(cv2, png_filter)]

    def enc(rgba: np.ndarray) -> bytes:
        # OpenCV wants BGRA; the channel swap is part of the real cost.
        ok, out = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), params)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return out.tobytes()

    return enc


def fpng_png() -> Callable[[np.ndarray], bytes] | None:
    try:
        import fpng
    except ImportError:
        return None
    return lambda rgba: fpng.from_ndarray(np.ascontiguousarray(rgba))


def pyspng_png() -> Callable[[np.ndarray], bytes] | None:
    try:
        import pyspng
    except ImportError:
        return None
    encode = getattr(pyspng, "encode", None) or getattr(pyspng, "save", None)
    return None if encode is None else encode


def zlib_parallel_png(threads: int, level: int = 1) -> Callable[[np.ndarray], bytes]:
    """A valid PNG compressed in parallel: every row Up-filtered (numpy), the filtered bytes cut
    into ``threads`` strips deflated side by side (zlib releases the GIL), each strip but the
    last ended with a sync flush so the raw deflate streams concatenate into one (as pigz
    does), one Adler-32 over the whole. Unlike fpng per strip (whose strips restart their
    filters and streams), the result is one ordinary PNG. Measured here to decide whether a
    parallel encoder is worth having next to fpng."""
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))

    def deflate(part: memoryview, last: bool) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
        return c.compress(part) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    def enc(rgba: np.ndarray) -> bytes:
        h, w, ch = rgba.shape
        rows = rgba.reshape(h, w * ch)
        filtered = np.empty((h, w * ch + 1), np.uint8)
        filtered[:, 0] = 2  # Up; row 0's prior row is zeros, so it holds the raw bytes
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        flat = memoryview(filtered.reshape(-1))
        bounds = [round(i * h / threads) * (w * ch + 1) for i in range(threads + 1)]
        parts = list(pool.map(lambda i: deflate(flat[bounds[i]:bounds[i + 1]], i == threads - 1), range(threads)))
        stream = b"\x78\x01" + b"".join(parts) + struct.pack(">I", zlib.adler32(flat))
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")

    return enc


def png_chunks(data: bytes) -> list[str]:
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8].decode("latin-1"))
        pos += 12 + length
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", help="a real photo to upscale to 12 MP instead of the synthetic one")
    ap.add_argument("--repeat", type=int, default=3, help="runs per encoder; the best is reported")
    args = ap.parse_args(argv)

    rgb = photo_from_file(args.photo) if args.photo else synthetic_photo()
    rgba = np.ascontiguousarray(np.dstack([rgb, alpha_matte()]))
    raw_mb = rgba.nbytes / 1e6

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    try:
        from ben2_worker.imaging import encode_png as chosen
    except ImportError:
        chosen = None

    candidates: list[tuple[str, Callable[[np.ndarray], bytes] | None]] = [
        ("PIL compress_level=6 (default)", pil_png(6)),
        ("PIL compress_level=4 (ComfyUI node)", pil_png(4)),
        ("PIL compress_level=1", pil_png(1)),
        ("cv2.imencode compression=1", cv2_png(1)),
        ("cv2.imencode compression=3", cv2_png(3)),
        ("cv2.imencode compression=1 filter=UP", cv2_png(1, "IMWRITE_PNG_FILTER_UP")),
        ("fpng.from_ndarray", fpng_png()),
        ("zlib level 1, Up filter, 1 thread", zlib_parallel_png(1)),
        ("zlib level 1, Up filter, 2 threads", zlib_parallel_png(2)),
        ("zlib level 1, Up filter, 4 threads", zlib_parallel_png(4)),
        ("pyspng (encode)", pyspng_png()),
        ("ben2_worker.imaging.encode_png", chosen),
    ]

    print(f"image: {W}x{H} RGBA, {raw_mb:.1f} MB raw, {'photo ' + args.photo if args.photo else 'synthetic'}")
    results = []
    for name, enc in candidates:
        if enc is None:
            results.append((name, None, None, "not available (no encoder)", ""))
            continue
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = enc(rgba)
            times.append(time.perf_counter() - t0)
        back = np.asarray(Image.open(io.BytesIO(out)).convert("RGBA"))
        ok = "yes" if np.array_equal(back, rgba) else "NO"
        extra = [c for c in png_chunks(out) if c not in ("IHDR", "IDAT", "IEND")]
        results.append((name, min(times), len(out), ok, ",".join(sorted(set(extra))) or "-"))

    base = next(r for r in results if "=4" in r[0] and r[0].startswith("PIL"))
    print(f"{'encoder':40} {'time s':>7} {'MB':>7} {'t/PIL4':>7} {'size/PIL4':>9} {'lossless':>8}  extra chunks")
    for name, t, size, ok, extra in results:
        if t is None:
            print(f"{name:40} {'-':>7} {'-':>7} {'-':>7} {'-':>9}  {ok}")
            continue
        print(
            f"{name:40} {t:7.3f} {size / 1e6:7.2f} {t / base[1]:7.2f} {size / base[2]:9.2f} {ok:>8}  {extra}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
