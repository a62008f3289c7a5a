"""Decode/encode tests for ben2_worker.imaging; every input is built here, offline."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps, features

from ben2_worker import imaging
from ben2_worker.errors import ImageDecodeError, ImageTooLargeError, InputError
from ben2_worker.imaging import (
    FORMAT_EXTENSIONS,
    DecodedImage,
    decode_file,
    decode_image,
    encode_image,
    encode_png,
    normalize_format,
    parse_color,
    read_image_size,
)

cv2 = pytest.importorskip("cv2")

# ------------------------------------------------------------------------- helpers


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def pattern(w: int = 40, h: int = 30) -> np.ndarray:
    """Grey image with a red block marking the stored top-left corner; asymmetric on purpose."""
    a = np.full((h, w, 3), 128, np.uint8)
    a[: h // 3, : w // 4] = (255, 0, 0)
    a[-3:, :] = (0, 0, 255)  # a blue bottom stripe, so flips are distinguishable in PNG checks
    return a


def png_raw(width: int, height: int, depth: int, ctype: int, raw: bytes, extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A hand-made PNG (rows already carry their filter byte), for layouts Pillow cannot write."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0))
    for tag, data in extra:
        out += chunk(tag, data)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    tags, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tags.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return tags


def jpeg_markers(data: bytes) -> list[int]:
    """Marker bytes of the segments before the scan data."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # SOS: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    tags, pos = [], 12
    while pos + 8 <= len(data):
        tag = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        tags.append(tag)
        pos += 8 + size + (size & 1)
    return tags


def icc_rgb_profile(desc: str, colorants, gamma: float = 1.0, space: bytes = b"RGB ") -> bytes:
    """A minimal ICC v2 matrix/TRC RGB (or GRAY) profile: Pillow can only make sRGB ones."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    ascii_ = desc.encode() + b"\0"
    desc_tag = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc_tag), (b"wtpt", xyz((0.9642, 1.0, 0.8249)))]
    if space == b"GRAY":
        tags += [(b"kTRC", curv)]
    else:
        tags += [(b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1])), (b"bXYZ", xyz(colorants[2]))]
        tags += [(b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    tags += [(b"cprt", b"text\0\0\0\0no copyright\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = bytearray(128)
    header[0:4] = struct.pack(">I", size)
    header[8:12] = bytes([2, 0x10, 0, 0])
    header[12:16] = b"mntr"
    header[16:20] = space
    header[20:24] = b"XYZ "
    header[36:40] = b"acsp"
    header[68:80] = s15(0.9642) + s15(1.0) + s15(0.8249)
    return bytes(header) + struct.pack(">I", len(tags)) + table + body


def srgb_encode(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def check_decoded(d: DecodedImage, w: int, h: int, fmt: str, has_alpha: bool) -> None:
    assert isinstance(d, DecodedImage)
    assert d.format == fmt
    assert (d.width, d.height) == (w, h)
    assert d.rgb.shape == (h, w, 3) and d.rgb.dtype == np.uint8 and d.rgb.flags.c_contiguous
    if has_alpha:
        assert d.alpha is not None and d.alpha.shape == (h, w) and d.alpha.dtype == np.uint8
        assert d.alpha.flags.c_contiguous
    else:
        assert d.alpha is None


# ------------------------------------------------------------------------- decode: formats


def test_jpeg_rgb_and_grey():
    a = pattern()
    data = save(Image.fromarray(a), "JPEG", quality=95)
    d = decode_image(data)
    check_decoded(d, 40, 30, "JPEG", False)
    assert np.array_equal(d.rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(d.rgb.astype(int) - a).mean() < 8
    g = decode_image(save(Image.fromarray(a[..., 1]), "JPEG", quality=95))
    check_decoded(g, 40, 30, "JPEG", False)
    assert (g.rgb[..., 0] == g.rgb[..., 1]).all() and (g.rgb[..., 1] == g.rgb[..., 2]).all()


def test_png_8bit_modes_exact():
    a = pattern()
    rgba = np.dstack([a, np.arange(40 * 30, dtype=np.uint32).reshape(30, 40).astype(np.uint8)])
    d = decode_image(save(Image.fromarray(a), "PNG"))
    check_decoded(d, 40, 30, "PNG", False)
    assert np.array_equal(d.rgb, a)
    d = decode_image(save(Image.fromarray(rgba), "PNG"))
    check_decoded(d, 40, 30, "PNG", True)
    assert np.array_equal(d.rgb, a) and np.array_equal(d.alpha, rgba[..., 3])
    grey = a[..., 0]
    d = decode_image(save(Image.fromarray(grey), "PNG"))
    check_decoded(d, 40, 30, "PNG", False)
    assert np.array_equal(d.rgb, np.dstack([grey] * 3))
    la = Image.fromarray(np.dstack([grey, rgba[..., 3]]), "LA")
    d = decode_image(save(la, "PNG"))
    check_decoded(d, 40, 30, "PNG", True)
    assert np.array_equal(d.rgb[..., 1], grey) and np.array_equal(d.alpha, rgba[..., 3])


def test_png_1bit():
    bits = pattern()[..., 0] > 200
    d = decode_image(save(Image.fromarray(bits), "PNG"))
    check_decoded(d, 40, 30, "PNG", False)
    assert np.array_equal(d.rgb[..., 0], np.where(bits, 255, 0).astype(np.uint8))


def test_png_palette_with_and_without_trns():
    p = Image.fromarray(pattern()).quantize(4)
    expected = np.asarray(p.convert("RGB"))
    d = decode_image(save(p, "PNG"))
    check_decoded(d, 40, 30, "PNG", False)
    assert np.array_equal(d.rgb, expected)
    idx = np.asarray(p)
    transparent = int(idx[0, 0])  # the red marker's palette entry
    d = decode_image(save(p, "PNG", transparency=transparent))
    check_decoded(d, 40, 30, "PNG", True)
    assert np.array_equal(d.alpha, np.where(idx == transparent, 0, 255).astype(np.uint8))
    assert np.array_equal(d.rgb, expected)


def test_png_16bit_rgb_rgba_scaled_by_257_not_truncated():
    v = np.array([0, 200, 383, 32767, 32896, 65280, 65407, 65535], np.uint16)
    want = np.array([0, 1, 1, 127, 128, 254, 255, 255], np.uint8)  # round(v / 257)
    rgb16 = np.stack([v, v[::-1], np.full_like(v, 257 * 7)], axis=-1)[None]  # (1, 8, 3)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))
    assert ok
    d = decode_image(png.tobytes())
    check_decoded(d, 8, 1, "PNG", False)
    assert np.array_equal(d.rgb[0, :, 0], want)
    assert np.array_equal(d.rgb[0, :, 1], want[::-1])
    assert (d.rgb[0, :, 2] == 7).all()

    rgba16 = np.concatenate([rgb16, v[None, :, None]], axis=-1)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgba16[..., [2, 1, 0, 3]]))
    d = decode_image(png.tobytes())
    check_decoded(d, 8, 1, "PNG", True)
    assert np.array_equal(d.rgb[0, :, 0], want) and np.array_equal(d.alpha[0], want)


def test_png_16bit_grey_and_grey_alpha():
    v = np.array([[0, 200, 32896, 65280, 65535]], np.uint16)
    want = np.array([[0, 1, 128, 254, 255]], np.uint8)
    im = Image.fromarray(v)
    assert im.mode == "I;16"
    d = decode_image(save(im, "PNG"))
    check_decoded(d, 5, 1, "PNG", False)
    assert np.array_equal(d.rgb[..., 0], want) and np.array_equal(d.rgb[..., 2], want)

    # 16-bit grey + alpha (colour type 4), which Pillow can read but not write.
    la = np.stack([v, v[:, ::-1]], axis=-1).astype(">u2")
    raw = b"\0" + la.tobytes()
    d = decode_image(png_raw(5, 1, 16, 4, raw))
    check_decoded(d, 5, 1, "PNG", True)
    assert np.array_equal(d.rgb[..., 0], want) and np.array_equal(d.alpha, want[:, ::-1])


def test_webp_lossless_alpha_and_lossy():
    rgba = np.dstack([pattern(), np.linspace(0, 255, 40 * 30).reshape(30, 40).astype(np.uint8)])
    d = decode_image(save(Image.fromarray(rgba), "WEBP", lossless=True, exact=True))
    check_decoded(d, 40, 30, "WEBP", True)
    assert np.array_equal(d.rgb, rgba[..., :3]) and np.array_equal(d.alpha, rgba[..., 3])
    d = decode_image(save(Image.fromarray(pattern()), "WEBP", quality=90))
    check_decoded(d, 40, 30, "WEBP", False)


def test_bmp_and_tiff():
    a = pattern()
    d = decode_image(save(Image.fromarray(a), "BMP"))
    check_decoded(d, 40, 30, "BMP", False)
    assert np.array_equal(d.rgb, a)
    d = decode_image(save(Image.fromarray(a), "TIFF"))
    check_decoded(d, 40, 30, "TIFF", False)
    assert np.array_equal(d.rgb, a)
    rgba = np.dstack([a, np.full((30, 40), 77, np.uint8)])
    d = decode_image(save(Image.fromarray(rgba), "TIFF", compression="tiff_deflate"))
    check_decoded(d, 40, 30, "TIFF", True)
    assert (d.alpha == 77).all()


def test_tiff_16bit_grey_and_rgb():
    v = np.array([[0, 200, 32896, 65280, 65535]], np.uint16)
    want = np.array([[0, 1, 128, 254, 255]], np.uint8)
    d = decode_image(save(Image.fromarray(v), "TIFF"))
    check_decoded(d, 5, 1, "TIFF", False)
    assert np.array_equal(d.rgb[..., 1], want)
    rgb16 = np.stack([v, v, v[:, ::-1]], axis=-1)
    ok, tif = cv2.imencode(".tiff", np.ascontiguousarray(rgb16[..., ::-1]))
    assert ok
    d = decode_image(tif.tobytes())
    check_decoded(d, 5, 1, "TIFF", False)
    assert np.array_equal(d.rgb[..., 0], want) and np.array_equal(d.rgb[..., 2], want[:, ::-1])


def test_gif_first_frame_with_transparency():
    first = Image.fromarray(pattern()).quantize(4)
    idx = np.asarray(first)
    transparent = int(idx[-1, -1])  # the blue stripe's entry
    second = Image.new("P", first.size, 0)
    second.putpalette(first.getpalette())
    data = save(first, "GIF", save_all=True, append_images=[second], transparency=transparent, duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    d = decode_image(data)
    check_decoded(d, 40, 30, "GIF", True)
    assert np.array_equal(d.alpha, np.where(idx == transparent, 0, 255).astype(np.uint8))
    assert tuple(d.rgb[0, 0]) == tuple(np.asarray(first.convert("RGB"))[0, 0])  # frame 1, not 2


def _heif_bytes(im: Image.Image, **kw) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    try:
        return save(im, "HEIF", quality=95, **kw)
    except (KeyError, OSError, ValueError, RuntimeError) as exc:  # no HEVC encoder in this build
        pytest.skip(f"pillow-heif cannot write HEIF here: {exc}")


def test_heif():
    a = np.zeros((64, 96, 3), np.uint8)
    a[:, :48] = (220, 30, 30)
    a[:, 48:] = (30, 30, 220)
    d = decode_image(_heif_bytes(Image.fromarray(a)))
    check_decoded(d, 96, 64, "HEIF", False)
    assert np.abs(d.rgb.astype(int) - a).mean() < 8
    rgba = np.dstack([a, np.full((64, 96), 255, np.uint8)])
    rgba[:, :20, 3] = 0
    d = decode_image(_heif_bytes(Image.fromarray(rgba)))
    check_decoded(d, 96, 64, "HEIF", True)
    assert d.alpha[:, :16].max() < 20 and d.alpha[:, 30:].min() > 235


def test_heif_orientation_is_applied_once():
    a = np.full((64, 96, 3), 128, np.uint8)
    a[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _heif_bytes(Image.fromarray(a), exif=exif.tobytes())
    assert read_image_size(data)[1:] == (64, 96)
    d = decode_image(data)
    assert (d.width, d.height) == (64, 96)
    assert d.rgb[4, -4, 0] > 200 and d.rgb[4, -4, 1] < 60  # marker moved to the top-right


def test_avif():
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF plugin")
    a = np.zeros((64, 96, 3), np.uint8)
    a[:, :48] = (220, 30, 30)
    a[:, 48:] = (30, 30, 220)
    try:
        data = save(Image.fromarray(a), "AVIF", quality=95)
    except (KeyError, OSError, ValueError) as exc:
        pytest.skip(f"Pillow cannot write AVIF here: {exc}")
    d = decode_image(data)
    check_decoded(d, 96, 64, "AVIF", False)
    assert np.abs(d.rgb.astype(int) - a).mean() < 8
    assert read_image_size(data) == ("AVIF", 96, 64)


# ------------------------------------------------------------------------- orientation

# Where the stored top-left corner is displayed, per EXIF orientation.
CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def _corner_pixel(rgb: np.ndarray, corner: str) -> np.ndarray:
    y = 2 if corner[0] == "t" else -3
    x = 2 if corner[1] == "l" else -3
    return rgb[y, x]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(orientation):
    w, h = 40, 30
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(pattern(w, h)), "JPEG", quality=95, exif=exif.tobytes())
    dw, dh = (h, w) if orientation >= 5 else (w, h)
    assert read_image_size(data) == ("JPEG", dw, dh)
    d = decode_image(data)
    check_decoded(d, dw, dh, "JPEG", False)
    r, g, b = (int(c) for c in _corner_pixel(d.rgb, CORNER[orientation]))
    assert r > 200 and g < 60 and b < 60, (orientation, r, g, b)
    # ... and no other corner is red.
    for corner in {"tl", "tr", "bl", "br"} - {CORNER[orientation]}:
        assert _corner_pixel(d.rgb, corner)[0] < 200


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_matches_pillow_exif_transpose(orientation):
    rgba = np.dstack([pattern(), np.arange(30 * 40).reshape(30, 40).astype(np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(rgba), "PNG", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA"))
    d = decode_image(data)
    assert np.array_equal(d.rgb, want[..., :3]) and np.array_equal(d.alpha, want[..., 3])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_is_ignored():
    data = bytearray(save(Image.fromarray(pattern()), "JPEG", exif=b"Exif\0\0II*\0\xff\xff\xff\xff"))
    d = decode_image(bytes(data))
    assert (d.width, d.height) == (40, 30)


def _photo(w: int = 96, h: int = 64) -> np.ndarray:
    """Real photographic detail (the bundled astronaut), so chroma upsampling is exercised."""
    from pathlib import Path

    photo = Image.open(Path(__file__).resolve().parents[1] / "samples" / "astronaut.jpg").convert("RGB")
    return np.asarray(photo.resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize(
    "kw",
    [
        {"subsampling": 2},  # 4:2:0, what cameras write
        {"subsampling": 1},  # 4:2:2
        {"subsampling": 0},  # 4:4:4
        {"subsampling": 2, "progressive": True},
        {"subsampling": 2, "optimize": True, "quality": 60},
    ],
)
def test_jpeg_fast_path_is_taken_and_pixel_identical_to_pillow(kw, monkeypatch):
    pytest.importorskip("simplejpeg")
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(Image.fromarray(_photo(97, 63)), "JPEG", exif=exif.tobytes(), **{"quality": 90, **kw})
    calls = []
    fast = imaging._decode_jpeg_fast
    monkeypatch.setattr(imaging, "_decode_jpeg_fast", lambda d, im: calls.append(fast(d, im)) or calls[-1])
    d = decode_image(data)
    assert calls and calls[0] is not None, "the simplejpeg path was not used"
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(d.rgb, expected)
    check_decoded(d, 63, 97, "JPEG", False)


def test_jpeg_fast_path_grey_and_what_it_leaves_to_pillow():
    pytest.importorskip("simplejpeg")
    grey = save(Image.fromarray(_photo()[..., 1]), "JPEG", quality=90)
    im = Image.open(io.BytesIO(grey))
    rgb, alpha = imaging._decode_jpeg_fast(grey, im)
    assert alpha is None and np.array_equal(rgb, np.asarray(im.convert("RGB")))
    # CMYK, a profile that needs converting, and truncated data all go Pillow's way.
    cmyk = save(Image.fromarray(np.zeros((8, 8, 4), np.uint8), "CMYK"), "JPEG")
    tagged = save(Image.fromarray(_photo()), "JPEG", icc_profile=_swapped_linear_profile())
    rgb_jpeg = save(Image.fromarray(_photo()), "JPEG", quality=90)
    for data in (cmyk, tagged, rgb_jpeg[: len(rgb_jpeg) // 2]):
        assert imaging._decode_jpeg_fast(data, Image.open(io.BytesIO(data))) is None
    # An sRGB-named profile needs no conversion, so the fast path keeps it.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = save(Image.fromarray(_photo()), "JPEG", quality=90, icc_profile=srgb)
    assert imaging._decode_jpeg_fast(data, Image.open(io.BytesIO(data))) is not None


def test_jpeg_without_simplejpeg_decodes_the_same(monkeypatch):
    import sys

    data = save(Image.fromarray(_photo()), "JPEG", quality=90)
    with_fast = decode_image(data).rgb
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import fails as if not installed
    assert np.array_equal(decode_image(data).rgb, with_fast)


# ------------------------------------------------------------------------- colour


def test_cmyk_jpeg_to_rgb():
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16, 0] = 255  # pure cyan
    cmyk[:, 16:, 3] = 255  # pure black
    d = decode_image(save(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
    check_decoded(d, 32, 16, "JPEG", False)
    assert np.abs(d.rgb[8, 4].astype(int) - (0, 255, 255)).max() <= 6
    assert d.rgb[8, 28].max() <= 6


def _swapped_linear_profile() -> bytes:
    """sRGB primaries with red and green swapped and a linear (gamma 1.0) curve."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).profile
    r, g, b = (c[0] for c in (srgb.red_colorant, srgb.green_colorant, srgb.blue_colorant))
    return icc_rgb_profile("Swapped linear test RGB", (g, r, b), gamma=1.0)


def test_icc_profile_non_srgb_is_converted():
    icc = _swapped_linear_profile()
    parsed = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile
    assert parsed.xcolor_space.strip() == "RGB"
    vals = np.array([0, 32, 64, 128, 200, 255], np.uint8)
    a = np.zeros((3, 6, 3), np.uint8)
    a[0, :, 0] = vals  # stored red ramp
    a[1, :, 1] = vals  # stored green ramp
    a[2, :] = vals[:, None]  # grey ramp
    d = decode_image(save(Image.fromarray(a), "PNG", icc_profile=icc))
    expect = np.round(255 * srgb_encode(vals / 255)).astype(int)
    # Red in this space is sRGB green (and vice versa), linear light -> sRGB curve.
    assert np.abs(d.rgb[0, :, 1].astype(int) - expect).max() <= 2, d.rgb[0]
    assert d.rgb[0, :, 0].max() <= 2 and d.rgb[0, :, 2].max() <= 2
    assert np.abs(d.rgb[1, :, 0].astype(int) - expect).max() <= 2
    for c in range(3):
        assert np.abs(d.rgb[2, :, c].astype(int) - expect).max() <= 2
    assert np.abs(d.rgb.astype(int) - a).max() > 50  # a plain decode would have kept them

    # JPEG carries the profile in APP2; compare with the same maths on its raw pixels.
    photo = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    data = save(Image.fromarray(photo), "JPEG", quality=90, icc_profile=icc)
    raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    expect = np.round(255 * srgb_encode(raw[..., [1, 0, 2]] / 255)).astype(int)
    assert np.abs(decode_image(data).rgb.astype(int) - expect).max() <= 2


def test_icc_profile_with_alpha_keeps_alpha():
    icc = _swapped_linear_profile()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 128
    rgba[..., 3] = [[0, 64], [128, 255]]
    d = decode_image(save(Image.fromarray(rgba), "PNG", icc_profile=icc))
    assert np.array_equal(d.alpha, rgba[..., 3])
    assert abs(int(d.rgb[0, 0, 1]) - 188) <= 2 and d.rgb[0, 0, 0] <= 2


def test_grey_icc_profile_is_converted():
    icc = icc_rgb_profile("Linear grey", None, gamma=1.0, space=b"GRAY")
    grey = np.array([[0, 64, 128, 255]], np.uint8)
    expect = np.round(255 * srgb_encode(grey / 255)).astype(int)
    for im in (Image.fromarray(grey), Image.fromarray(np.dstack([grey, grey]), "LA")):
        d = decode_image(save(im, "PNG", icc_profile=icc))
        for c in range(3):
            assert np.abs(d.rgb[..., c].astype(int) - expect).max() <= 2, d.rgb
    assert np.array_equal(d.alpha, grey)


def test_srgb_profile_is_a_no_op_and_bad_profile_ignored():
    a = pattern()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert np.array_equal(decode_image(save(Image.fromarray(a), "PNG", icc_profile=srgb)).rgb, a)
    assert np.array_equal(decode_image(save(Image.fromarray(a), "PNG", icc_profile=b"not a profile")).rgb, a)


# ------------------------------------------------------------------------- limits and errors


def test_pixel_limit_refused_before_pixel_decode(monkeypatch):
    data = save(Image.fromarray(pattern(20, 20)), "PNG")

    def boom(self, *a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(data, max_pixels=399, name="small.png")
    msg = str(ei.value)
    assert "'small.png'" in msg and "20x20" in msg and "BEN2_WORKER_MAX_PIXELS" in msg
    monkeypatch.undo()
    assert decode_image(data, max_pixels=400).width == 20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_message_from_header_only_png():
    # 12000x9000 claimed, no pixel data at all: must be "too large", never "corrupt".
    data = png_raw(12000, 9000, 8, 2, b"")[: 33 + 8]  # signature, IHDR, IDAT's length and tag
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(data, name="foo.jpg")
    assert str(ei.value) == (
        "image 'foo.jpg' is 12000x9000 = 108.0 MP, over the 50.0 MP limit (BEN2_WORKER_MAX_PIXELS)"
    )
    assert read_image_size(data) == ("PNG", 12000, 9000)


def test_decompression_bomb_becomes_too_large():
    before = Image.MAX_IMAGE_PIXELS
    data = png_raw(20000, 20000, 8, 6, b"")[: 33 + 8]  # 400 MP: Pillow refuses inside Image.open
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(data, name="bomb.png")
    assert "'bomb.png'" in str(ei.value) and "400.0 MP" in str(ei.value)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=10**9)
    assert Image.MAX_IMAGE_PIXELS == before  # global Pillow state untouched


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_data_is_a_decode_error(fmt):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = save(Image.fromarray(noisy), fmt)
    # len - 40 loses the last rows' compressed bytes (IEND and the zlib checksum are 20).
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(ImageDecodeError) as ei:
            decode_image(data[:cut], name="x")
        assert not isinstance(ei.value, ImageTooLargeError)
        assert str(ei.value).startswith(f"image 'x': truncated or corrupt {fmt} data")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_16bit_png_is_a_decode_error():
    noisy = np.random.default_rng(5).integers(0, 65536, (64, 64, 3), dtype=np.uint16)
    data = cv2.imencode(".png", noisy)[1].tobytes()
    with pytest.raises(ImageDecodeError, match="truncated or corrupt PNG"):
        decode_image(data[: len(data) // 2])


def test_truncated_header():
    data = save(Image.fromarray(pattern()), "PNG")[:20]
    with pytest.raises(ImageDecodeError, match="truncated or corrupt PNG"):
        decode_image(data)
    with pytest.raises(ImageDecodeError):
        read_image_size(data)


def test_random_and_empty_bytes():
    junk = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match=r"image 'x': data is not a recognised image format \(JPEG, PNG, WebP"):
        decode_image(junk, name="x")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", name="x")
    with pytest.raises(ImageDecodeError):
        read_image_size(junk)
    with pytest.raises(ImageDecodeError):
        read_image_size(b"")


def test_unlisted_formats_are_not_parsed():
    # Pillow reads PPM and ICO, but only the whitelisted parsers see untrusted bytes.
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode_image(save(Image.fromarray(pattern()), "PPM"))


def test_errors_are_input_errors_with_field():
    with pytest.raises(InputError) as ei:
        decode_image(b"nope", name="upload.bin")
    assert ei.value.field == "upload.bin"


def test_decode_file(tmp_path):
    p = tmp_path / "in.png"
    p.write_bytes(save(Image.fromarray(pattern()), "PNG"))
    assert np.array_equal(decode_file(p).rgb, pattern())
    assert decode_file(str(p)).format == "PNG"
    with pytest.raises(ImageTooLargeError, match="in.png"):
        decode_file(p, max_pixels=100)
    with pytest.raises(InputError, match="missing.png"):
        decode_file(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        decode_file(bad)


def test_decoded_arrays_are_writable():
    d = decode_image(save(Image.fromarray(pattern()), "JPEG"))
    d.rgb[0, 0] = 0  # the caller owns the pixels


# ------------------------------------------------------------------------- encode


def _rgba(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[:, : w // 4, 3] = 0
    a[:, w // 4 : w // 2, 3] = 255
    return a


PNG_FORBIDDEN = {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"tIME", b"pHYs", b"fdEC"}


@pytest.mark.parametrize("fallback", [False, True], ids=["default", "opencv-fallback"])
@pytest.mark.parametrize("shape", [(48, 64, 4), (48, 64, 3), (48, 64), (1, 1, 4), (7, 3, 3)])
def test_encode_png_roundtrip_exact_no_metadata(monkeypatch, fallback, shape):
    if fallback:
        monkeypatch.setattr(imaging, "_FPNG", None)
        monkeypatch.setattr(imaging, "_FPNG_CHECKED", True)
    a = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(a)
    assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}
    assert not PNG_FORBIDDEN & set(png_chunks(data))
    back = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(back, a)
    assert encode_image(a, "png") == data


def test_encode_png_accepts_non_contiguous_views():
    a = _rgba()
    view = a[::2, ::-1]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(view)))), view)


def test_encode_webp_lossless_for_alpha_exact_and_clean():
    a = _rgba()
    data = encode_image(a, "webp")
    assert not {b"EXIF", b"XMP ", b"ICCP"} & set(webp_chunks(data))
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert np.array_equal(back, a)  # exact, even the colour under alpha 0
    d = decode_image(data)
    assert np.array_equal(d.alpha, a[..., 3])


def test_encode_webp_lossy_and_forced_modes():
    rgb = np.ascontiguousarray(np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None], 48, 0)[..., None].repeat(3, 2))
    lossy = encode_image(rgb, "webp")
    assert b"VP8 " in webp_chunks(lossy) or b"VP8X" in webp_chunks(lossy)
    assert np.abs(np.asarray(Image.open(io.BytesIO(lossy))).astype(int) - rgb).mean() < 4
    exact = encode_image(rgb, "webp", lossless=True)
    assert b"VP8L" in webp_chunks(exact)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(exact)).convert("RGB")), rgb)
    a = _rgba()
    lossy_alpha = encode_image(a, "webp", quality=80)
    assert b"ALPH" in webp_chunks(lossy_alpha)
    assert not {b"EXIF", b"XMP ", b"ICCP"} & set(webp_chunks(lossy_alpha))
    grey = encode_image(rgb[..., 0], "webp", lossless=True)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(grey)).convert("RGB")), rgb)


def test_encode_jpeg_composites_over_background_no_metadata():
    a = np.zeros((32, 48, 4), np.uint8)
    a[..., :3] = (200, 10, 10)
    a[:, :24, 3] = 0
    a[:, 24:, 3] = 255
    for bg in ((255, 255, 255), (0, 255, 0), (12, 34, 56)):
        data = encode_image(a, "jpg", background=bg)
        assert not {0xE1, 0xE2, 0xED, 0xFE} & set(jpeg_markers(data))  # EXIF/XMP, ICC, IPTC, comment
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        assert np.abs(back[16, 6] - bg).max() <= 4, (bg, back[16, 6])
        assert np.abs(back[16, 42] - (200, 10, 10)).max() <= 6
    half = a.copy()
    half[..., 3] = 128
    back = np.asarray(Image.open(io.BytesIO(encode_image(half, "jpeg", background=(0, 0, 0), quality=100))))
    assert abs(int(back[16, 24, 0]) - 100) <= 3
    grey = encode_image(a[..., 0], "jpeg")
    assert Image.open(io.BytesIO(grey)).mode == "L"


def test_encode_has_no_metadata_even_from_a_tagged_source():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"
    src = save(Image.fromarray(pattern()), "JPEG", exif=exif.tobytes(), icc_profile=_swapped_linear_profile())
    d = decode_image(src)
    for fmt in ("png", "webp", "jpeg"):
        out = encode_image(np.dstack([d.rgb, np.full(d.rgb.shape[:2], 255, np.uint8)]), fmt)
        assert b"SecretCam" not in out and b"Exif" not in out and b"acsp" not in out


def test_encode_validation():
    with pytest.raises(InputError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32), "png")
    with pytest.raises(InputError, match="shape"):
        encode_image(np.zeros((4, 4, 2), np.uint8), "png")
    with pytest.raises(InputError, match="empty"):
        encode_png(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(InputError, match="quality"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "jpeg", quality=0)
    with pytest.raises(InputError, match="background"):
        encode_image(np.zeros((4, 4, 4), np.uint8), "jpeg", background=(0, 0, 300))
    with pytest.raises(InputError, match="'gif'"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "gif")


def test_normalize_format_and_extensions():
    assert normalize_format("JPG") == "jpeg"
    assert normalize_format(" png ") == "png"
    assert normalize_format(".webp") == "webp"
    assert FORMAT_EXTENSIONS == {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
    with pytest.raises(InputError) as ei:
        normalize_format("tiff")
    assert "'tiff'" in str(ei.value) and "png, webp, jpeg" in str(ei.value)


def test_parse_color():
    assert parse_color("white") == (255, 255, 255)
    assert parse_color("Black") == (0, 0, 0)
    assert parse_color("red") == (255, 0, 0)
    assert parse_color("green") == (0, 255, 0)
    assert parse_color("blue") == (0, 0, 255)
    assert parse_color("#0A0b0C") == (10, 11, 12)
    assert parse_color("0a0b0c") == (10, 11, 12)
    assert parse_color("#fa0") == (255, 170, 0)
    for bad in ("purple", "#12345", "#gggggg", "", "rgb(1,2,3)"):
        with pytest.raises(InputError) as ei:
            parse_color(bad)
        assert repr(bad) in str(ei.value)


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, ben2_worker.imaging; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
