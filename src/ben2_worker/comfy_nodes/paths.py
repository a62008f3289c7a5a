"""Where the pack finds its models and writes its outputs inside ComfyUI: ComfyUI's own
``folder_paths`` (so ``extra_model_paths.yaml`` works), never a path of our own.

Folders registered at import (each appended to what ``extra_model_paths.yaml`` or another pack
already registered, never replacing it):

    ben2_onnx   <models>/ben2_onnx    BEN2_Base.onnx
    llm         <models>/llm          *.gguf (MultiDomainSafetyClassifier, LocalJSONExtractorLlama)
    LLM         <models>/LLM          *.gguf too, and Florence-2 model folders (kijai's folder)
    nudenet     <models>/nudenet      320n.onnx (else the one inside the installed nudenet wheel)

Model checks are the worker's: a file at its manifest place (``<models>/ben2_onnx/BEN2_Base.onnx``,
``<models>/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf``, ...) goes through the model store
(pinned sha256, verified once and stamped); a file elsewhere is hashed here. A file that
differs from its pin is refused unless ``BEN2_WORKER_ALLOW_CUSTOM_MODELS=1`` (never for
NudeNet, as in the worker).

Outside ComfyUI (no ``folder_paths`` module) nothing is registered and models are looked up
under ``BEN2_WORKER_MODELS``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import threading
from pathlib import Path

from ..config import Settings
from ..errors import ModelCorruptError, ModelMissingError
from ..workflow import model_files

log = logging.getLogger("ben2_worker.comfy")

BEN2_FOLDER, BEN2_FILE = "ben2_onnx", "BEN2_Base.onnx"
GGUF_FOLDERS = model_files.LLM_DIRS  # ("llm", "LLM")
FLORENCE_FOLDERS = ("LLM", "llm")
NUDENET_FOLDER, NUDENET_FILE = "nudenet", "320n.onnx"

#: name -> file extensions ComfyUI should list for it (empty: every file, as kijai registers "LLM").
FOLDERS = {BEN2_FOLDER: {".onnx"}, "llm": set(), "LLM": set(), NUDENET_FOLDER: {".onnx"}}


def comfy_folder_paths():
    """ComfyUI's ``folder_paths`` module, or None outside ComfyUI."""
    try:
        return importlib.import_module("folder_paths")
    except ImportError:
        return None


def models_root(settings: Settings) -> Path:
    fp = comfy_folder_paths()
    return Path(fp.models_dir) if fp is not None else Path(settings.models_dir)


def register_model_folders() -> list[str]:
    """Add our model folders to ComfyUI's ``folder_paths``; returns the names registered."""
    fp = comfy_folder_paths()
    if fp is None:
        return []
    base = Path(fp.models_dir)
    done = []
    for name, extensions in FOLDERS.items():
        path = str(base / name)
        table = fp.folder_names_and_paths
        if name not in table:
            table[name] = ([path], set(extensions))
        elif path not in fp.get_folder_paths(name):
            fp.add_model_folder_path(name, path)
        done.append(name)
    return done


def folders(name: str, settings: Settings) -> list[Path]:
    """The directories registered under ``name`` (ComfyUI), else ``<models>/<name>``."""
    fp = comfy_folder_paths()
    if fp is not None and name in fp.folder_names_and_paths:
        return [Path(p) for p in fp.get_folder_paths(name)]
    return [models_root(settings) / name]


def _where(dirs: list[Path]) -> str:
    return " or ".join(str(d) for d in dict.fromkeys(dirs)) or "(no folder registered)"


# ----------------------------------------------------------------------------- finding files


def ben2_path(settings: Settings) -> Path:
    dirs = folders(BEN2_FOLDER, settings)
    for d in dirs:
        if (d / BEN2_FILE).is_file():
            return d / BEN2_FILE
    raise ModelMissingError(
        f"BEN2 model not found: put {BEN2_FILE} (https://huggingface.co/PramaLLC/BEN2) in {_where(dirs)}, e.g. "
        f"`BEN2_WORKER_MODELS=<ComfyUI>/models ben2-worker models download ben2`"
    )


def gguf_files(settings: Settings) -> dict[str, Path]:
    """File name -> path of every ``*.gguf`` directly in the ``llm``/``LLM`` folders (first wins)."""
    found: dict[str, Path] = {}
    for name in GGUF_FOLDERS:
        for d in folders(name, settings):
            if d.is_dir():
                for p in sorted(d.glob("*.gguf")):
                    if p.is_file():
                        found.setdefault(p.name, p)
    return found


def gguf_path(value: str, settings: Settings) -> Path:
    """The GGUF a ``model_path`` widget names, by file name only (as the worker: a Windows path
    written on another machine resolves, and no path can reach outside the model folders)."""
    available = gguf_files(settings)
    path = model_files._match(value, available)
    if path is None:
        dirs = [d for n in GGUF_FOLDERS for d in folders(n, settings)]
        listing = ", ".join(sorted(available)) or "none"
        raise ModelMissingError(
            f"model file {model_files.base_name(value)!r} (from {value!r}) is not in {_where(dirs)}; available: "
            f"{listing} (the file name is what counts, not the folder; e.g. "
            f"`BEN2_WORKER_MODELS=<ComfyUI>/models ben2-worker models download llama`)"
        )
    return path


def florence_folders(settings: Settings) -> dict[str, Path]:
    """Folder name -> path of every model folder in ``LLM``/``llm`` (what kijai's loader lists)."""
    found: dict[str, Path] = {}
    for name in FLORENCE_FOLDERS:
        for d in folders(name, settings):
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.is_dir() and not p.name.startswith("."):
                        found.setdefault(p.name, p)
    return found


def florence_path(value: str, settings: Settings) -> Path:
    available = florence_folders(settings)
    path = model_files._match(value, available)
    if path is None:
        dirs = [d for n in FLORENCE_FOLDERS for d in folders(n, settings)]
        raise ModelMissingError(
            f"Florence-2 model {model_files.base_name(value)!r} is not in {_where(dirs)}; available: "
            f"{', '.join(sorted(available)) or 'none'} (the converted florence-community/Florence-2-base: "
            f"`BEN2_WORKER_MODELS=<ComfyUI>/models ben2-worker models download florence2`)"
        )
    return path


def nudenet_path(settings: Settings) -> Path:
    """``<models>/nudenet/320n.onnx`` if placed there, else the model inside the installed nudenet wheel."""
    dirs = folders(NUDENET_FOLDER, settings)
    for d in dirs:
        if (d / NUDENET_FILE).is_file():
            return d / NUDENET_FILE
    try:
        spec = importlib.util.find_spec("nudenet")  # locate the wheel without importing it
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / NUDENET_FILE).is_file():
            return Path(location) / NUDENET_FILE
    raise ModelMissingError(
        f"NudeNet's model {NUDENET_FILE} was not found: install the nudenet package into ComfyUI's Python "
        f"(`pip install nudenet==3.4.2`; its wheel ships the model) or copy {NUDENET_FILE} into {_where(dirs)}"
    )


# ----------------------------------------------------------------------------- verification

_verified: dict[tuple, Path] = {}
_verify_lock = threading.Lock()


def store_root(path: Path, dest: str, settings: Settings) -> Path | None:
    """The models root ``R`` with ``R / dest == path``, when the file sits at its manifest place
    inside one of our registered folders (so the store's stamp lands in a models folder, never
    in, say, site-packages for NudeNet's wheel model)."""
    parts = Path(dest).parts
    if len(path.parts) <= len(parts) or tuple(path.parts[-len(parts):]) != parts:
        return None
    root = path.parents[len(parts) - 1]
    registered = {Path(os.path.abspath(d)) for d in folders(parts[0], settings)}
    return root if Path(os.path.abspath(root / parts[0])) in registered else None


def verified(name: str, path: Path, settings: Settings, *, custom_allowed: bool | None = None) -> Path:
    """``path`` after the pinned-checksum check of manifest model ``name`` (see module docstring).

    ``custom_allowed`` defaults to ``settings.allow_custom_models`` (always False for NudeNet)."""
    from ..engines import model_path
    from ..models.store import ModelStore, load_manifest, sha256_file

    if custom_allowed is None:
        custom_allowed = settings.allow_custom_models and name != "nudenet"
    spec = load_manifest()[name]
    st = path.stat()
    key = (name, str(path), st.st_size, st.st_mtime_ns, custom_allowed)
    with _verify_lock:
        if key in _verified:
            return _verified[key]
        root = store_root(path, spec.primary, settings)
        if root is not None and name == "nudenet":
            result = ModelStore(root).require(name, full_check=True)
        elif root is not None:
            result = model_path(name, dataclasses.replace(settings, allow_custom_models=custom_allowed), root)
        elif len(spec.files) == 1 and spec.files[0].sha256:
            pinned = spec.files[0].sha256
            actual = sha256_file(path)
            if actual != pinned:
                if not custom_allowed:
                    raise ModelCorruptError(
                        f"{path} is not the pinned {name} model (sha256 {actual}, expected {pinned}); "
                        + ("NudeNet's detector is never swapped (a damaged one would release what it should block)"
                           if name == "nudenet" else
                           "to run a model of your own on purpose, set BEN2_WORKER_ALLOW_CUSTOM_MODELS=1")
                    )
                log.warning("using custom %s model %s (sha256 %s, pinned %s): BEN2_WORKER_ALLOW_CUSTOM_MODELS=1",
                            name, path, actual, pinned)
            result = path
        elif custom_allowed:
            log.warning("using %s model %s outside its manifest place unverified: BEN2_WORKER_ALLOW_CUSTOM_MODELS=1", name, path)
            result = path
        else:
            raise ModelCorruptError(
                f"{path} cannot be checked against the pinned {name} model: place it at <models>/{spec.primary} "
                f"(`BEN2_WORKER_MODELS=<ComfyUI>/models ben2-worker models download {name}`), or set "
                f"BEN2_WORKER_ALLOW_CUSTOM_MODELS=1 to run it unverified on purpose"
            )
        _verified[key] = Path(result)
        return Path(result)
