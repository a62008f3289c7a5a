"""Finding model files in a list of model folders: the one lookup every door uses.

The worker and CLI search their one models folder (``BEN2_WORKER_MODELS``); the ComfyUI pack
passes the folders ComfyUI registered (``folder_paths``, so ``extra_model_paths.yaml`` works).
Model widgets written on another machine (``C:/Users/.../models/llm/x.gguf``) are resolved by
their last path component only (exact first, then ignoring case), never by their directory, so
a widget can never reach outside the model folders."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ben2_worker.errors import ModelMissingError

__all__ = ["LLM_DIRS", "ModelFolders", "base_name", "match_name", "wheel_file"]

#: Folders holding GGUF files and Florence-2 model folders (ComfyUI's ``models/llm`` and
#: ``models/LLM``; on a case-insensitive file system they are one folder).
LLM_DIRS = ("llm", "LLM")
#: Florence-2 folders: kijai's loader lists ``LLM`` first.
FLORENCE_DIRS = ("LLM", "llm")


def base_name(value: str) -> str:
    """Last component of a Windows or POSIX path (``C:\\a\\b.gguf`` -> ``b.gguf``)."""
    parts = [p for p in re.split(r"[\\/]", str(value).strip()) if p]
    return parts[-1] if parts else ""


def match_name(value: str, available: Mapping[str, Path]) -> Path | None:
    """The entry of ``available`` named like ``value``'s last component (exact, then any case)."""
    name = base_name(value)
    if not name:
        return None
    if name in available:
        return available[name]
    return {k.lower(): v for k, v in available.items()}.get(name.lower())


def wheel_file(relative: str) -> Path | None:
    """A file shipped inside an installed package (``nudenet/320n.onnx``), found without importing it."""
    parts = PurePosixPath(relative).parts
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*parts[1:])
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class ModelFolders:
    """For each model folder name (``ben2_onnx``, ``llm``, ``LLM``, ``nudenet``), the
    directories to search, in order. ``registered`` holds ComfyUI's registrations; a name not
    registered falls back to ``<root>/<name>``."""

    root: Path
    registered: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    #: Messages name ComfyUI's folders (a cloned pack has no ``ben2-worker`` CLI) rather than the CLI.
    in_comfyui: bool = False

    @classmethod
    def under(cls, models_dir: Path) -> "ModelFolders":
        """The worker's layout: everything under one models folder."""
        return cls(Path(models_dir))

    def dirs(self, name: str) -> list[Path]:
        found = self.registered.get(name)
        return [Path(d) for d in found] if found else [self.root / name]

    def where(self, *names: str) -> str:
        dirs = [str(d) for n in names for d in self.dirs(n)]
        return " or ".join(dict.fromkeys(dirs)) or "(no folder registered)"

    def fix_hint(self, model: str) -> str:
        """How to put model ``model`` in place, for this door."""
        if self.in_comfyui:
            return "download it into one of those folders (ComfyUI's model folders; extra_model_paths.yaml adds more)"
        return f"run `ben2-worker models download {model}` (models folder {self.root}, set with BEN2_WORKER_MODELS)"

    def _distinct(self, names: tuple[str, ...]) -> list[Path]:
        seen, out = set(), []
        for name in names:
            for d in self.dirs(name):
                if d.is_dir() and d.resolve() not in seen:
                    seen.add(d.resolve())
                    out.append(d)
        return out

    def find(self, primary: str) -> Path | None:
        """A manifest file (``ben2_onnx/BEN2_Base.onnx``) in the first folder of its name holding it."""
        folder, _, rest = primary.partition("/")
        for d in self.dirs(folder):
            if (d / rest).exists():
                return d / rest
        return None

    def gguf_files(self) -> dict[str, Path]:
        """File name -> path of every ``*.gguf`` directly in the ``llm``/``LLM`` folders (first wins)."""
        found: dict[str, Path] = {}
        for d in self._distinct(LLM_DIRS):
            for p in sorted(d.glob("*.gguf")):
                if p.is_file():
                    found.setdefault(p.name, p)
        return found

    def florence_folders(self) -> dict[str, Path]:
        """Folder name -> path of every model folder in ``LLM``/``llm`` (what kijai's loader lists)."""
        found: dict[str, Path] = {}
        for d in self._distinct(FLORENCE_DIRS):
            for p in sorted(d.iterdir()):
                if p.is_dir() and not p.name.startswith("."):
                    found.setdefault(p.name, p)
        return found

    def gguf(self, value: str) -> Path:
        """The GGUF a ``model_path`` widget names, by file name; ModelMissingError listing what is there."""
        available = self.gguf_files()
        path = match_name(value, available)
        if path is None:
            raise ModelMissingError(
                f"model file {base_name(value)!r} (from {value!r}) is not in {self.where(*LLM_DIRS)}; available: "
                f"{', '.join(sorted(available)) or 'none'} (the file name is what counts, not the folder; "
                f"to get the pinned classifier model, {self.fix_hint('llama')})"
            )
        return path

    def florence(self, value: str) -> Path:
        """The Florence-2 folder a model widget names (``microsoft/Florence-2-base`` -> ``LLM/Florence-2-base``)."""
        available = self.florence_folders()
        path = match_name(value, available)
        if path is None:
            raise ModelMissingError(
                f"Florence-2 model {base_name(value)!r} is not in {self.where(*FLORENCE_DIRS)}; available: "
                f"{', '.join(sorted(available)) or 'none'} (the converted florence-community/Florence-2-base: "
                f"{self.fix_hint('florence2')})"
            )
        return path
