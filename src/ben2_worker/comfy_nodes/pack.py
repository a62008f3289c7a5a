"""The node classes ComfyUI loads: thin adapters over the native runner's executors.

Every class takes its ``INPUT_TYPES``/``RETURN_TYPES``/``RETURN_NAMES``/``CATEGORY``/
``OUTPUT_NODE`` from the same :class:`~ben2_worker.workflow.spec.NodeSpec` the native runner
validates against (``ben2_worker.workflow.nodes.NODE_TYPES``), so names, types, defaults,
ranges, choices and widget order are the user's nodes' by construction. ``run`` converts
ComfyUI tensors to the worker's values at the edge (``tensors``), gets the engine from the
process-wide cache (``engines``) and calls the very executor the native runner calls
(``run_ben2``, ``run_gate``, ...): one implementation of every stage."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import Ben2WorkerError, EngineUnavailableError, InputError
from ..files import atomic_write
from ..workflow import nodes as wf
from ..workflow.spec import MISSING, NodeSpec
from ..workflow.values import Florence2ModelRef, VerdictJSON, verdict_object
from .. import engines as factory
from . import engines, paths
from .tensors import images_in, images_out, masks_out

log = logging.getLogger("ben2_worker.comfy")

#: Tooltips that describe the worker, not ComfyUI, replaced in INPUT_TYPES (nothing else changes).
TOOLTIPS = {
    ("BEN2_ONNX_RemoveBg", "provider"): "onnxruntime execution provider; falls back to CPU (logged) when not installed",
    ("Florence2ModelLoader", "model"): "a model folder in ComfyUI/models/LLM (converted florence-community checkpoint)",
}


# ----------------------------------------------------------------------------- helpers


def input_types(spec: NodeSpec) -> dict:
    """ComfyUI's INPUT_TYPES for ``spec``: the spec's own dict, machine-dependent COMBO lists
    filled in, plus ComfyUI's hidden node id (used in error messages)."""
    types = copy.deepcopy(spec.input_types())
    for section in ("required", "optional"):
        for name, entry in types.get(section, {}).items():
            tip = TOOLTIPS.get((spec.class_type, name))
            if tip and len(entry) > 1:
                entry[1]["tooltip"] = tip
    if spec.class_type == "Florence2ModelLoader":
        choices = sorted(paths.florence_folders(engines.settings()))
        first = types["required"]["model"]
        types["required"]["model"] = (choices, *first[1:])
    types["hidden"] = {"unique_id": "UNIQUE_ID"}
    return types


def _values(spec: NodeSpec, given: dict) -> dict:
    """The node's inputs: what ComfyUI passed, the spec's defaults for omitted optional ones."""
    out = {}
    for inp in spec.inputs:
        if inp.name in given and given[inp.name] is not None:
            out[inp.name] = given[inp.name]
        elif inp.default is not MISSING:
            out[inp.name] = inp.default
        elif not inp.required:
            out[inp.name] = None
    return out


def _node_id(cls: type, unique_id: Any) -> str:
    return str(unique_id) if unique_id is not None else cls.SPEC.class_type


def _ctx(**parts: Any) -> wf.RunContext:
    return wf.RunContext(engines=engines.engines_with(**parts), images={})


def _check_interrupt() -> None:
    """Let ComfyUI's cancel button stop a batch between images."""
    try:
        from comfy import model_management
    except ImportError:
        return
    check = getattr(model_management, "throw_exception_if_processing_interrupted", None)
    if callable(check):
        check()


def _each(values: list, fn) -> list:
    out = []
    for i, value in enumerate(values):
        if i:
            _check_interrupt()
        out.append(fn(value))
    return out


def model_files(class_type: str, values: dict) -> list[Path]:
    """The model files a node of ``class_type`` runs on, for these input values (empty for
    nodes without a model). Raises ModelError when they cannot be found."""
    s = engines.settings()
    folders = paths.model_folders(s)
    if class_type == "BEN2_ONNX_RemoveBg":
        return [factory.model_file("ben2", s, folders)]
    if class_type == "NudeNetSafetyChecker":
        return [factory.model_file("nudenet", s, folders)]
    if class_type in ("MultiDomainSafetyClassifier", "LocalJSONExtractorLlama"):
        return [folders.gguf(str(values.get("model_path", wf.DEFAULT_GGUF)))]
    if class_type == "Florence2ModelLoader":
        folder = folders.florence(str(values.get("model", "")))
        return sorted(p for p in folder.rglob("*") if p.is_file())
    return []


def model_stamps(class_type: str, values: dict) -> str:
    """ComfyUI's ``IS_CHANGED`` value: the model files' paths, sizes and modification times, so
    a replaced model file re-runs the node instead of serving the cached output of the old one.
    A file that cannot be found changes every time (the node then runs and says what is missing)."""
    try:
        files = model_files(class_type, values)
    except (Ben2WorkerError, OSError):
        return f"unresolved-{time.time_ns()}"
    stamps = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            return f"unresolved-{time.time_ns()}"
        stamps.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(stamps)


class _Node:
    SPEC: NodeSpec
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - ComfyUI's name
        return input_types(cls.SPEC)

    @classmethod
    def IS_CHANGED(cls, **given: Any) -> str:  # noqa: N802 - ComfyUI's name
        return model_stamps(cls.SPEC.class_type, given)

    def run(self, unique_id: Any = None, **given: Any):
        values = _values(self.SPEC, given)
        return self.compute(_node_id(type(self), unique_id), **values)

    def compute(self, node_id: str, **values: Any):  # pragma: no cover - every node defines it
        raise NotImplementedError


def _node(class_type: str, description: str):
    """Class decorator: ComfyUI's class attributes from the spec of ``class_type``."""
    spec = wf.NODE_TYPES[class_type]

    def make(cls: type) -> type:
        cls.SPEC = spec
        cls.RETURN_TYPES = tuple(spec.return_types)
        cls.RETURN_NAMES = tuple(spec.return_names)
        cls.CATEGORY = spec.category
        cls.OUTPUT_NODE = spec.output_node
        cls.DESCRIPTION = description
        cls.__qualname__ = cls.__name__ = class_type.replace("|", "_")
        return cls

    return make


# ----------------------------------------------------------------------------- the user's nodes


@_node("SmartResizeForModel", "Resize to ~1 MP (BEN2) or ~4 MP, aspect kept; the output remembers its "
       "full-resolution source so RestoreOriginalSize can return a full-resolution cut-out.")
class SmartResizeForModel(_Node):
    def compute(self, node_id, image, target_model, resize_mode, interpolation):
        ctx = _ctx()
        outs = _each(images_in(image), lambda v: wf.run_smart_resize(ctx, node_id, v, target_model, resize_mode, interpolation))
        return images_out([o[0] for o in outs]), outs[0][1], outs[0][2]


@_node("RestoreOriginalSize", "Back to the original size: the full-resolution cut-out when the image comes "
       "from SmartResizeForModel -> BEN2, otherwise a plain resize.")
class RestoreOriginalSize(_Node):
    def compute(self, node_id, image, original_width, original_height, interpolation):
        ctx = _ctx()
        outs = _each(images_in(image), lambda v: wf.run_restore_size(ctx, node_id, v, original_width, original_height,
                                                                    interpolation)[0])
        return (images_out(outs),)


@_node("BEN2_ONNX_RemoveBg", "BEN2 background removal (ONNX). background 'none' gives RGBA; the mask output is "
       "the matte actually applied (after sensitivity, blur and offset).")
class BEN2_ONNX_RemoveBg(_Node):  # noqa: N801 - the user's class name
    def compute(self, node_id, image, provider, background_color, custom_hex_color, sensitivity, mask_blur, mask_offset):
        ctx = _ctx(cutout=engines.cutout(provider))
        outs = _each(images_in(image), lambda v: wf.run_ben2(ctx, node_id, v, provider, background_color, custom_hex_color,
                                                            sensitivity, mask_blur, mask_offset))
        return images_out([o[0] for o in outs]), masks_out([o[1] for o in outs])


@_node("FreeVRAMInline", "Passes the image through after ComfyUI's soft_empty_cache; unload_models also unloads "
       "ComfyUI's models and this pack's engines (reloaded on next use).")
class FreeVRAMInline(_Node):
    def compute(self, node_id, image, mode, unload_models):
        (out,) = wf.run_free_vram(_ctx(), node_id, image, mode, unload_models)  # aggressive: gc.collect()
        try:
            from comfy import model_management
        except ImportError:  # outside ComfyUI there is nothing else to free
            model_management = None
        if unload_models:
            released = engines.release_all()
            log.info("node %s (FreeVRAMInline): released %d ben2-worker engine(s)", node_id, released)
            if model_management is not None:
                model_management.unload_all_models()
        if model_management is not None:
            try:
                model_management.soft_empty_cache(force=mode == "aggressive")
            except TypeError:  # ComfyUI versions without the force argument
                model_management.soft_empty_cache()
        return (out,)  # the very same tensor: provenance survives


@_node("NudeNetSafetyChecker", "NudeNet 320n on every image of the batch; an engine error fails the node "
       "(never a 'safe' verdict). For a batch: is_nsfw if any image is, the highest score.")
class NudeNetSafetyChecker(_Node):
    def compute(self, node_id, image, threshold):
        ctx = _ctx(nudenet=engines.nudenet())
        outs = _each(images_in(image), lambda v: wf.run_nudenet(ctx, node_id, v, threshold))
        if len(outs) == 1:
            return outs[0]
        return combine_nudenet([verdict_object(o[0]) for o in outs])


def combine_nudenet(results: list[dict]) -> tuple[str, bool, float]:
    """One verdict for a batch, in the single-image shape the gate checks: NSFW if any image is,
    every NSFW detection (tagged with its ``image_index``), the highest score."""
    detections = [{**d, "image_index": i} for i, r in enumerate(results) for d in r["detections"]]
    detections.sort(key=lambda d: -float(d["score"]))
    merged = {
        "is_nsfw": any(r["is_nsfw"] for r in results),
        "max_score": max(float(r["max_score"]) for r in results),
        "threshold": results[0].get("threshold"),
        "detections": detections,
        "all_detections_count": sum(int(r.get("all_detections_count", 0)) for r in results),
        "model": results[0].get("model"),
        "batch_size": len(results),
    }
    return VerdictJSON(merged, indent=2), merged["is_nsfw"], merged["max_score"]


@_node("MultiDomainSafetyClassifier", "Llama 3.1 8B (GGUF, llama.cpp) judging the caption in five domains, "
       "output constrained by a JSON schema; anything malformed fails the node (never coerced to SAFE).")
class MultiDomainSafetyClassifier(_Node):
    def compute(self, node_id, caption, model_path, temperature, max_new_tokens, n_ctx, n_gpu_layers):
        clf = engines.classifier(model_path, n_ctx, n_gpu_layers, node="MultiDomainSafetyClassifier", pinned=True)
        return wf.run_multidomain(_ctx(classifier=clf), node_id, caption, model_path, temperature, max_new_tokens,
                                  n_ctx, n_gpu_layers)


@_node("HybridSafetyGate", "Blocks (fails the prompt) on NudeNet is_nsfw, an LLM UNSAFE (or BORDERLINE if asked) "
       "in any domain, or any missing or malformed verdict; passes the same image on otherwise.")
class HybridSafetyGate(_Node):
    def compute(self, node_id, image, nudenet_json, multidomain_json, block_unsafe, block_borderline,
                nudenet_overrides_llama):
        return wf.run_gate(_ctx(), node_id, image, nudenet_json, multidomain_json, block_unsafe, block_borderline,
                           nudenet_overrides_llama)


@_node("LocalJSONExtractorLlama", "Structured facts (primary_subject, secondary_subjects, nsfw, violence) from a "
       "caption, schema-constrained, on a local Llama GGUF.")
class LocalJSONExtractorLlama(_Node):
    def compute(self, node_id, caption, model_path, subject_priority, temperature, max_new_tokens, n_ctx, n_gpu_layers,
                seed):
        clf = engines.classifier(model_path, n_ctx, n_gpu_layers, node="LocalJSONExtractorLlama", pinned=False)
        return wf.run_json_extractor(_ctx(classifier=clf), node_id, caption, model_path, subject_priority, temperature,
                                     max_new_tokens, n_ctx, n_gpu_layers, seed)


@_node("SaveImageNoMetadata", "Saves PNGs into ComfyUI's output folder with no metadata at all (no prompt, no "
       "workflow); never replaces an existing file.")
class SaveImageNoMetadata(_Node):
    def compute(self, node_id, images, filename_prefix):
        fp = paths.comfy_folder_paths()
        if fp is None:
            raise EngineUnavailableError("SaveImageNoMetadata saves into ComfyUI's output folder: run it inside ComfyUI")
        values = images_in(images, "images")
        output_dir = fp.get_output_directory()
        folder, filename, counter, subfolder, _ = fp.get_save_image_path(filename_prefix, output_dir, values[0].width,
                                                                         values[0].height)
        ctx = _ctx()
        results = []
        for i, value in enumerate(values):
            name = filename.replace("%batch_num%", str(i))
            ctx.counters[name] = counter + i - 1  # ComfyUI's counter, one per image of the batch
            wf.run_save_no_metadata(ctx, node_id, value, filename_prefix=name)
            out = ctx.out_images[-1]
            atomic_write(Path(folder) / out.filename, out.data)  # never replaces a file
            results.append({"filename": out.filename, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": results}}


PACK_NODES: dict[str, type] = {
    cls.SPEC.class_type: cls
    for cls in (SmartResizeForModel, RestoreOriginalSize, BEN2_ONNX_RemoveBg, FreeVRAMInline, NudeNetSafetyChecker,
                MultiDomainSafetyClassifier, HybridSafetyGate, LocalJSONExtractorLlama, SaveImageNoMetadata)
}


# ----------------------------------------------------------------------------- third-party stand-ins


@_node("Florence2ModelLoader", "ben2-worker's stand-in for kijai's loader (registered only without ComfyUI-Florence2): "
       "native transformers Florence-2 from ComfyUI/models/LLM, loaded once and kept.")
class Florence2ModelLoader(_Node):
    def compute(self, node_id, model, precision, attention, lora, convert_to_safetensors):
        if lora is not None:
            raise InputError(f"node {node_id} (Florence2ModelLoader): LoRAs are not supported by ben2-worker's Florence-2 "
                             "loader; install kijai's ComfyUI-Florence2 for them", field="lora")
        engines.require_florence()  # before looking for models: say what to install first
        folder = paths.florence_path(model, engines.settings())
        ctx = _ctx(caption=engines.captioner(folder, precision, attention))
        ctx.resolved[(node_id, "model")] = folder
        return wf.run_florence_loader(ctx, node_id, model, precision, attention, lora, convert_to_safetensors)


@_node("Florence2Run", "ben2-worker's stand-in for kijai's Florence2Run (registered only without ComfyUI-Florence2): "
       "caption tasks only; the image passes through, the mask is empty.")
class Florence2Run(_Node):
    def compute(self, node_id, image, florence2_model, text_input, task, fill_mask, keep_model_loaded, max_new_tokens,
                num_beams, do_sample, output_mask_select, seed):
        problems = wf.check_florence_run(None, node_id, {"task": task, "text_input": text_input})
        if problems:
            raise InputError(f"node {node_id} (Florence2Run): {problems[0][1]}", field=problems[0][0])
        if not isinstance(florence2_model, Florence2ModelRef) or florence2_model.path is None:
            raise InputError(f"node {node_id} (Florence2Run): florence2_model must come from this pack's "
                             f"Florence2ModelLoader, got {type(florence2_model).__name__}", field="florence2_model")
        ref = florence2_model
        ctx = _ctx(caption=engines.captioner(ref.path, ref.precision, ref.attention))
        outs = _each(images_in(image), lambda v: wf.run_florence(ctx, node_id, v, ref, text_input, task, fill_mask,
                                                                keep_model_loaded, max_new_tokens, num_beams, do_sample,
                                                                output_mask_select, seed))
        captions = [o[2] for o in outs]
        caption = captions[0] if len(captions) == 1 else "\n".join(captions)
        data = outs[0][3] if len(outs) == 1 else [o[3] for o in outs]
        return image, masks_out([o[1] for o in outs]), caption, data


@_node("ShowText|pysssss", "ben2-worker's stand-in for pysssss' Show Text (registered only without "
       "ComfyUI-Custom-Scripts): the text goes to the prompt's outputs; the node shows it only with pysssss' web extension.")
class ShowText(_Node):
    """As pysssss' node: every input arrives as a list (``INPUT_IS_LIST``), the output is a list
    (``OUTPUT_IS_LIST``), and the shown text is written into the saved workflow's widget values
    (hidden ``extra_pnginfo``), so a reloaded workflow shows it."""

    INPUT_IS_LIST = True
    OUTPUT_IS_LIST = (True,)

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - ComfyUI's name
        types = input_types(cls.SPEC)
        types["hidden"] = {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}
        return types

    def run(self, text: Any = None, unique_id: Any = None, extra_pnginfo: Any = None, **_: Any):
        texts = list(text) if isinstance(text, (list, tuple)) else [text]
        node_id = _node_id(type(self), unique_id[0] if isinstance(unique_id, (list, tuple)) and unique_id else unique_id)
        ctx = _ctx()
        for item in texts:
            wf.run_show_text(ctx, node_id, item)
        shown = [t.text for t in ctx.out_texts]
        info = extra_pnginfo[0] if isinstance(extra_pnginfo, (list, tuple)) and extra_pnginfo else extra_pnginfo
        workflow = info.get("workflow") if isinstance(info, dict) else None
        if isinstance(workflow, dict):
            for node in workflow.get("nodes", []):
                if isinstance(node, dict) and str(node.get("id")) == node_id:
                    node["widgets_values"] = [shown]
        return {"ui": {"text": shown}, "result": (shown,)}


#: Third-party group (compat.GROUPS) -> our stand-in classes.
COMPAT_NODES: dict[str, dict[str, type]] = {
    "kijai/ComfyUI-Florence2": {"Florence2ModelLoader": Florence2ModelLoader, "Florence2Run": Florence2Run},
    "pysssss/ComfyUI-Custom-Scripts": {"ShowText|pysssss": ShowText},
}
