"""The node types the runner executes, with the user's input names, widget order, defaults,
ranges and choices (docs/contracts.md#the-users-nodes), each a small adapter over the same engines the simple API
uses.

Executors take ``(ctx, node_id, **inputs)`` and return a tuple matching ``RETURN_TYPES``.
Nodes whose engine is absent never run: the runner checks every needed engine before the first
node executes and raises :class:`~ben2_worker.errors.EngineUnavailableError` — never a fake
result."""

from __future__ import annotations

import gc
import json
import logging
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..budget import JobBudget
from ..cutout import (
    INTERPOLATIONS,
    TARGET_PIXELS,
    CutoutOptions,
    MatteOptions,
    check_interpolation,
    resize,
    smart_resize_size,
)
from ..errors import EngineUnavailableError, InputError
from ..imaging import decode_image, encode_image, parse_color
from ..options import BACKGROUND_PRESETS, node_range
from ..safety.caption import FLORENCE_TASKS
from ..safety.caption import TASKS as CAPTION_TASKS
from . import model_files
from .errors import ContentBlockedError, WorkflowExecutionError
from .results import OutputImage, OutputText
from .spec import MISSING, InputSpec, NodeSpec
from .values import Florence2ModelRef, ImageValue, MaskValue, VerdictJSON, verdict_object

log = logging.getLogger(__name__)


#: The ones that can run: the captioner's own task list (text answers only).
FLORENCE_TEXT_TASKS = tuple(CAPTION_TASKS)

#: LocalJSONExtractorLlama's output, as a JSON schema for constrained decoding.
EXTRACT_SCHEMA = {
    "type": "object",
    "properties": {
        "primary_subject": {"type": "string"},
        "secondary_subjects": {"type": "array", "items": {"type": "string"}},
        "nsfw": {"type": "boolean"},
        "violence": {"type": "boolean"},
    },
    "required": ["primary_subject", "secondary_subjects", "nsfw", "violence"],
}
_EXTRACT_PRIORITY = {
    "product": "If the caption mentions both a person and an object or product, the primary_subject must be the "
    "object or product being held, worn or used, not the person. ",
    "person": "If the caption mentions both a person and objects, the primary_subject must be the person with "
    "their descriptors. ",
    "auto": "",
}

DEFAULT_GGUF = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
#: The user's node fails the job with this message when it blocks.
GATE_BLOCK_PREFIX = "Content blocked by hybrid safety gate: "

#: Engine attribute -> (what it is, what to install) for EngineUnavailableError messages.
ENGINE_HELP = {
    "cutout": ("the BEN2 cut-out engine", "its model is missing: `ben2-worker models download ben2`"),
    "caption": (
        "Florence-2 captioning",
        "install the full extra (transformers, torch) and `ben2-worker models download florence2`",
    ),
    "nudenet": ("NudeNet nudity detection", "install the full extra (nudenet) and `ben2-worker models download nudenet`"),
    "classifier": (
        "the Llama safety classifier",
        "install llama-cpp-python and `ben2-worker models download llama`",
    ),
}


# ----------------------------------------------------------------------------- contexts


@dataclass
class CheckContext:
    """What a node's validation check may look at: the models folder, which engines are
    served, and where resolved model paths are recorded."""

    models_dir: Path
    engines: Any
    check_models: bool | None  # None: only for nodes whose engine this worker serves
    resolved: dict[tuple[str, str], Path] = field(default_factory=dict)

    def wants_model_check(self, engine: str | None) -> bool:
        if self.check_models is not None:
            return self.check_models
        return engine is not None and getattr(self.engines, engine, None) is not None


@dataclass
class RunContext:
    """Per-run state: nothing here is shared between runs, so one runner serves threads."""

    engines: Any
    images: dict[str, bytes]
    resolved: dict[tuple[str, str], Path] = field(default_factory=dict)
    out_images: list[OutputImage] = field(default_factory=list)
    out_texts: list[OutputText] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    budget: JobBudget = field(default_factory=JobBudget)
    preview_prefix: str = field(default_factory=lambda: "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5)))
    _encoded: list[tuple[ImageValue, bytes]] = field(default_factory=list)

    @property
    def settings(self):
        return self.engines.settings

    def engine(self, name: str, node_id: str, class_type: str):
        engine = getattr(self.engines, name, None)
        if engine is None:
            what, fix = ENGINE_HELP[name]
            raise EngineUnavailableError(f"node {node_id} ({class_type}) needs {what}, which is not available in this worker ({fix})")
        return engine

    def emit_image(self, node_id: str, image: ImageValue, kind: str, prefix: str) -> None:
        what = f"node {node_id} output"
        self.budget.output(what, image.width, image.height)  # before encoding it
        # Two outputs of one image are encoded once (by identity, never by a reusable id()).
        data = next((png for seen, png in self._encoded if seen is image), None)
        if data is None:
            data = encode_image(image.pixels, "png")
            self._encoded.append((image, data))
        self.budget.encoded(what, len(data))
        counter = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = counter
        self.out_images.append(
            OutputImage(node_id=node_id, filename=f"{prefix}_{counter:05}_.png", type=kind,
                        data=data, width=image.width, height=image.height)
        )


def find_upload(images: dict[str, bytes], name: str) -> str | None:
    """The uploaded image a LoadImage value refers to: exact name, else without ComfyUI's
    `` [input]`` annotation or subfolder."""
    if name in images:
        return name
    bare = name
    for suffix in (" [input]", " [output]", " [temp]"):
        if bare.endswith(suffix):
            bare = bare[: -len(suffix)]
    if bare in images:
        return bare
    base = model_files.base_name(bare)
    return base if base in images else None


def missing_upload_error(node_id: str, name: str, images: dict[str, bytes]) -> InputError:
    available = ", ".join(repr(n) for n in sorted(images)) or "none"
    return InputError(
        f"node {node_id} (LoadImage) reads image {name!r}, which is not among the uploaded images "
        f"(available: {available}); send it in input.images under that name",
        field="images",
    )


# ----------------------------------------------------------------------------- helpers


def _background(background_color: str, custom_hex_color: str) -> tuple[int, int, int] | None:
    if background_color == "none":
        return None
    if background_color == "custom":
        return parse_color(custom_hex_color)
    return BACKGROUND_PRESETS[background_color]


def _is_const(value: Any) -> bool:
    return value is not MISSING and not isinstance(value, list)


# ----------------------------------------------------------------------------- executors


def run_load_image(ctx: RunContext, node_id: str, image: str, **_: Any) -> tuple:
    key = find_upload(ctx.images, image)
    if key is None:
        raise missing_upload_error(node_id, image, ctx.images)
    ctx.budget.decode(key, ctx.images[key])  # the job's total, from the header
    decoded = decode_image(ctx.images[key], max_pixels=ctx.settings.max_pixels, name=key)
    if decoded.alpha is not None:  # ComfyUI: MASK = 1 - alpha
        mask = MaskValue(1.0 - decoded.alpha.astype(np.float32) * np.float32(1 / 255))
    else:
        mask = MaskValue(np.zeros((64, 64), np.float32))
    return ImageValue(decoded.rgb), mask


def run_smart_resize(ctx: RunContext, node_id: str, image: ImageValue, target_model: str, resize_mode: str,
                     interpolation: str = "lanczos") -> tuple:
    w, h = image.size
    size = smart_resize_size(w, h, TARGET_PIXELS[target_model], resize_mode)
    if size == (w, h):
        return image, w, h
    # Provenance: the resized copy remembers the full-resolution image it came from. It is made
    # only when a node reads its pixels: BEN2 feeds the original to the model and needs only
    # the size. The one resizer: the safety checks see these very pixels (cutout.working_copy).
    check_interpolation(interpolation)  # refused now, not when the pixels are first read
    return ImageValue(None, make=lambda: resize(image.pixels, size, interpolation),
                      shape=(size[1], size[0], image.channels), full=image), w, h


def run_restore_size(ctx: RunContext, node_id: str, image: ImageValue, original_width: int, original_height: int,
                     interpolation: str = "lanczos") -> tuple:
    size = (int(original_width), int(original_height))
    if size == image.size:
        return (image,)
    if image.full_size == size:
        # The same content at full resolution (BEN2's matte on the original pixels), not an enlargement.
        return (image.full_resolution(),)
    ctx.budget.budget.check_image(f"node {node_id} (RestoreOriginalSize) output", *size)  # an enlargement obeys the upload limit
    return (ImageValue(resize(image.pixels, size, interpolation)),)


def run_ben2(ctx: RunContext, node_id: str, image: ImageValue, provider: str, background_color: str = "none",
             custom_hex_color: str = "#FFFFFF", sensitivity: float = 1.0, mask_blur: int = 0, mask_offset: int = 0) -> tuple:
    """Parameter mapping over the cut-out engine's steps (preprocess, forward, postprocess).

    With provenance the model sees the original (as the task API and the CLI do) and the
    full-resolution cut-out is the matte applied to the original pixels; the matte is shaped
    at this image's (working) size either way, so the options mean what they mean in the
    user's node. Both cut-outs are made only when a node reads them."""
    engine = ctx.engine("cutout", node_id, "BEN2_ONNX_RemoveBg")
    served = getattr(getattr(engine, "model", None), "info", None)
    log.info("node %s asks for provider %s; this worker runs BEN2 on %s", node_id, provider,
             ", ".join(served.providers) if served else "its configured providers")
    options = CutoutOptions(
        matte=MatteOptions(sensitivity=float(sensitivity), mask_blur=int(mask_blur), mask_offset=int(mask_offset)),
        background=_background(background_color, custom_hex_color),
    )
    origin = image.full_resolution() if image.full_size else None
    raw = engine.forward([engine.preprocess((origin or image).rgb)])[0]
    matte = engine.shape(raw, image.size, options)
    mask = MaskValue.from_uint8(matte)
    if origin is None:
        return ImageValue(engine.apply(matte, image.rgb, options).image), mask

    def working() -> np.ndarray:
        return engine.apply(matte, image.rgb, options).image

    def full() -> ImageValue:
        return ImageValue(engine.apply(matte, origin.rgb, options).image)

    channels = 4 if options.background is None else 3
    return ImageValue(None, make=working, shape=(image.height, image.width, channels), full=full,
                      full_size=origin.size), mask


def run_free_vram(ctx: RunContext, node_id: str, image: ImageValue, mode: str = "soft", unload_models: bool = False) -> tuple:
    # Outside ComfyUI there is no model cache to empty; engines stay loaded for the next job.
    if mode == "aggressive":
        gc.collect()
    return (image,)


def run_preview(ctx: RunContext, node_id: str, images: ImageValue) -> tuple:
    ctx.emit_image(node_id, images, "temp", ctx.preview_prefix)
    return ()


def run_save_no_metadata(ctx: RunContext, node_id: str, images: ImageValue, filename_prefix: str = "Untitled image") -> tuple:
    prefix = model_files.base_name(filename_prefix) or "Untitled image"  # ComfyUI: a subfolder is not part of the name
    ctx.emit_image(node_id, images, "output", prefix)
    return ()


def run_show_text(ctx: RunContext, node_id: str, text: str) -> tuple:
    ctx.out_texts.append(OutputText(node_id=node_id, class_type="ShowText|pysssss", text=str(text)))
    return (text,)


def run_florence_loader(ctx: RunContext, node_id: str, model: str, precision: str, attention: str = "sdpa",
                        lora: Any = None, convert_to_safetensors: bool = False) -> tuple:
    ctx.engine("caption", node_id, "Florence2ModelLoader")
    return (Florence2ModelRef(name=model, path=ctx.resolved.get((node_id, "model")), precision=precision, attention=attention),)


def run_florence(ctx: RunContext, node_id: str, image: ImageValue, florence2_model: Florence2ModelRef, text_input: str,
                 task: str, fill_mask: bool, keep_model_loaded: bool = False, max_new_tokens: int = 1024,
                 num_beams: int = 3, do_sample: bool = True, output_mask_select: str = "", seed: int = 1) -> tuple:
    engine = ctx.engine("caption", node_id, "Florence2Run")
    caption = engine.caption(image.rgb, FLORENCE_TASKS[task], num_beams=int(num_beams), max_new_tokens=int(max_new_tokens),
                             do_sample=bool(do_sample), seed=int(seed))
    if not isinstance(caption, str):
        raise WorkflowExecutionError(f"node {node_id} (Florence2Run): the caption engine returned {type(caption).__name__}, not text",
                                     node_id=node_id, class_type="Florence2Run")
    # Caption tasks draw nothing: the image passes through, the mask is empty.
    return image, MaskValue(np.zeros((64, 64), np.float32)), caption, {FLORENCE_TASKS[task]: caption}


def run_nudenet(ctx: RunContext, node_id: str, image: ImageValue, threshold: float = 0.6) -> tuple:
    engine = ctx.engine("nudenet", node_id, "NudeNetSafetyChecker")
    result = engine.check(image.rgb, float(threshold))
    if not isinstance(result, dict) or not isinstance(result.get("is_nsfw"), bool):
        raise WorkflowExecutionError(f"node {node_id} (NudeNetSafetyChecker): the NudeNet engine returned no is_nsfw verdict",
                                     node_id=node_id, class_type="NudeNetSafetyChecker")
    max_score = result.get("max_score", 0.0)
    return VerdictJSON(result, indent=2), result["is_nsfw"], float(max_score) if isinstance(max_score, (int, float)) else 0.0


def run_multidomain(ctx: RunContext, node_id: str, caption: str, model_path: str, temperature: float = 0.1,
                    max_new_tokens: int = 300, n_ctx: int = 4096, n_gpu_layers: int = -1) -> tuple:
    engine = ctx.engine("classifier", node_id, "MultiDomainSafetyClassifier")
    result = engine.classify(str(caption), temperature=float(temperature), max_new_tokens=int(max_new_tokens))
    if not isinstance(result, dict):
        raise WorkflowExecutionError(f"node {node_id} (MultiDomainSafetyClassifier): the classifier returned "
                                     f"{type(result).__name__}, not a JSON object", node_id=node_id, class_type="MultiDomainSafetyClassifier")
    return (VerdictJSON(result, ensure_ascii=False, indent=2),)


def run_json_extractor(ctx: RunContext, node_id: str, caption: str, model_path: str, subject_priority: str = "product",
                       temperature: float = 0.1, max_new_tokens: int = 192, n_ctx: int = 4096, n_gpu_layers: int = -1,
                       seed: int = 0) -> tuple:
    engine = ctx.engine("classifier", node_id, "LocalJSONExtractorLlama")
    instruction = (
        "Extract structured facts from a short image caption. " + _EXTRACT_PRIORITY.get(subject_priority, "")
        + "primary_subject: the main object or person with only its physical/material descriptors, no actions or states; "
        "secondary_subjects: other objects, actions, background elements or context; nsfw: boolean; violence: boolean."
    )
    result = engine.extract(str(caption), instruction, EXTRACT_SCHEMA)
    if not isinstance(result, dict):
        raise WorkflowExecutionError(f"node {node_id} (LocalJSONExtractorLlama): the extractor returned "
                                     f"{type(result).__name__}, not a JSON object", node_id=node_id, class_type="LocalJSONExtractorLlama")
    return (json.dumps(result, ensure_ascii=False, separators=(",", ":")),)


def run_gate(ctx: RunContext, node_id: str, image: ImageValue, nudenet_json: str, multidomain_json: str,
             block_unsafe: bool = True, block_borderline: bool = False, nudenet_overrides_llama: bool = True) -> tuple:
    # The one gate implementation (ben2_worker.safety.gate): fails closed on any malformed or
    # missing verdict; see docs/safety.md.
    from ..safety.gate import decide

    verdict = decide(verdict_object(nudenet_json), verdict_object(multidomain_json), block_unsafe=bool(block_unsafe),
                     block_borderline=bool(block_borderline), nudenet_overrides_llama=bool(nudenet_overrides_llama))
    if not verdict.allowed:
        reasons = [" ".join(r.split()) for r in verdict.reasons]
        # The reasons quote the classifier's description of the image: logged only on request.
        shown = " | ".join(reasons) if ctx.settings.log_private else ", ".join(verdict.blocked_by)
        log.warning("node %s (HybridSafetyGate) blocked the image: %s", node_id, shown)
        raise ContentBlockedError(GATE_BLOCK_PREFIX + " | ".join(reasons), reasons=reasons, node_id=node_id,
                                  verdict=verdict.as_dict())
    return image, verdict.status_text()


# ----------------------------------------------------------------------------- checks


def check_ben2(cctx: CheckContext, node_id: str, values: dict) -> list[tuple[str, str]]:
    if values.get("background_color") == "custom" and _is_const(values.get("custom_hex_color", "#FFFFFF")):
        try:
            parse_color(values.get("custom_hex_color", "#FFFFFF"))
        except InputError as exc:
            return [("custom_hex_color", str(exc))]
    return []


def check_florence_run(cctx: CheckContext, node_id: str, values: dict) -> list[tuple[str, str]]:
    task = values.get("task")
    if not _is_const(task):
        return []
    if task not in FLORENCE_TEXT_TASKS:
        return [("task", f"task {task!r} draws boxes or masks, which this worker does not produce; use one of "
                         f"{', '.join(FLORENCE_TEXT_TASKS)}")]
    text = values.get("text_input", "")
    if _is_const(text) and text:
        return [("text_input", f"text_input must be empty for task {task!r} (as in kijai's node)")]
    return []


def check_florence_loader(cctx: CheckContext, node_id: str, values: dict) -> list[tuple[str, str]]:
    model = values.get("model")
    if not _is_const(model) or not cctx.wants_model_check("caption"):
        return []
    try:
        cctx.resolved[(node_id, "model")] = model_files.resolve_florence(model, cctx.models_dir)
    except LookupError as exc:
        return [("model", str(exc))]
    return []


def check_gguf(cctx: CheckContext, node_id: str, values: dict) -> list[tuple[str, str]]:
    path = values.get("model_path", DEFAULT_GGUF)
    if not _is_const(path) or not cctx.wants_model_check("classifier"):
        return []
    try:
        cctx.resolved[(node_id, "model_path")] = model_files.resolve_gguf(path, cctx.models_dir)
    except LookupError as exc:
        return [("model_path", str(exc))]
    return []


def check_load_image(cctx: CheckContext, node_id: str, values: dict) -> list[tuple[str, str]]:
    image = values.get("image")
    if _is_const(image) and not str(image).strip():
        return [("image", "image name is empty")]
    return []


# ----------------------------------------------------------------------------- registry

_IMAGE = InputSpec("image", "IMAGE")


def _interp(required: bool = False) -> InputSpec:
    return InputSpec("interpolation", "COMBO", required=required, default="lanczos", choices=tuple(INTERPOLATIONS))


_SPECS = [
    NodeSpec(
        "LoadImage", "Load Image",
        (InputSpec("image", "COMBO", dynamic=True, tooltip="name of an image sent in input.images"),),
        ("IMAGE", "MASK"), ("IMAGE", "MASK"), run_load_image, category="image", source="ComfyUI core",
        ui_only_widgets=("upload",), check=check_load_image,
    ),
    NodeSpec(
        "PreviewImage", "Preview Image", (InputSpec("images", "IMAGE"),), (), (), run_preview,
        output_node=True, category="image", source="ComfyUI core",
    ),
    NodeSpec(
        "SaveImageNoMetadata", "Save Image (No Metadata)",
        (InputSpec("images", "IMAGE"), InputSpec("filename_prefix", "STRING", default="Untitled image")),
        (), (), run_save_no_metadata, output_node=True, category="image", source="user's pack",
    ),
    NodeSpec(
        "ShowText|pysssss", "Show Text 🐍", (InputSpec("text", "STRING", force_input=True),),
        ("STRING",), ("STRING",), run_show_text, output_node=True, category="utils", source="pysssss custom scripts",
    ),
    NodeSpec(
        "SmartResizeForModel", "Smart Resize (BG Removal)",
        (
            _IMAGE,
            InputSpec("target_model", "COMBO", default="2048 (BiRefNet_HR)", choices=tuple(TARGET_PIXELS)),
            InputSpec("resize_mode", "COMBO", default="smart", choices=("smart", "always_resize", "only_if_needed")),
            _interp(),
        ),
        ("IMAGE", "INT", "INT"), ("image", "original_width", "original_height"), run_smart_resize,
        category="image/transform", source="user's pack",
    ),
    NodeSpec(
        "RestoreOriginalSize", "Restore Original Size",
        (
            _IMAGE,
            InputSpec("original_width", "INT", default=1024, min=1, max=16384),
            InputSpec("original_height", "INT", default=1024, min=1, max=16384),
            _interp(),
        ),
        ("IMAGE",), ("image",), run_restore_size, category="image/transform", source="user's pack",
    ),
    NodeSpec(
        "BEN2_ONNX_RemoveBg", "BEN2 ONNX Remove Background",
        (
            _IMAGE,
            InputSpec("provider", "COMBO", default="CPU", choices=("CPU", "CUDA", "DirectML"),
                      tooltip="accepted; the worker's configured onnxruntime providers are used"),
            InputSpec("background_color", "COMBO", required=False, default="none",
                      choices=("none", *BACKGROUND_PRESETS, "custom")),
            InputSpec("custom_hex_color", "STRING", required=False, default="#FFFFFF"),
            # Ranges and defaults: the declared output options of the same names (ben2_worker.options).
            InputSpec("sensitivity", "FLOAT", required=False, step=0.01, **node_range("sensitivity")),
            InputSpec("mask_blur", "INT", required=False, step=1, **node_range("mask_blur")),
            InputSpec("mask_offset", "INT", required=False, step=1, **node_range("mask_offset")),
        ),
        ("IMAGE", "MASK"), ("image", "mask"), run_ben2, category="image/preprocessing", source="user's pack",
        engine="cutout", check=check_ben2,
    ),
    NodeSpec(
        "FreeVRAMInline", "Free VRAM (Inline)",
        (
            _IMAGE,
            InputSpec("mode", "COMBO", required=False, default="soft", choices=("soft", "aggressive")),
            InputSpec("unload_models", "BOOLEAN", required=False, default=False),
        ),
        ("IMAGE",), ("image",), run_free_vram, category="utils", source="user's pack",
    ),
    NodeSpec(
        "Florence2ModelLoader", "Florence2ModelLoader",
        (
            InputSpec("model", "COMBO", dynamic=True, tooltip="a folder in <models>/LLM"),
            InputSpec("precision", "COMBO", choices=("fp16", "bf16", "fp32")),
            InputSpec("attention", "COMBO", default="sdpa", choices=("flash_attention_2", "sdpa", "eager")),
            InputSpec("lora", "PEFTLORA", required=False),
            InputSpec("convert_to_safetensors", "BOOLEAN", required=False, default=False),
        ),
        ("FL2MODEL",), ("florence2_model",), run_florence_loader, category="Florence2", source="kijai/ComfyUI-Florence2",
        engine="caption", check=check_florence_loader,
    ),
    NodeSpec(
        "Florence2Run", "Florence2Run",
        (
            _IMAGE,
            InputSpec("florence2_model", "FL2MODEL"),
            InputSpec("text_input", "STRING", default="", multiline=True),
            InputSpec("task", "COMBO", choices=tuple(FLORENCE_TASKS)),
            InputSpec("fill_mask", "BOOLEAN", default=True),
            InputSpec("keep_model_loaded", "BOOLEAN", required=False, default=False),
            InputSpec("max_new_tokens", "INT", required=False, default=1024, min=1, max=4096),
            InputSpec("num_beams", "INT", required=False, default=3, min=1, max=64),
            InputSpec("do_sample", "BOOLEAN", required=False, default=True),
            InputSpec("output_mask_select", "STRING", required=False, default=""),
            InputSpec("seed", "INT", required=False, default=1, min=1, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        ),
        ("IMAGE", "MASK", "STRING", "JSON"), ("image", "mask", "caption", "data"), run_florence,
        category="Florence2", source="kijai/ComfyUI-Florence2", engine="caption", check=check_florence_run,
    ),
    NodeSpec(
        "NudeNetSafetyChecker", "NudeNet Safety Checker",
        (_IMAGE, InputSpec("threshold", "FLOAT", required=False, default=0.6, min=0.0, max=1.0, step=0.05)),
        ("STRING", "BOOLEAN", "FLOAT"), ("json", "is_nsfw", "max_score"), run_nudenet,
        category="LLM/Local/Safety", source="user's pack", engine="nudenet",
    ),
    NodeSpec(
        "MultiDomainSafetyClassifier", "Multi-Domain Safety Classifier (Llama)",
        (
            InputSpec("caption", "STRING", default="", multiline=True),
            InputSpec("model_path", "STRING", default=DEFAULT_GGUF, tooltip="resolved by file name in <models>/llm"),
            InputSpec("temperature", "FLOAT", required=False, default=0.1, min=0.0, max=1.0, step=0.05),
            InputSpec("max_new_tokens", "INT", required=False, default=300, min=64, max=1024, step=16),
            InputSpec("n_ctx", "INT", required=False, default=4096, min=1024, max=8192, step=256),
            InputSpec("n_gpu_layers", "INT", required=False, default=-1, min=-1, max=80, step=1),
        ),
        ("STRING",), ("json",), run_multidomain, category="LLM/Local/Safety", source="user's pack",
        engine="classifier", check=check_gguf,
    ),
    NodeSpec(
        "HybridSafetyGate", "Hybrid Safety Gate (NudeNet + Llama)",
        (
            _IMAGE,
            InputSpec("nudenet_json", "STRING", force_input=True),
            InputSpec("multidomain_json", "STRING", force_input=True),
            InputSpec("block_unsafe", "BOOLEAN", required=False, default=True),
            InputSpec("block_borderline", "BOOLEAN", required=False, default=False),
            InputSpec("nudenet_overrides_llama", "BOOLEAN", required=False, default=True),
        ),
        ("IMAGE", "STRING"), ("image", "status"), run_gate, category="LLM/Local/Safety", source="user's pack",
    ),
    NodeSpec(
        "LocalJSONExtractorLlama", "Local JSON Extractor (Llama)",
        (
            InputSpec("caption", "STRING", default="", multiline=True),
            InputSpec("model_path", "STRING", default=DEFAULT_GGUF, tooltip="resolved by file name in <models>/llm"),
            InputSpec("subject_priority", "COMBO", default="product", choices=("auto", "product", "person")),
            InputSpec("temperature", "FLOAT", required=False, default=0.1, min=0.0, max=1.0, step=0.05),
            InputSpec("max_new_tokens", "INT", required=False, default=192, min=32, max=1024, step=16),
            InputSpec("n_ctx", "INT", required=False, default=4096, min=1024, max=8192, step=256),
            InputSpec("n_gpu_layers", "INT", required=False, default=-1, min=-1, max=80, step=1),
            InputSpec("seed", "INT", required=False, default=0, min=0, max=2**31 - 1),
        ),
        ("STRING",), ("json",), run_json_extractor, category="LLM/Local", source="user's pack",
        engine="classifier", check=check_gguf,
    ),
]

#: class_type -> spec, in a stable order (docs, error messages).
NODE_TYPES: dict[str, NodeSpec] = {spec.class_type: spec for spec in _SPECS}
