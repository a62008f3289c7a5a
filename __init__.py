"""ComfyUI entry point: this repository, cloned (or installed by ComfyUI-Manager /
comfy-node-install) into ``ComfyUI/custom_nodes/<any name>/``, is a custom node pack.

ComfyUI imports this file and reads ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``;
they come from ``ben2_worker.comfy_nodes`` (docs/comfyui.md), imported from this checkout's
``src/`` (or from an installed ben2-worker when ``src/`` is absent).

Nothing happens at import: the pack is loaded on the first read of either mapping (PEP 562
module ``__getattr__``). So pytest, which imports a rootdir ``__init__.py`` as a package, and any
tool that only looks at the file, import nothing, change no ``sys.path`` and need no ComfyUI."""

import os
import sys

_EXPORTS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")
__all__ = list(_EXPORTS)


def _load():
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
    if os.path.isdir(os.path.join(src, "ben2_worker")) and src not in sys.path:
        sys.path.insert(0, src)
    try:
        from ben2_worker import comfy_nodes
    except AttributeError as exc:  # never let ComfyUI's hasattr() read a load failure as "no mappings"
        raise ImportError(f"ben2-worker node pack failed to load: {exc!r}") from exc
    return {name: getattr(comfy_nodes, name) for name in _EXPORTS}


def __getattr__(name):
    if name in _EXPORTS:
        loaded = _load()
        globals().update(loaded)
        return loaded[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
