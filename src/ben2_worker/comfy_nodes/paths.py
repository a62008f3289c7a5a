"""ComfyUI's model folders for the pack: registered with ComfyUI's own ``folder_paths`` (so
``extra_model_paths.yaml`` works) and handed to the worker's model lookup and engine factory as
a :class:`~ben2_worker.models.locate.ModelFolders`. Nothing here finds or checks a file itself.

Folders registered at import (each appended to what ``extra_model_paths.yaml`` or another pack
already registered, never replacing it):

    ben2_onnx   <models>/ben2_onnx    BEN2_Base.onnx
    llm         <models>/llm          *.gguf (MultiDomainSafetyClassifier, LocalJSONExtractorLlama)
    LLM         <models>/LLM          *.gguf too, and Florence-2 model folders (kijai's folder)
    nudenet     <models>/nudenet      320n.onnx (else the one inside the installed nudenet wheel)

Outside ComfyUI (no ``folder_paths`` module) nothing is registered and models are looked up
under the worker's models folder (``BEN2_WORKER_MODELS``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import Settings
from ..models.locate import ModelFolders

#: name -> file extensions ComfyUI should list for it (empty: every file, as kijai registers "LLM").
FOLDERS = {"ben2_onnx": {".onnx"}, "llm": set(), "LLM": set(), "nudenet": {".onnx"}}


def comfy_folder_paths():
    """ComfyUI's ``folder_paths`` module, or None outside ComfyUI."""
    try:
        return importlib.import_module("folder_paths")
    except ImportError:
        return None


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


def model_folders(settings: Settings) -> ModelFolders:
    """ComfyUI's registered folders for our model folder names, else the worker's models folder."""
    fp = comfy_folder_paths()
    if fp is None:
        return ModelFolders.under(settings.models_dir)
    registered = {name: tuple(Path(p) for p in fp.get_folder_paths(name))
                  for name in FOLDERS if name in fp.folder_names_and_paths}
    return ModelFolders(Path(fp.models_dir), registered, in_comfyui=True)


def florence_folders(settings: Settings) -> dict[str, Path]:
    """Folder name -> path of every Florence-2 model folder (what kijai's loader lists)."""
    return model_folders(settings).florence_folders()


def florence_path(value: str, settings: Settings) -> Path:
    return model_folders(settings).florence(value)
