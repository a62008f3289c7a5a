"""What the fuzzers feed the worker, and how an answer is judged. Shared by tests/test_fuzz.py
(a short run in the default suite, longer with ``--hypothesis-profile=long``) and
bench/fuzz.py (the long run that prints cases tried, crashes and hangs).

A case passes when the worker answers with a dict, an ``error`` (if any) that names the problem
and is not ``internal error: ...`` (reserved for bugs), within a time bound and a bound on the
process's peak memory growth, and bounded in size. The decoder passes when it returns pixels of
the shape it promises or raises :class:`~ben2_worker.errors.InputError`.

Seeds are real files of every accepted format written by Pillow / pillow-heif / OpenCV at
start (never downloaded); the mutations truncate, corrupt, splice and rewrite size fields."""

from __future__ import annotations

import base64
import functools
import io
import json
import resource
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

#: Wall-clock seconds one case may take on a loaded 2-core machine (the stand-in model runs at
#: 1024x1024 on one thread: ~0.3 s; the slowest legitimate case is a 50 MP refusal).
CASE_SECONDS = 20.0
#: Peak-RSS growth one case may cause (MiB): a case that decodes a bomb would blow through it.
CASE_MEMORY_MIB = 600
#: A small pixel limit for the fuzzed decoder, so "huge" is cheap to try.
FUZZ_MAX_PIXELS = 4_000_000


# ---------------------------------------------------------------------------- seeds


def _rgb(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), (x ^ y) & 255], -1).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@functools.cache
def seed_files() -> dict[str, bytes]:
    """Small valid files: every accepted format and the awkward modes (16-bit, CMYK, palette
    with transparency, 1-bit, grey+alpha, 1x1, animated, EXIF-rotated)."""
    rgb = Image.fromarray(_rgb(24, 16))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((_rgb(24, 16)[..., 0] // 2).astype(np.uint8)))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 3
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.fromarray(_rgb(24, 16)[:, ::-1] if i % 2 else _rgb(24, 16)) for i in range(3)]
    seeds = {
        "png": _save(rgb, "PNG"),
        "png_rgba": _save(rgba, "PNG"),
        "png_palette_trns": _save(pal, "PNG", transparency=3),
        "png_1bit": _save(rgb.convert("1"), "PNG"),
        "png_la": _save(rgba.convert("LA"), "PNG"),
        "png_16bit_grey": _save(Image.fromarray(_rgb(24, 16)[..., 0].astype(np.uint16) * 257), "PNG"),
        "png_1x1": _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "apng": _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "jpeg": _save(rgb, "JPEG", quality=80),
        "jpeg_progressive": _save(rgb, "JPEG", quality=80, progressive=True),
        "jpeg_cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "jpeg_exif_rot": _save(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg_grey": _save(rgb.convert("L"), "JPEG"),
        "webp_lossy": _save(rgb, "WEBP", quality=60),
        "webp_lossless_alpha": _save(rgba, "WEBP", lossless=True),
        "webp_animated": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
        "gif": _save(pal, "GIF", transparency=3),
        "gif_animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "bmp": _save(rgb, "BMP"),
        "bmp_rle8": _save(pal, "BMP"),
        "tiff": _save(rgb, "TIFF"),
        "tiff_lzw": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_deflate_rgba": _save(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_cmyk": _save(rgb.convert("CMYK"), "TIFF"),
        "tiff_multipage": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
    }
    import cv2

    ok, png16 = cv2.imencode(".png", (_rgb(24, 16).astype(np.uint16) * 257)[..., ::-1].copy())
    if ok:
        seeds["png_16bit_rgb"] = png16.tobytes()
    ok, tif16 = cv2.imencode(".tiff", (_rgb(24, 16).astype(np.uint16) * 257)[..., ::-1].copy())
    if ok:
        seeds["tiff_16bit_rgb"] = tif16.tobytes()
    for fmt, key in (("HEIF", "heic"), ("AVIF", "avif")):
        try:
            if fmt == "HEIF":
                import pillow_heif

                pillow_heif.register_heif_opener()
            seeds[key] = _save(rgb, fmt, quality=60)
        except (ImportError, KeyError, OSError, ValueError):
            pass  # that encoder is not in this environment: the decoder fuzz skips it
    return seeds


# ---------------------------------------------------------------------------- bombs


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, *, bit_depth: int = 8, colour: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (valid CRCs, tiny data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


@functools.cache
def bomb_files() -> dict[str, tuple[bytes, str]]:
    """Small files declaring huge sizes or huge decoder work, with the text the refusal must
    contain. Sizes are written into otherwise valid headers."""
    seeds = seed_files()
    out: dict[str, tuple[bytes, str]] = {}
    out["png_65535x65535"] = (png_declaring(65535, 65535), "limit")
    out["png_100000x1"] = (png_declaring(100_000_000, 1), "limit")
    out["png_zero_width"] = (png_declaring(0, 16), "image")
    # A real 50 MP flat PNG's data compresses ~1000:1; here its IDAT is a zlib bomb of zeros.
    out["png_zlib_bomb_4097x4097"] = (png_declaring(4097, 4097, idat=zlib.compress(b"\x00" * (4097 * 3 + 1) * 64, 9)), "limit")
    # 8 MB of zTXt that inflates to 1 GB would be a text-chunk bomb; Pillow caps text chunks.
    ztxt = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * 50_000_000, 9))
    small = png_declaring(8, 8, idat=zlib.compress(b"\x00" + b"\x00" * 24, 9) * 1)
    out["png_ztxt_bomb"] = (small[:33] + ztxt + small[33:], "")
    gif = bytearray(seeds["gif"])
    struct.pack_into("<HH", gif, 6, 65535, 65535)
    out["gif_screen_65535x65535"] = (bytes(gif), "limit")
    bmp = bytearray(seeds["bmp"])
    struct.pack_into("<ii", bmp, 18, 60000, 60000)
    out["bmp_60000x60000"] = (bytes(bmp), "limit")
    bmp_neg = bytearray(seeds["bmp"])
    struct.pack_into("<ii", bmp_neg, 18, 24, -2_000_000_000)
    out["bmp_negative_height"] = (bytes(bmp_neg), "")
    out["jpeg_65500x65500"] = (_jpeg_with_size(seeds["jpeg"], 65500, 65500), "limit")
    out["jpeg_zero_height"] = (_jpeg_with_size(seeds["jpeg"], 24, 0), "")
    out["tiff_huge"] = (_tiff_with_size(seeds["tiff"], 1_000_000, 1_000_000), "limit")
    out["webp_vp8x_16383x16383"] = (_webp_vp8x_canvas(seeds["webp_lossless_alpha"], 16383, 16383), "")
    for key in ("heic", "avif"):
        if key in seeds:
            patched = _ispe_with_size(seeds[key], 60000, 60000)
            if patched is not None:
                out[f"{key}_ispe_60000x60000"] = (patched, "")
    return out


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    i = 2
    while i < len(b) - 9:
        if b[i] != 0xFF:
            i += 1
            continue
        marker = b[i + 1]
        length = struct.unpack_from(">H", b, i + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, i + 5, height, width)
            return bytes(b)
        i += 2 + length
    raise ValueError("no SOF marker")


def _tiff_with_size(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    endian = "<" if b[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(endian + "I", b, 4)
    (count,) = struct.unpack_from(endian + "H", b, ifd)
    for k in range(count):
        off = ifd + 2 + 12 * k
        tag, typ = struct.unpack_from(endian + "HH", b, off)
        if tag in (256, 257):
            value = width if tag == 256 else height
            if typ == 3:
                struct.pack_into(endian + "HHIH", b, off, tag, 3, 1, min(value, 65535))
            else:
                struct.pack_into(endian + "HHII", b, off, tag, 4, 1, value)
    return bytes(b)


def _webp_vp8x_canvas(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    if b[12:16] != b"VP8X":
        # Wrap a simple file: VP8X chunk + the original chunk; canvas from VP8X.
        flags = 0x10
        vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = b"WEBP" + vp8x + bytes(b[12:])
        return b"RIFF" + struct.pack("<I", len(body)) + body
    b[24:27] = (width - 1).to_bytes(3, "little")
    b[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(b)


def _ispe_with_size(data: bytes, width: int, height: int) -> bytes | None:
    i = data.find(b"ispe")
    if i < 0:
        return None
    b = bytearray(data)
    struct.pack_into(">II", b, i + 8, width, height)
    return bytes(b)


# ---------------------------------------------------------------------------- mutations


@st.composite
def mutated_image(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """(description, bytes): a seed truncated, corrupted, spliced, or with a size field rewritten."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "splice", "header_ints"]))
    n = len(data)
    if op == "truncate":
        cut = draw(st.integers(0, max(n - 1, 0)))
        data = data[:cut]
    elif op == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, n - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
    elif op == "overwrite":
        pos = draw(st.integers(0, n - 1))
        blob = draw(st.binary(min_size=1, max_size=16))
        data[pos : pos + len(blob)] = blob
    elif op == "insert":
        pos = draw(st.integers(0, n))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    elif op == "splice":
        other = seeds[draw(st.sampled_from(sorted(seeds)))]
        cut = draw(st.integers(0, n))
        data = data[:cut] + other[draw(st.integers(0, len(other))):]
    else:  # write big or odd integers where headers keep sizes (first 64 bytes)
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, max(0, min(n, 64) - 4)))
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 65500, 30000]))
            endian = draw(st.sampled_from("<>"))
            struct.pack_into(endian + "I", data, pos, value & 0xFFFFFFFF) if pos + 4 <= len(data) else None
    return f"{name}:{op}", bytes(data)


# ---------------------------------------------------------------------------- jobs

#: Any JSON value, nested a little (deep nesting is tried separately).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def deep(depth: int, leaf="x"):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@st.composite
def simple_requests(draw, image_b64: str) -> dict:
    """Simple-API inputs: a valid request with one field replaced or added."""
    base: dict = {"image": image_b64, "pipeline": "simple", "output": {}}
    key = draw(st.sampled_from(["image", "images", "pipeline", "output", "output.format", "output.background",
                                "output.crop_margin", "output.quality", "output.sensitivity", "output.mask_blur",
                                "output.mask_offset", "output.put_url", "output.mask", "extra"]))
    value = draw(json_values | st.sampled_from(["", "data:", "data:image/png;base64,", "%%%", "=" * 7,
                                                "https://", "http://127.0.0.1/x", "ftp://x/y", "#GGG", "5%", "-5%",
                                                "1e309", "nan", image_b64[:-3], "A" * 10_001]))
    if key.startswith("output."):
        base["output"][key.split(".", 1)[1]] = value
    elif key == "images":
        base.pop("image")
        base["images"] = value if draw(st.booleans()) else [value] * draw(st.integers(0, 18))
    elif key == "extra":
        base[draw(st.text(max_size=8))] = value
    else:
        base[key] = value
    return base


NODE_TYPES_USED = ["LoadImage", "SmartResizeForModel", "BEN2_ONNX_RemoveBg", "RestoreOriginalSize", "FreeVRAMInline",
                   "PreviewImage", "SaveImageNoMetadata", "ShowText|pysssss", "HybridSafetyGate", "Nope", ""]


@st.composite
def graphs(draw, upload_name: str) -> dict:
    """API-format graphs of real node types with random inputs: dangling links, wrong slots,
    wrong link types, cycles, constants where links belong and the reverse."""
    n = draw(st.integers(1, 8))
    ids = [str(i) for i in range(1, n + 1)]
    graph: dict = {}
    for nid in ids:
        class_type = draw(st.sampled_from(NODE_TYPES_USED))
        inputs = {}
        for name in draw(st.lists(st.sampled_from(["image", "images", "target_model", "resize_mode", "original_width",
                                                   "original_height", "provider", "sensitivity", "text",
                                                   "nudenet_json", "multidomain_json", "mode"]), max_size=5)):
            kind = draw(st.sampled_from(["link", "link", "const", "json"]))
            if kind == "link":
                src = draw(st.sampled_from(ids + ["999", "x"]))
                inputs[name] = [src, draw(st.integers(-1, 3))]
            elif kind == "const":
                inputs[name] = draw(st.sampled_from([upload_name, "1024 (BEN2/BiRefNet)", "smart", "CPU", 1, 0, -5,
                                                     16384, 1e9, 0.5, True, "none"]))
            else:
                inputs[name] = draw(json_values)
        graph[nid] = {"class_type": class_type, "inputs": inputs}
    return graph


def valid_workflow(upload: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": upload}},
        "2": {"class_type": "SmartResizeForModel", "inputs": {"image": ["1", 0], "target_model": "1024 (BEN2/BiRefNet)",
                                                             "resize_mode": "smart"}},
        "3": {"class_type": "BEN2_ONNX_RemoveBg", "inputs": {"image": ["2", 0], "provider": "CPU"}},
        "4": {"class_type": "RestoreOriginalSize", "inputs": {"image": ["3", 0], "original_width": ["2", 1],
                                                             "original_height": ["2", 2]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


# ---------------------------------------------------------------------------- oracle


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Tally:
    """Cases tried and what went wrong, per target; printed by bench/fuzz.py."""

    cases: Counter = field(default_factory=Counter)
    crashes: list = field(default_factory=list)  # (target, what, message)
    hangs: list = field(default_factory=list)
    hogs: list = field(default_factory=list)
    slowest: dict = field(default_factory=dict)
    #: (target, what, input) of each failure, the input as given (job dict or bytes), for the corpus.
    inputs: list = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "cases": dict(self.cases), "total_cases": sum(self.cases.values()),
            # Distinct failures: hypothesis replays a failing case many times while shrinking it.
            "crashes": len({(t, m[:80]) for t, _, m in self.crashes}), "hangs": len({t for t, _, _ in self.hangs}),
            "memory_hogs": len({t for t, _, _ in self.hogs}),
            "slowest_s": {k: round(v, 3) for k, v in self.slowest.items()},
            "failures": [list(x) for x in (self.crashes + self.hangs + self.hogs)][:50],
        }


TALLY = Tally()


class CaseFailed(AssertionError):
    pass


def _timed(target: str, what: str, fn, payload=None):
    rss0 = max_rss_mib()
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        dt = time.perf_counter() - t0
        TALLY.cases[target] += 1
        TALLY.slowest[target] = max(TALLY.slowest.get(target, 0.0), dt)
        grew = max_rss_mib() - rss0
        if dt > CASE_SECONDS or grew > CASE_MEMORY_MIB:
            TALLY.inputs.append((target, what, payload))
        if dt > CASE_SECONDS:
            TALLY.hangs.append((target, what, f"{dt:.1f} s"))
            raise CaseFailed(f"{target} {what}: took {dt:.1f} s (limit {CASE_SECONDS} s)")
        if grew > CASE_MEMORY_MIB:
            TALLY.hogs.append((target, what, f"peak RSS +{grew:.0f} MiB"))
            raise CaseFailed(f"{target} {what}: peak RSS grew {grew:.0f} MiB (limit {CASE_MEMORY_MIB} MiB)")


def judge_answer(target: str, what: str, worker, job: dict, *, max_error_bytes: int = 16 * 1024) -> dict:
    """Run one job and judge the answer; raises CaseFailed (recorded in TALLY) on a bug."""
    try:
        out = _timed(target, what, lambda: worker(job), job)
    except CaseFailed:
        raise
    except BaseException as exc:  # noqa: BLE001 - an escaped exception is the bug we look for
        TALLY.crashes.append((target, what, f"escaped {type(exc).__name__}: {exc}"[:300]))
        TALLY.inputs.append((target, what, job))
        raise CaseFailed(f"{target} {what}: exception escaped the handler: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        TALLY.crashes.append((target, what, f"answer is {type(out).__name__}"))
        TALLY.inputs.append((target, what, job))
        raise CaseFailed(f"{target} {what}: answer is not a dict")
    error = out.get("error")
    if error is not None:
        if not isinstance(error, str) or not error.strip() or error.startswith("internal error"):
            TALLY.crashes.append((target, what, str(error)[:300]))
            TALLY.inputs.append((target, what, job))
            raise CaseFailed(f"{target} {what}: {str(error)[:500]}")
        size = len(json.dumps(out))
        if size > 2 * max_error_bytes:
            TALLY.crashes.append((target, what, f"error response of {size} bytes"))
            TALLY.inputs.append((target, what, job))
            raise CaseFailed(f"{target} {what}: error response is {size} bytes")
    return out


def judge_decode(what: str, data: bytes, *, max_pixels: int = FUZZ_MAX_PIXELS):
    """Decode untrusted bytes: pixels of the promised shape, or an InputError; nothing else."""
    from ben2_worker.errors import InputError
    from ben2_worker.imaging import decode_image

    def run():
        try:
            img = decode_image(data, max_pixels=max_pixels, name="fuzz")
        except InputError as exc:
            if not str(exc).strip():
                raise CaseFailed(f"decode {what}: empty error message") from None
            return exc
        h, w = img.rgb.shape[:2]
        assert img.rgb.dtype == np.uint8 and img.rgb.shape == (h, w, 3) and h * w <= max_pixels, img.rgb.shape
        assert img.alpha is None or (img.alpha.shape == (h, w) and img.alpha.dtype == np.uint8)
        return img

    try:
        return _timed("decode", what, run, data)
    except CaseFailed:
        raise
    except BaseException as exc:  # noqa: BLE001
        TALLY.crashes.append(("decode", what, f"{type(exc).__name__}: {exc}"[:300]))
        TALLY.inputs.append(("decode", what, data))
        raise CaseFailed(f"decode {what}: {type(exc).__name__}: {exc}") from exc


def jpeg_scan_bomb(width: int = 1000, height: int = 1000, extra_scans: int = 2000) -> bytes:
    """A valid progressive JPEG with its smallest refinement scan repeated: a few KB more per
    thousand scans, and each scan is one more decoder pass over the whole image."""
    im = Image.fromarray(np.full((height, width, 3), 128, np.uint8))
    data = _save(im, "JPEG", quality=90, progressive=True)
    scans, i = [], 2
    while i < len(data) and data[i + 1] != 0xD9:
        length = struct.unpack_from(">H", data, i + 2)[0]
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        j = i + 2 + length
        while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
            j += 1
        scans.append((i, j))
        i = j
    a, b = min(scans[1:], key=lambda s: s[1] - s[0])
    end = scans[-1][1]
    return data[:end] + data[a:b] * extra_scans + data[end:]


# ---------------------------------------------------------------------------- corpus

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


def save_case(target: str, what: str, payload, *, expect: list[str] | None = None, note: str = "") -> Path:
    """Keep a failing input in tests/corpus (jobs as gzipped JSON, decoder inputs as files)."""
    import gzip
    import hashlib

    import re

    slug = re.sub(r"[^a-z0-9]+", "-", f"{target}-{what}".lower()).strip("-")[:60]
    if isinstance(payload, (bytes, bytearray)):
        digest = hashlib.sha256(payload).hexdigest()[:8]
        path = CORPUS_DIR / "decode" / f"{slug}-{digest}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(payload))
        index = CORPUS_DIR / "decode" / "expected.json"
        known = json.loads(index.read_text()) if index.exists() else {}
        known.setdefault(path.name, (expect or [""])[0])
        index.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
        return path
    text = json.dumps({"note": note or f"{target}: {what}", "expect": expect or [], "job": payload}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    path = CORPUS_DIR / "jobs" / f"{slug}-{digest}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


def load_case(path: Path) -> dict:
    import gzip

    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
