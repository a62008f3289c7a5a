"""Florence-2 captions for the safety stack, through transformers' native Florence-2 classes.

The converted checkpoint ``florence-community/Florence-2-base`` (manifest entry ``florence2``,
folder ``<models_dir>/LLM/Florence-2-base/``) is loaded once with
``Florence2ForConditionalGeneration`` + ``Florence2Processor`` from the local folder — never a
hub id, never ``trust_remote_code``. :meth:`Captioner.caption` mirrors kijai's ``Florence2Run``
(task, ``num_beams``, ``max_new_tokens``, ``do_sample``, ``seed``, ``text_input``) and returns
the clean caption string. See docs/captions.md.

torch and transformers are imported inside the class only: importing this module costs
nothing, so the slim (cut-out only) worker never loads them."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ben2_worker.errors import EngineUnavailableError, InputError, ModelError

log = logging.getLogger(__name__)

#: Caption task names (kijai's ``Florence2Run`` names) -> Florence-2 prompt tokens. All are
#: "pure text" tasks: the answer is a string. ``caption()`` also accepts the tokens themselves.
#: kijai's Florence2Run task names -> Florence-2 prompt tokens (the node's whole list: a workflow
#: naming any of them validates; only :data:`TASKS` can run here).
FLORENCE_TASKS = {
    "region_caption": "<OD>",
    "dense_region_caption": "<DENSE_REGION_CAPTION>",
    "region_proposal": "<REGION_PROPOSAL>",
    "caption": "<CAPTION>",
    "detailed_caption": "<DETAILED_CAPTION>",
    "more_detailed_caption": "<MORE_DETAILED_CAPTION>",
    "caption_to_phrase_grounding": "<CAPTION_TO_PHRASE_GROUNDING>",
    "referring_expression_segmentation": "<REFERRING_EXPRESSION_SEGMENTATION>",
    "ocr": "<OCR>",
    "ocr_with_region": "<OCR_WITH_REGION>",
    "docvqa": "<DocVQA>",
    "prompt_gen_tags": "<GENERATE_TAGS>",
    "prompt_gen_mixed_caption": "<MIXED_CAPTION>",
    "prompt_gen_analyze": "<ANALYZE>",
    "prompt_gen_mixed_caption_plus": "<MIXED_CAPTION_PLUS>",
}
#: The tasks that answer with text only: the ones the captioner runs.
TASKS = {name: FLORENCE_TASKS[name] for name in ("caption", "detailed_caption", "more_detailed_caption", "ocr")}
DEVICES = ("auto", "cpu", "cuda")
#: The loader widget's precisions (plus "auto" and the torch spellings).
DTYPES = {"auto": "auto", "fp16": "fp16", "float16": "fp16", "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
          "fp32": "fp32", "float32": "fp32", "float": "fp32"}
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
MODEL_NAME = "florence2"
FIX_COMMAND = f"ben2-worker models download {MODEL_NAME}"
#: Files every loadable Florence-2 folder has (the tokenizer and processor files vary by layout;
#: their absence is caught by the load itself).
REQUIRED_FILES = ("config.json", "model.safetensors")
#: kijai's Florence2Run seed widget range.
SEED_MIN, SEED_MAX = 0, 0xFFFF_FFFF_FFFF_FFFF
MAX_BEAMS = 64


def torch_seed(seed: int) -> int:
    """The seed torch actually gets: ``sha256(str(seed)) % 2**32``, exactly as kijai's
    ``Florence2Run.hash_seed`` reduces its 64-bit widget value before ``set_seed``. Always in
    torch's accepted range; ``torch.manual_seed`` itself would accept [-2**63, 2**64 - 1]."""
    return int(hashlib.sha256(str(int(seed)).encode("utf-8")).hexdigest(), 16) % (2**32)


def _model_error(folder: Path, problem: str) -> ModelError:
    return ModelError(
        f"Florence-2 model folder {folder} {problem}. Fix: run `{FIX_COMMAND}` (it places the converted "
        f"checkpoint florence-community/Florence-2-base in <models_dir>/LLM/Florence-2-base; models "
        f"directory set with BEN2_WORKER_MODELS or --models-dir)."
    )


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"caption needs an (H, W, 3) RGB image, got shape {a.shape}", field="image")
    if a.shape[2] == 4:
        a = a[:, :, :3]  # caption every pixel, also where transparent: nothing may hide from the check
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"caption needs a uint8 (or 0..1 float) image, got {a.dtype}", field="image")
        a = np.clip(np.nan_to_num(a) * 255.0, 0, 255).round().astype(np.uint8)  # ComfyUI IMAGE floats
    return np.ascontiguousarray(a)


def _task_prompt(task: str) -> str:
    if task in TASKS:
        return TASKS[task]
    if task in TASKS.values():
        return task
    raise InputError(
        f"unknown caption task {task!r}; choose one of {', '.join(TASKS)} (or their tokens "
        f"{', '.join(TASKS.values())})",
        field="task",
    )


class Captioner:
    """One loaded Florence-2 model and processor. Thread-safe; load once, caption many."""

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "auto", attention: str = "sdpa"):
        self.model_dir = Path(model_dir).expanduser()
        device_req = str(device).strip().lower()
        dtype_req = DTYPES.get(str(dtype).strip().lower())
        attention_req = str(attention).strip().lower()
        if device_req not in DEVICES and not re.fullmatch(r"cuda:\d+", device_req):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if dtype_req is None:
            raise ValueError(f"dtype must be one of auto, fp16, bf16, fp32, got {dtype!r}")
        if attention_req not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")

        folder = self.model_dir
        if not folder.is_dir():
            raise _model_error(folder, "does not exist" if not folder.exists() else "is not a folder")
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise _model_error(folder, f"is incomplete: {', '.join(missing)} missing")

        try:
            import torch
            import transformers
            from transformers import Florence2ForConditionalGeneration, Florence2Processor
        except ImportError as exc:
            raise EngineUnavailableError(
                f"Florence-2 captions need torch and transformers >= 4.56 with native Florence-2 "
                f"(import failed: {exc}); install the worker's full dependencies"
            ) from exc

        self._torch = torch
        self._device = self._pick_device(torch, device_req)
        self._dtype_name = self._pick_dtype(torch, dtype_req, self._device)
        self._torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self._dtype_name]
        self._attention = self._pick_attention(attention_req, self._device, self._dtype_name)

        try:
            model, info = Florence2ForConditionalGeneration.from_pretrained(
                folder,
                dtype=self._torch_dtype,
                attn_implementation=self._attention,
                local_files_only=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
            processor = Florence2Processor.from_pretrained(
                folder, local_files_only=True, trust_remote_code=False, backend="pil"
            )
        except Exception as exc:  # corrupt json/weights, wrong layout, remote-code repo: all install problems
            raise _model_error(folder, f"cannot be loaded ({type(exc).__name__}: {exc})") from exc
        # A folder that loads but lacks weights would run with random ones: refuse it (the
        # microsoft/* remote-code repos have other weight names and end up here).
        absent = sorted(info.get("missing_keys") or ())
        if absent or info.get("mismatched_keys"):
            shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
            raise _model_error(
                folder,
                f"does not hold a native Florence-2 checkpoint (missing weights: {shown or 'none'}; "
                f"mismatched: {len(info.get('mismatched_keys') or ())}; the microsoft/* remote-code "
                f"repos are not supported, use the converted florence-community one)",
            )
        # Captions only need the "pure_text" parse (strip <s>/</s>). A processor saved without a
        # post_processor_config would raise "Unsupported parse task: pure_text" on every call.
        post = getattr(processor, "post_processor", None)
        if post is not None and "pure_text" not in post.parse_task_config:
            log.info("Florence-2: %s has no post_processor_config for pure_text; using the default", folder)
            post.parse_task_config = {**post.parse_task_config, "pure_text": {}}
        self._model = model.to(self._device).eval()
        self._processor = processor
        self._special_tokens = tuple(t for t in processor.tokenizer.all_special_tokens if t)
        text_config = model.config.get_text_config()
        # Decoder positions: the start token takes one, every new token one more.
        self._max_new_tokens = max(1, int(getattr(text_config, "max_position_embeddings", 1024)) - 1)
        self._lock = threading.Lock()
        log.info(
            "Florence-2 loaded from %s on %s (%s, attention %s, transformers %s, torch %s)",
            folder, self._device, self._dtype_name, self._attention, transformers.__version__, torch.__version__,
        )

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _pick_device(torch: Any, requested: str) -> str:
        if requested == "auto":
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        if requested.startswith("cuda"):
            index = int(requested.partition(":")[2] or 0)
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise EngineUnavailableError(f"device {requested!r} requested for Florence-2 but torch sees no such CUDA GPU")
            return f"cuda:{index}"
        return "cpu"

    @staticmethod
    def _pick_dtype(torch: Any, requested: str, device: str) -> str:
        on_gpu = device.startswith("cuda")
        if requested == "auto":
            return "fp16" if on_gpu else "fp32"
        if requested == "fp16" and not on_gpu:
            log.warning("Florence-2: fp16 requested but running on CPU, where fp16 is slow and inexact: using fp32")
            return "fp32"
        if requested == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
            log.warning("Florence-2: bf16 requested but %s does not support it: using fp16", device)
            return "fp16"
        return requested

    @staticmethod
    def _pick_attention(requested: str, device: str, dtype: str) -> str:
        if requested != "flash_attention_2":
            return requested
        from transformers.utils import is_flash_attn_2_available

        if not device.startswith("cuda") or dtype == "fp32" or not is_flash_attn_2_available():
            log.warning("Florence-2: flash_attention_2 needs the flash-attn package, a CUDA GPU and fp16/bf16: "
                        "using sdpa")
            return "sdpa"
        return requested

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda:N``."""
        return self._device

    @property
    def dtype(self) -> str:
        """``fp32``, ``fp16`` or ``bf16``: what the weights really are."""
        return self._dtype_name

    @property
    def attention(self) -> str:
        return self._attention

    # ------------------------------------------------------------------ captioning

    def caption(
        self,
        rgb: np.ndarray,
        task: str = "more_detailed_caption",
        *,
        num_beams: int = 3,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        seed: int | None = None,
        text_input: str = "",
    ) -> str:
        """Caption one RGB image (``(H, W, 3)`` uint8; RGBA, grey and 0..1 float are converted).

        ``task``: a key of :data:`TASKS` or its token. ``seed`` (any int in kijai's widget
        range 0..2**64-1) makes sampling reproducible: the same image, parameters and seed give
        the same caption on the same device/dtype; it is reduced with :func:`torch_seed` and
        applied to a forked RNG, so global RNG state is untouched. ``seed=None`` with
        ``do_sample=True`` samples freshly. Returns the clean caption (may be empty)."""
        prompt = _task_prompt(task)
        if text_input and text_input.strip():
            raise InputError(f"task {task!r} takes no text input (got {text_input!r})", field="text_input")
        if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or not 1 <= num_beams <= MAX_BEAMS:
            raise InputError(f"num_beams must be a whole number in 1..{MAX_BEAMS}, got {num_beams!r}", field="num_beams")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}", field="max_new_tokens")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not SEED_MIN <= seed <= SEED_MAX):
            raise InputError(f"seed must be a whole number in {SEED_MIN}..{SEED_MAX}, got {seed!r}", field="seed")
        if max_new_tokens > self._max_new_tokens:
            log.warning("Florence-2: max_new_tokens %d exceeds the decoder's %d positions: using %d",
                        max_new_tokens, self._max_new_tokens + 1, self._max_new_tokens)
            max_new_tokens = self._max_new_tokens

        from PIL import Image

        pixels = _as_rgb(rgb)
        height, width = pixels.shape[:2]
        image = Image.fromarray(pixels, "RGB")
        torch = self._torch
        with self._lock:  # one generate at a time: the model, the tokenizer and the RNG are shared
            inputs = self._processor(text=prompt, images=image, return_tensors="pt")
            kwargs = dict(
                input_ids=inputs["input_ids"].to(self._device),
                pixel_values=inputs["pixel_values"].to(self._device, self._torch_dtype),
                max_new_tokens=int(max_new_tokens),
                num_beams=int(num_beams),
                do_sample=bool(do_sample),
            )
            if "attention_mask" in inputs:
                kwargs["attention_mask"] = inputs["attention_mask"].to(self._device)
            with torch.inference_mode(), self._seeded(seed):
                generated = self._model.generate(**kwargs)
            text = self._processor.batch_decode(generated, skip_special_tokens=False)[0]
            parsed = self._processor.post_process_generation(text, task=prompt, image_size=(width, height))
        answer = parsed.get(prompt, "") if isinstance(parsed, dict) else ""
        if not isinstance(answer, str):  # pure-text tasks only; anything else is a bug, not a caption
            raise ModelError(f"Florence-2 returned {type(answer).__name__} for {prompt}, expected text")
        for token in self._special_tokens:  # <pad>/<unk>/... never belong in a caption
            answer = answer.replace(token, "")
        return answer.strip()

    def _seeded(self, seed: int | None):
        """Seed torch's default generators for the model's device inside a fork of the RNG
        state, restored on exit (``transformers.generate`` draws from the default generator and
        takes no ``generator`` argument). Callers hold ``self._lock``."""
        import contextlib

        torch = self._torch
        if seed is None:
            return contextlib.nullcontext()
        value = torch_seed(int(seed))
        index = torch.device(self._device).index or 0 if self._device.startswith("cuda") else None

        @contextlib.contextmanager
        def fork():
            with torch.random.fork_rng(devices=[] if index is None else [index], device_type="cuda"):
                torch.default_generator.manual_seed(value)  # CPU: sampling on CPU, and CPU-side draws
                if index is not None:
                    with torch.cuda.device(index):
                        torch.cuda.manual_seed(value)  # this GPU only; others are neither seeded nor forked
                yield

        return fork()
