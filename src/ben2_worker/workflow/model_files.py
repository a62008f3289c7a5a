"""Model widgets written on another machine, resolved by file name inside our models folder.

A workflow saved on Windows carries ``C:/Users/.../models/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf``;
the worker has the same file under ``<models_dir>/llm/``. Only the last path component is
compared (exact first, then ignoring case), never the directory, so a path can never reach
outside the models folder."""

from __future__ import annotations

import re
from pathlib import Path

#: Folders holding GGUF files and Florence-2 model folders (ComfyUI's ``models/llm`` and
#: ``models/LLM``; on a case-insensitive file system they are one folder).
LLM_DIRS = ("llm", "LLM")


def base_name(value: str) -> str:
    """Last component of a Windows or POSIX path (``C:\\a\\b.gguf`` -> ``b.gguf``)."""
    parts = [p for p in re.split(r"[\\/]", str(value).strip()) if p]
    return parts[-1] if parts else ""


def _dirs(models_dir: Path) -> list[Path]:
    seen, out = set(), []
    for name in LLM_DIRS:
        d = Path(models_dir) / name
        if not d.is_dir():
            continue
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def available_gguf(models_dir: Path) -> dict[str, Path]:
    """File name -> path of every ``*.gguf`` in ``llm/`` and ``LLM/``."""
    found: dict[str, Path] = {}
    for d in _dirs(models_dir):
        for p in sorted(d.glob("*.gguf")):
            if p.is_file():
                found.setdefault(p.name, p)
    return found


def available_florence(models_dir: Path) -> dict[str, Path]:
    """Folder name -> path of every model folder in ``LLM/`` and ``llm/`` (kijai's loader lists these)."""
    found: dict[str, Path] = {}
    for d in _dirs(models_dir):
        for p in sorted(d.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                found.setdefault(p.name, p)
    return found


def _match(value: str, available: dict[str, Path]) -> Path | None:
    name = base_name(value)
    if not name:
        return None
    if name in available:
        return available[name]
    lowered = {k.lower(): v for k, v in available.items()}
    return lowered.get(name.lower())


def _listing(available: dict[str, Path]) -> str:
    return ", ".join(sorted(available)) if available else "none"


def resolve_gguf(value: str, models_dir: Path) -> Path:
    """The local GGUF with the same file name as ``value``; LookupError listing what is there."""
    available = available_gguf(models_dir)
    path = _match(value, available)
    if path is None:
        where = " or ".join(str(Path(models_dir) / d) for d in LLM_DIRS)
        raise LookupError(
            f"model file {base_name(value)!r} (from {value!r}) is not in {where}; available: "
            f"{_listing(available)} (place the file there, e.g. `ben2-worker models download llama`)"
        )
    return path


def resolve_florence(value: str, models_dir: Path) -> Path:
    """The local Florence-2 folder with the same name as ``value`` (``microsoft/Florence-2-base``
    matches ``LLM/Florence-2-base``); LookupError listing what is there."""
    available = available_florence(models_dir)
    path = _match(value, available)
    if path is None:
        raise LookupError(
            f"Florence-2 model {base_name(value)!r} is not in {Path(models_dir) / 'LLM'}; available: "
            f"{_listing(available)} (e.g. `ben2-worker models download florence2`)"
        )
    return path
