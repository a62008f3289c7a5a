"""``POST /v1.0/removebg``: remove.bg's API on our pipeline.

The request (multipart form, urlencoded form or JSON) is translated by
:mod:`.removebg_params` into a task-API job and run by the same job processor as every other
door. The answer is the image bytes with remove.bg's headers (``X-Width``, ``X-Height``,
``X-Type``, ``X-Credits-Charged``, ``X-Foreground-Top/Left/Width/Height``), or, when the client
sends ``Accept: application/json``, ``{"data": {"result_b64", "foreground_*"}}``. Errors are
remove.bg's ``{"errors": [{"title", "code"}]}`` with its status codes."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import removebg_params as params
from .guard import BodyTooLarge
from .queue import COMPLETED, QueueFull

if TYPE_CHECKING:
    import numpy as np

    from .app import Service

PATH = "/v1.0/removebg"
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
#: ``X-Type``: remove.bg reports the foreground class it detected; BEN2 detects none.
FOREGROUND_TYPE = "other"


def error(status: int, title: str, code: str) -> JSONResponse:
    return JSONResponse({"errors": [{"title": title, "code": code}]}, status_code=status)


async def read_fields(request: Request, limit: int) -> tuple[dict, bytes | None]:
    """The request's parameters and the uploaded file, whichever encoding the client used."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=2, max_fields=64, max_part_size=limit)
        except BodyTooLarge:
            raise  # the guard answers it
        except Exception as exc:  # malformed multipart: python-multipart's and starlette's errors
            raise params.ParamError(f"the form could not be read: {getattr(exc, 'detail', exc)}") from None
        fields: dict = {}
        upload = None
        for name, value in form.multi_items():
            if hasattr(value, "read"):  # an uploaded file
                if name == "image_file":
                    upload = await value.read()
                else:
                    fields[name] = "(file)"  # bg_image_file is refused by the mapping, by name
            else:
                fields[name] = value
        return fields, upload
    if ctype == "application/json":
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise params.ParamError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise params.ParamError("the JSON body must be an object of parameters")
        return body, None
    if not ctype and not await request.body():
        return {}, None  # no parameters at all: answered as "no image given"
    raise params.ParamError("send multipart/form-data, application/x-www-form-urlencoded or application/json",
                            code="invalid_content_type")


def foreground_box(alpha: np.ndarray, crop_box: list | None) -> tuple[int, int, int, int]:
    """(top, left, width, height) of the subject in the result image's pixels."""
    from ..cutout import subject_bbox

    bbox = subject_bbox(alpha)
    if bbox is None:
        return 0, 0, 0, 0
    x0, y0, x1, y1 = bbox
    if crop_box:
        cx, cy = crop_box[0], crop_box[1]
        x0, y0, x1, y1 = x0 - cx, y0 - cy, min(x1, crop_box[2]) - cx, min(y1, crop_box[3]) - cy
        x0, y0 = max(0, x0), max(0, y0)
    return y0, x0, x1 - x0, y1 - y0


def _decode_grey(data: bytes):
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else image[..., -1]


def _failure(message: str, source: str) -> JSONResponse:
    """A failed job's error as remove.bg's error (the processor answers strings, not types)."""
    if message.startswith("internal error"):
        return error(500, message, "internal_error")
    if message.startswith("the service could not load"):
        return error(503, message, "service_unavailable")
    if message.startswith("job exceeded"):
        return error(504, message, "timeout")
    text = params.explain(message, source)
    about_option = "input.output." in message or bool(
        (m := re.match(r"(\w+) must", message)) and m.group(1) in params.declared_options())
    if about_option:
        return error(400, text, "invalid_parameters")
    return error(400, text if source in text else f"{source}: {text}", "invalid_image")


def register(app: FastAPI, service: Service) -> None:
    limit = service.settings.removebg_body_limit

    @app.post(PATH, tags=["remove.bg compatible"], summary="Remove the background (remove.bg's API)")
    async def removebg(request: Request):
        try:
            fields, upload = await read_fields(request, limit)
            req = params.translate(fields, has_file=upload is not None)
        except params.ParamError as exc:
            return error(exc.status, exc.title, exc.code)
        if service.phase == "ready" and req.pipeline not in service.served:
            return error(400, f"pipeline={req.pipeline} is not served here (served: {', '.join(service.served)})",
                         "unsupported_parameter")
        image = req.url or req.b64 or base64.b64encode(upload or b"").decode()
        try:
            record = service.queue.submit(req.task_input(image), service.run_direct, route="removebg", keep_s=0)
        except QueueFull as exc:
            return error(429, str(exc), "rate_limit_exceeded")
        await record.done.wait()
        if record.status != COMPLETED:
            return _failure(record.error or record.status.lower(), req.source)
        entry = record.output["images"][0]
        if entry.get("status") == "blocked":
            reasons = "; ".join((entry.get("verdict") or {}).get("reasons") or []) or "the safety checks did not pass"
            return error(400, f"the image was blocked by the safety gate: {reasons}", "content_blocked")
        data = base64.b64decode(entry["data"])
        alpha = _decode_grey(data if req.alpha_only else base64.b64decode(entry["mask"]["data"]))
        top, left, width, height = foreground_box(alpha, None if req.alpha_only else entry.get("crop_box"))
        fmt = entry["filename"].rsplit(".", 1)[-1]
        headers = {"X-Width": str(entry["width"]), "X-Height": str(entry["height"]), "X-Type": FOREGROUND_TYPE,
                   "X-Credits-Charged": "0", "X-Foreground-Top": str(top), "X-Foreground-Left": str(left),
                   "X-Foreground-Width": str(width), "X-Foreground-Height": str(height)}
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"data": {"result_b64": entry["data"], "foreground_top": top, "foreground_left": left,
                                          "foreground_width": width, "foreground_height": height}}, headers=headers)
        return Response(data, media_type=CONTENT_TYPES.get(fmt, "application/octet-stream"), headers=headers)
