"""Finding input images on disk and writing outputs safely.

Outputs go to a temporary file in the destination folder and are then moved into place, so a
crash or a full disk never leaves a half-written image under the final name, and an existing
file is never replaced unless the caller says so."""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
)


@dataclass(frozen=True)
class InputFile:
    path: Path
    #: Path relative to the folder it was found in (just the name for a file given directly);
    #: outputs mirror it so two ``cat.jpg`` in different folders do not collide.
    relative: Path


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def discover_inputs(specs: list[str]) -> tuple[list[InputFile], list[str]]:
    """Expand files, folders (recursively, image suffixes only) and glob patterns.

    Returns the inputs in a stable order and a list of problems (a path that does not exist,
    a glob that matched nothing), which the caller reports without stopping."""
    found: list[InputFile] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(InputFile(path, relative))

    for spec in specs:
        if _has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                problems.append(f"{spec}: no files match this pattern")
            for f in files:
                add(f, Path(f.name))
            continue
        path = Path(spec)
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                problems.append(f"{spec}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for p in images:
                add(p, p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        else:
            problems.append(f"{spec}: no such file or folder")
    return found, problems


def output_path(out_dir: Path, item: InputFile, extension: str, suffix: str = "") -> Path:
    """``out_dir/<relative folder>/<stem><suffix><extension>``."""
    rel = item.relative.with_name(item.relative.stem + suffix + extension)
    return out_dir / rel


#: Mode of every file we write (outputs, models, stamps, lock files): readable by everyone, so a
#: non-root worker or another user can read what root wrote at image build. Set explicitly on
#: each file rather than through the process-wide umask, which threads would race on.
FILE_MODE = 0o644


def make_readable(path: Path | str, mode: int = FILE_MODE) -> None:
    """Give a file we wrote its final mode (``mkstemp`` creates 0600). ``os.chmod``: Windows too."""
    os.chmod(path, mode)


def atomic_write(path: Path, data: bytes, *, overwrite: bool = False, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` all-or-nothing with ``mode``; refuse to replace an existing
    file unless asked. Used by every door (CLI outputs, the node pack's SaveImage, lock files):
    plain ``os`` calls that work on Windows Pythons too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists (use --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        make_readable(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name appeared meanwhile: no check-then-write race.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists (use --overwrite to replace it)") from None
            except OSError:  # filesystems without hard links
                if path.exists():
                    raise FileExistsError(f"{path} already exists (use --overwrite to replace it)") from None
                os.replace(tmp, path)
                return
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_input(path: Path, max_bytes: int = 512 * 1024 * 1024) -> bytes:
    """Read a whole input file, refusing absurd sizes before reading them."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: file is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit", field=str(path))
    return path.read_bytes()
