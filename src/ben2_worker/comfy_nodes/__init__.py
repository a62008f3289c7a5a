"""ben2-worker as a ComfyUI custom node pack (docs/comfyui.md).

The user's nodes — BEN2_ONNX_RemoveBg, SmartResizeForModel, RestoreOriginalSize,
FreeVRAMInline, NudeNetSafetyChecker, MultiDomainSafetyClassifier, HybridSafetyGate,
LocalJSONExtractorLlama, SaveImageNoMetadata — with their class names, inputs, types, defaults,
widget order and outputs, so saved workflows open and run unchanged; each a thin adapter over
the executor and engine the native runner uses. Plus stand-ins for kijai's Florence-2 nodes and
pysssss' ShowText, registered only where no installed pack provides them (``compat``).

Importing this package needs none of torch, transformers or llama-cpp-python: ComfyUI provides
torch, and a node whose engine library is missing says what to install when it runs. Inside
ComfyUI it registers its model folders with ``folder_paths`` (``ben2_onnx``, ``llm``, ``LLM``,
``nudenet``); outside ComfyUI it registers nothing."""

from __future__ import annotations

from . import compat, paths
from .pack import COMPAT_NODES, PACK_NODES

REGISTERED_FOLDERS = paths.register_model_folders()

NODE_CLASS_MAPPINGS: dict[str, type] = dict(PACK_NODES)
COMPAT_DECISIONS = compat.decide({**PACK_NODES, **{n: c for g in COMPAT_NODES.values() for n, c in g.items()}},
                                 tuple(PACK_NODES))
for _decision in COMPAT_DECISIONS:
    if _decision.register:
        NODE_CLASS_MAPPINGS.update(COMPAT_NODES[_decision.group])

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: cls.SPEC.display_name for name, cls in NODE_CLASS_MAPPINGS.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
