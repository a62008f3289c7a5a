"""Image decode and encode for every adapter, with no torch import.

Decoding turns whatever a user uploads (JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF, AVIF)
into one shape: 8-bit sRGB pixels as displayed (EXIF orientation applied, ICC profiles and
CMYK converted), plus the source alpha when it had one. The pixel limit is checked from the
header, before any pixel is decoded, so a small file that claims to be huge costs nothing.

Encoding writes PNG, WebP or JPEG with no metadata at all, so a cut-out never leaks the
uploader's EXIF (GPS, camera serial) back out. PNG uses the fastest lossless encoder that
is installed; see docs/imaging.md for the measurements behind that choice.
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError, features

from .config import DEFAULT_MAX_PIXELS
from .errors import ImageDecodeError, ImageTooLargeError, InputError

__all__ = [
    "DecodedImage",
    "FORMAT_EXTENSIONS",
    "decode_file",
    "decode_image",
    "encode_image",
    "encode_png",
    "normalize_format",
    "parse_color",
    "read_image_size",
]

#: Output formats and the file extension each is written with.
FORMAT_EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}

_FORMAT_ALIASES = {"jpg": "jpeg"}

#: Pillow plugins we let parse untrusted bytes. A whitelist keeps exotic parsers (EPS via
#: Ghostscript, PSD, ...) away from uploads. MPO is how Pillow names phone JPEGs that carry
#: a second (depth/preview) picture; we report it as JPEG.
_DECODE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF")
_FORMAT_REPORTED = {"MPO": "JPEG"}
_FORMATS_FOR_HUMANS = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIF/HEIC, AVIF"

#: What a plugin may raise on bad bytes. Anything else (MemoryError, our own bugs) escapes.
_DECODE_EXCEPTIONS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    RuntimeError,
    ImageCms.PyCMSError,
)

_ORIENTATION_TAG = 0x0112

_NAMED_COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),  # chroma-key green, not CSS's (0, 128, 0)
    "blue": (0, 0, 255),
}

_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """Displayed-orientation sRGB pixels; ``eq=False`` because arrays have no truth value."""

    rgb: np.ndarray  #: (H, W, 3) uint8, C-contiguous, sRGB, EXIF orientation applied
    alpha: np.ndarray | None  #: (H, W) uint8 when the source had alpha/transparency
    format: str  #: source format: JPEG, PNG, WEBP, BMP, TIFF, GIF, HEIF, AVIF

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


# ---------------------------------------------------------------------------- plugins


@functools.cache
def _plugins() -> tuple[str, ...]:
    """Register HEIF (and AVIF if Pillow lacks it) once; return the formats we can open.

    AVIF comes from Pillow's own plugin (wheels >= 11.3 bundle libavif). pillow-heif is only
    asked for AVIF when Pillow has none: pillow-heif >= 1.0 dropped AVIF, so that branch is
    for old installs."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
            pillow_heif.register_avif_opener()
    except ImportError:  # slim environments: HEIF simply is not offered
        pass
    Image.init()
    return tuple(f for f in _DECODE_FORMATS if f in Image.OPEN)


def _sniff(data: bytes) -> str | None:
    """Format from magic bytes, only to word error messages for truncated headers."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIF"
    return None


# ---------------------------------------------------------------------------- decode


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def _too_large(name: str, width: int, height: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image {name!r} is {width}x{height} = {_mp(width * height)}, over the "
        f"{_mp(max_pixels)} limit (BEN2_WORKER_MAX_PIXELS)",
        field=name,
    )


def _bomb(name: str, exc: Exception, max_pixels: int | None) -> ImageTooLargeError:
    """Pillow's own decompression-bomb refusal, reworded; we never touch MAX_IMAGE_PIXELS.

    Pillow refuses above 2 x Image.MAX_IMAGE_PIXELS (~179 MP) in Image.open, before we see
    the size; a BEN2_WORKER_MAX_PIXELS above that is capped by Pillow's limit."""
    m = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(m.group(1)) if m else None
    size = _mp(pixels) if pixels else "too large"
    if max_pixels is not None and (pixels is None or pixels > max_pixels):
        return ImageTooLargeError(
            f"image {name!r} is {size}, over the {_mp(max_pixels)} limit (BEN2_WORKER_MAX_PIXELS)",
            field=name,
        )
    return ImageTooLargeError(
        f"image {name!r} is {size}, over Pillow's decompression-bomb limit "
        f"(2 x PIL.Image.MAX_IMAGE_PIXELS), which also caps BEN2_WORKER_MAX_PIXELS: {exc}",
        field=name,
    )


def _corrupt(name: str, fmt: str, exc: BaseException | str) -> ImageDecodeError:
    detail = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return ImageDecodeError(f"image {name!r}: truncated or corrupt {fmt} data: {detail}", field=name)


def _open(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """Parse the header only. Raises our errors; the size check needs no pixels."""
    if not data:
        raise ImageDecodeError(f"image {name!r}: data is empty (0 bytes)", field=name)
    formats = _plugins()
    try:
        im = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise _bomb(name, exc, max_pixels) from None
    except UnidentifiedImageError:
        sniffed = _sniff(data)
        if sniffed is not None and sniffed in formats:
            raise _corrupt(name, sniffed, "cannot read the header") from None
        raise ImageDecodeError(
            f"image {name!r}: data is not a recognised image format ({_FORMATS_FOR_HUMANS})",
            field=name,
        ) from None
    except _DECODE_EXCEPTIONS as exc:
        raise _corrupt(name, _sniff(data) or "image", exc) from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise _corrupt(name, im.format or "image", f"invalid size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise _too_large(name, width, height, max_pixels)
    return im


def _orientation(im: Image.Image, *, header_only: bool) -> int:
    """EXIF orientation 1-8; a corrupt EXIF block counts as 1 rather than failing the image.

    PNG's getexif() loads pixels (eXIf may follow IDAT), so header-only callers use what
    the header already gave. HEIF comes back already rotated (libheif applies irot/imir
    and pillow-heif resets the tag); Pillow's AVIF plugin maps irot/imir to this tag."""
    try:
        if header_only and im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - metadata must never block the pixels
        return 1
    return value if 1 <= value <= 8 else 1


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _scale16(a: np.ndarray) -> np.ndarray:
    """16-bit to 8-bit by round(v / 257): 65535 -> 255, 32896 -> 128; never clip or truncate."""
    a32 = a.astype(np.uint32)
    a32 += 128
    a32 //= 257
    return a32.astype(np.uint8)


def _decode16_cv2(data: bytes, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None] | None:
    """16-bit colour PNG/TIFF via OpenCV, which keeps all 16 bits (Pillow keeps the high byte).

    Returns None when OpenCV disagrees about the size, so Pillow decodes instead."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # no EXIF rotation
    if arr is None:
        raise OSError("OpenCV could not decode the 16-bit pixel data")
    if arr.shape[:2] != (im.height, im.width) or arr.dtype not in (np.uint16, np.uint8):
        return None
    a8 = _scale16(arr) if arr.dtype == np.uint16 else arr
    if a8.ndim == 2:
        return np.repeat(a8[..., None], 3, axis=2), None
    channels = a8.shape[2]
    if channels == 1:
        return np.repeat(a8, 3, axis=2), None
    if channels == 2:
        return np.repeat(a8[..., :1], 3, axis=2), np.ascontiguousarray(a8[..., 1])
    rgb = np.ascontiguousarray(a8[..., 2::-1])
    alpha = np.ascontiguousarray(a8[..., 3]) if channels == 4 else None
    return rgb, alpha


_SRGB_PROFILE = None


def _srgb() -> ImageCms.ImageCmsProfile:
    global _SRGB_PROFILE
    if _SRGB_PROFILE is None:
        _SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB_PROFILE


@functools.lru_cache(maxsize=16)
def _icc_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from the embedded profile to sRGB, or None when none is needed.

    Profiles named sRGB are skipped (the common case costs nothing). NOCACHE makes the
    transform safe to share between threads."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = profile.profile.xcolor_space.strip()
    wanted = {"RGB": "RGB", "CMYK": "CMYK", "L": "GRAY"}.get(mode)
    if space != wanted:
        return None  # a profile that does not describe these pixels: ignore it
    if mode == "RGB" and "srgb" in (profile.profile.profile_description or "").lower():
        return None
    return ImageCms.buildTransform(
        profile,
        _srgb(),
        mode,
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
        flags=ImageCms.Flags.NOCACHE,
    )


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Apply the embedded ICC profile; an unusable profile is ignored (pixels taken as sRGB)."""
    if icc and im.mode in ("RGB", "CMYK", "L"):
        try:
            transform = _icc_transform(bytes(icc), im.mode)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            transform = None
        if transform is not None:
            return ImageCms.applyTransform(im, transform)
    return im.convert("RGB") if im.mode != "RGB" else im


def _pil_to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any loaded Pillow image to (rgb, alpha) uint8 arrays, sRGB via its ICC profile."""
    icc = im.info.get("icc_profile")
    mode = im.mode
    alpha: np.ndarray | None = None

    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if mode == "I":
            a = np.clip(a, 0, 65535)
        grey = _scale16(a)
        t = im.info.get("transparency")
        if isinstance(t, int):
            alpha = np.where(a == t, 0, 255).astype(np.uint8)
        im = Image.fromarray(grey, "L")
        mode = "L"
    elif mode == "F":
        raise ValueError("32-bit floating-point images are not supported")
    elif mode == "RGBA":
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("RGB")
    elif mode == "LA":  # stays grey, so a GRAY ICC profile still applies
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("L")
    elif mode in ("La", "PA", "RGBa") or (mode in ("P", "L", "RGB", "1") and im.has_transparency_data):
        im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("RGB")
    elif mode == "1" or mode == "P":
        im = im.convert("RGB")
    elif mode not in ("RGB", "L", "CMYK"):
        im = im.convert("RGB")  # YCbCr, LAB, HSV: Pillow's own conversion

    im = _to_srgb(im, icc)
    rgb = np.asarray(im)
    return rgb, alpha


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """ImageOps.exif_transpose's mapping, done on arrays with OpenCV's SIMD flips/rotations
    (a strided numpy copy of a rotated 12 MP photo costs ~90 ms; these ~10 ms)."""
    import cv2

    if orientation in (2, 3, 4, 5, 6, 7, 8):
        a = np.ascontiguousarray(a)
    if orientation == 2:
        a = cv2.flip(a, 1)
    elif orientation == 3:
        a = cv2.rotate(a, cv2.ROTATE_180)
    elif orientation == 4:
        a = cv2.flip(a, 0)
    elif orientation == 5:
        a = cv2.transpose(a)
    elif orientation == 6:
        a = cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        a = cv2.rotate(cv2.transpose(a), cv2.ROTATE_180)
    elif orientation == 8:
        a = cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return np.require(a, np.uint8, ["C", "W"])  # the caller owns a writable copy


def _needs_colour_transform(im: Image.Image) -> bool:
    icc = im.info.get("icc_profile")
    if not icc:
        return False
    try:
        return _icc_transform(bytes(icc), im.mode) is not None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return False  # an unusable profile is ignored on every path


def _decode_jpeg_fast(data: bytes, im: Image.Image) -> tuple[np.ndarray, None] | None:
    """RGB or grey JPEG straight into a numpy array with libjpeg-turbo (simplejpeg), skipping
    Pillow's decode-then-copy (~40 ms of a 12 MP photo's ~90 ms).

    Same pixels as Pillow (both libjpeg-turbo, accurate DCT, smooth upsampling; a test
    compares them). Anything else takes Pillow's path, so its handling stays exactly as it
    was: CMYK/YCCK, a profile that needs converting, a missing simplejpeg, and any data
    simplejpeg refuses (it is strict about corrupt or truncated data, and Pillow then words
    the error)."""
    if im.mode not in ("RGB", "L") or _needs_colour_transform(im):
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
    except (ValueError, OSError):
        return None
    if rgb.shape[:2] != (im.height, im.width):
        return None
    return rgb, None


def read_image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) as displayed, from the header alone, to refuse early and cheaply.

    Width and height are swapped for EXIF orientations 5-8. For PNG an eXIf chunk placed
    after the pixel data is not seen (reading it would mean decoding)."""
    im = _open(bytes(data), "image", None)
    with im:
        fmt = _FORMAT_REPORTED.get(im.format or "", im.format or "unknown")
        width, height = im.size
        if _orientation(im, header_only=True) >= 5:
            width, height = height, width
    return fmt, width, height


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image"
) -> DecodedImage:
    """Decode untrusted bytes to displayed sRGB pixels, refusing oversize images unread.

    Truncated data is an error (LOAD_TRUNCATED_IMAGES is never enabled): half a photo
    would otherwise be cut out and returned as if it were whole."""
    data = bytes(data)
    im = _open(data, name, max_pixels)
    fmt = _FORMAT_REPORTED.get(im.format or "", im.format or "unknown")
    with im:
        try:
            decoded = None
            if im.format in ("PNG", "TIFF") and ";16" in _rawmode(im) and im.mode in ("RGB", "RGBA", "LA"):
                decoded = _decode16_cv2(data, im)
                if decoded is not None:
                    icc = im.info.get("icc_profile")
                    if icc:
                        rgb = np.asarray(_to_srgb(Image.fromarray(decoded[0], "RGB"), icc))
                        decoded = (rgb, decoded[1])
            if decoded is None and im.format in ("JPEG", "MPO"):
                decoded = _decode_jpeg_fast(data, im)
            if decoded is None:
                im.load()
                decoded = _pil_to_arrays(im)
            orientation = _orientation(im, header_only=False)
        except Image.DecompressionBombError as exc:
            raise _bomb(name, exc, max_pixels) from None
        except _DECODE_EXCEPTIONS as exc:
            raise _corrupt(name, fmt, exc) from None
    rgb, alpha = decoded
    rgb = _orient(rgb, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    return DecodedImage(rgb=rgb, alpha=alpha, format=fmt)


def decode_file(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """decode_image on a file's bytes; errors name the path."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"image {name!r}: cannot read file: {exc.strerror or exc}", field=name) from None
    return decode_image(data, max_pixels=max_pixels, name=name)


# ---------------------------------------------------------------------------- encode


def normalize_format(fmt: str) -> str:
    """Canonical output format name ("jpg" -> "jpeg"); one place to validate user input."""
    key = str(fmt).strip().lower().lstrip(".")
    key = _FORMAT_ALIASES.get(key, key)
    if key not in FORMAT_EXTENSIONS:
        raise InputError(
            f"unsupported output format {fmt!r}; use one of: png, webp, jpeg (or jpg)",
            field="format",
        )
    return key


def parse_color(value: str) -> tuple[int, int, int]:
    """A background colour from a name or hex string, as users type it on a CLI or in JSON."""
    text = str(value).strip().lower()
    if text in _NAMED_COLORS:
        return _NAMED_COLORS[text]
    m = _HEX_COLOR.fullmatch(text)
    if m:
        hexs = m.group(1)
        if len(hexs) == 3:
            hexs = "".join(c * 2 for c in hexs)
        return (int(hexs[0:2], 16), int(hexs[2:4], 16), int(hexs[4:6], 16))
    raise InputError(
        f"invalid colour {value!r}: use a name ({', '.join(_NAMED_COLORS)}) or hex #RRGGBB / #RGB",
        field="color",
    )


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise InputError(f"pixels must be uint8, got {a.dtype}", field="pixels")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InputError(
            f"pixels must be (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, got shape {a.shape}",
            field="pixels",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"pixels are empty: shape {a.shape}", field="pixels")
    return np.ascontiguousarray(a)


def _fpng():
    """fpng's extension, if installed. Importing the package also registers an extra "FPNG"
    save format in Pillow; it changes nothing for other formats."""
    try:
        import fpng.fpng_ext as ext
    except ImportError:
        return None
    return ext if getattr(ext, "encode_ndarray", None) else None


_FPNG = None
_FPNG_CHECKED = False


def _strip_png_chunks(png: bytes, drop: tuple[bytes, ...]) -> bytes:
    """Remove named ancillary chunks (fpng's private ``fdEC`` marker) without re-encoding.

    The kept spans are joined from memoryviews: one copy of a 12 MP PNG's ~25 MB, not two."""
    pos, keep, start = 8, [], 0
    n = len(png)
    while pos + 8 <= n:
        (length,) = struct.unpack_from(">I", png, pos)
        tag = png[pos + 4 : pos + 8]
        end = pos + 12 + length
        if tag in drop:
            keep.append((start, pos))
            start = end
        if tag == b"IEND":
            break
        pos = end
    if not keep:
        return png
    view = memoryview(png)
    return b"".join([view[a:b] for a, b in keep] + [view[start:]])


def _encode_png_cv2(a: np.ndarray) -> bytes:
    import cv2

    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA if a.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11; Up filter measured best at level 1
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(".png", a, params)
    if not ok:
        raise RuntimeError("OpenCV failed to encode PNG")
    return buf.tobytes()


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless 8-bit PNG, fast: fpng for RGB/RGBA when installed, else OpenCV (zlib level 1).

    A 12 MP RGBA cut-out takes ~0.1-0.2 s with fpng and ~0.5-0.6 s with OpenCV, against
    ~2.4 s for Pillow at compress_level=4 (bench/bench_png.py). Output has only IHDR,
    IDAT and IEND chunks."""
    global _FPNG, _FPNG_CHECKED
    a = _check_pixels(pixels)
    if a.ndim == 3:
        if not _FPNG_CHECKED:
            _FPNG, _FPNG_CHECKED = _fpng(), True
        if _FPNG is not None:
            return _strip_png_chunks(_FPNG.encode_ndarray(a), (b"fdEC",))
    return _encode_png_cv2(a)


def _composite(a: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """RGBA over an opaque colour, rounded: JPEG has no alpha, so transparency becomes background."""
    alpha = a[..., 3:4].astype(np.uint16)
    rgb = a[..., :3].astype(np.uint16)
    bg = np.asarray(background, np.uint16).reshape(1, 1, 3)
    out = rgb * alpha + bg * (255 - alpha) + 127
    out //= 255
    return out.astype(np.uint8)


def _check_background(background) -> tuple[int, int, int]:
    try:
        r, g, b = (int(c) for c in background)
    except (TypeError, ValueError):
        raise InputError(f"background must be three integers 0-255, got {background!r}", field="background") from None
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise InputError(f"background must be three integers 0-255, got {background!r}", field="background")
    return r, g, b


def _check_quality(quality: int | None, default: int) -> int:
    if quality is None:
        return default
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise InputError(f"quality must be a whole number from 1 to 100, got {quality!r}", field="quality")
    return int(quality)


def encode_image(
    pixels: np.ndarray,
    fmt: str,
    *,
    quality: int | None = None,
    lossless: bool | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> bytes:
    """Encode grey/RGB/RGBA uint8 pixels as png, webp or jpeg, with no metadata.

    webp is lossless when the image has alpha and no quality is given (a cut-out's edge
    survives exactly), lossy at ``quality`` (default 90) otherwise; with ``lossless=True``
    ``quality`` is libwebp's effort (default 20, with method 1: ~1.8 s for 12 MP rather than
    ~6 s at libwebp's defaults). jpeg composites RGBA over ``background``; quality default
    92. png ignores ``quality`` and ``lossless``."""
    fmt = normalize_format(fmt)
    a = _check_pixels(pixels)
    if fmt == "png":
        return encode_png(a)
    buf = io.BytesIO()
    if fmt == "webp":
        has_alpha = a.ndim == 3 and a.shape[2] == 4
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)  # WebP has no grey mode
        use_lossless = lossless if lossless is not None else (has_alpha and quality is None)
        im = Image.fromarray(a, "RGBA" if has_alpha else "RGB")
        if use_lossless:
            im.save(buf, "WEBP", lossless=True, quality=_check_quality(quality, 20), method=1, exact=True)
        else:
            im.save(buf, "WEBP", quality=_check_quality(quality, 90))
        return buf.getvalue()
    # jpeg
    q = _check_quality(quality, 92)
    bg = _check_background(background)
    if a.ndim == 3 and a.shape[2] == 4:
        a = _composite(a, bg)
    Image.fromarray(a, "L" if a.ndim == 2 else "RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()
