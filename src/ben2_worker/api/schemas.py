"""What a request may contain: the worker-comfyui contract and our simple task API.

worker-comfyui's checks are reproduced with its exact messages (clients match on them); the
simple API is a pydantic model, so every field has one type, one range and one description, and
a bad request gets a message naming the field."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .. import options
from ..errors import InputError

#: Images one simple-API request may carry: bounds the memory a single job can take.
MAX_IMAGES_PER_REQUEST = 16

# ---------------------------------------------------------------------------- worker-comfyui

MSG_NO_INPUT = "Please provide input"
MSG_BAD_JSON = "Invalid JSON format in input"
MSG_NO_WORKFLOW = "Missing 'workflow' parameter"
MSG_BAD_IMAGES = "'images' must be a list of objects with 'name' and 'image' keys"


def _loads(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise InputError(MSG_BAD_JSON, field=field) from None
    except RecursionError:  # the parser recurses per nesting level
        raise InputError(f"{MSG_BAD_JSON}: '{field}' is nested too deeply", field=field) from None


def parse_job_input(raw: Any) -> dict:
    """The job's ``input`` as a dict; a JSON string is accepted as worker-comfyui does."""
    if raw is None or raw == "" or raw == {}:
        raise InputError(MSG_NO_INPUT, field="input")
    if isinstance(raw, str):
        raw = _loads(raw, "input")
    if not isinstance(raw, dict):
        raise InputError(MSG_BAD_JSON, field="input")
    return raw


def is_workflow_request(data: dict) -> bool:
    """worker-comfyui requests carry a workflow; simple-API requests carry image/images without one."""
    if "workflow" in data:
        return True
    return not ("image" in data or "images" in data)


def parse_comfy_request(data: dict) -> tuple[dict, list[dict]]:
    """(workflow, images) with worker-comfyui's validation and messages; extra keys are ignored."""
    workflow = data.get("workflow")
    if workflow is None:
        raise InputError(MSG_NO_WORKFLOW, field="workflow")
    if isinstance(workflow, str):  # some clients send the graph as a JSON string
        workflow = _loads(workflow, "workflow")
    if not isinstance(workflow, dict):
        raise InputError(f"{MSG_NO_WORKFLOW}: 'workflow' must be a JSON object", field="workflow")
    images = data.get("images")
    if images is not None:
        if not isinstance(images, list) or not all(
            isinstance(i, dict) and "name" in i and "image" in i for i in images
        ):
            raise InputError(MSG_BAD_IMAGES, field="images")
    return workflow, images or []


def decode_base64_image(value: str, *, field: str) -> bytes:
    """Base64 with or without a ``data:...;base64,`` prefix (everything before the first comma dropped)."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field}: expected a base64 string, got {type(value).__name__}", field=field)
    if value.startswith("data:") and "," not in value:
        raise InputError(f"{field}: a data: URI must be 'data:<type>;base64,<data>' (no comma found)", field=field)
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    text = "".join(text.split())  # tolerate line-wrapped base64
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{field}: not valid base64 ({exc})", field=field) from None


# ---------------------------------------------------------------------------- simple task API

class _OutputBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @property
    def mask(self) -> bool:
        """The old name of ``return_mask`` (still accepted in requests)."""
        return self.return_mask  # type: ignore[attr-defined]


#: How the cut-out comes back: every field derived from :data:`ben2_worker.options.OUTPUT_OPTIONS`
#: (type, range, default, description, old names accepted as aliases).
OutputOptions = create_model("OutputOptions", __base__=_OutputBase, **options.pydantic_fields("api"))
OutputOptions.__doc__ = "How the cut-out comes back; declared in ben2_worker.options (docs/options.md)."


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="base64, data URI or https URL")
    put_url: str | None = None
    mask_put_url: str | None = None


class SimpleRequest(BaseModel):
    """``{"image": ..., "pipeline": "simple"|"full", "output": {...}}`` or ``images: [...]``."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="base64, data URI or https URL")
    images: list[str | ImageItem] | None = Field(None, description=f"a batch, at most {MAX_IMAGES_PER_REQUEST}")
    pipeline: Literal[options.PIPELINES] = "simple"  # type: ignore[valid-type]
    output: OutputOptions = Field(default_factory=OutputOptions)

    @field_validator("images")
    @classmethod
    def _bounded(cls, value):
        if value is not None and not 1 <= len(value) <= MAX_IMAGES_PER_REQUEST:
            raise ValueError(f"must hold 1 to {MAX_IMAGES_PER_REQUEST} images, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if (self.image is None) == (self.images is None):
            raise ValueError("give exactly one of 'image' or 'images'")
        if self.images is not None and (self.output.put_url or self.output.mask_put_url):
            raise ValueError("output.put_url is for single-image requests; give put_url per item in 'images'")
        return self

    def items(self) -> list[ImageItem]:
        if self.image is not None:
            return [ImageItem(image=self.image, put_url=self.output.put_url, mask_put_url=self.output.mask_put_url)]
        return [i if isinstance(i, ImageItem) else ImageItem(image=i) for i in self.images or []]


def parse_simple_request(data: dict) -> SimpleRequest:
    try:
        return SimpleRequest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
            # pydantic names union branches in the location ("images.0.str"); keep it readable.
            where = f"input.{loc}" if loc else "input"
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            else:
                problems.append(f"{where}: {err['msg']}")
        first_field = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "input"
        raise InputError("invalid request: " + "; ".join(problems), field=first_field) from None
