"""What one request may make the worker do, checked before the work rather than after it.

A small request can ask for a lot: one 40 KB PNG of a flat colour decodes to 50 MP, a graph
can load it a hundred times, enlarge it to 16384 x 16384, or send it to a thousand preview
outputs, each of which would be encoded, base64-inflated and serialised before the response
size check ever ran. Each bound below is a setting (docs/reliability.md) and each refusal
names it:

* ``max_pixels`` (``BEN2_WORKER_MAX_PIXELS``): any one image, decoded *or produced by a node*
  (a node that enlarges obeys the same limit as an upload).
The limits live in :class:`~ben2_worker.config.BudgetSettings` (``settings.budget``).

* ``max_job_pixels`` (``BEN2_WORKER_MAX_JOB_PIXELS``): all images one job decodes, together;
  checked from each image's header before its pixels are decoded.
* ``max_outputs``, ``max_output_pixels``, ``max_output_bytes``: the images one job returns,
  counted before each is encoded, and their encoded bytes as they are produced; when outputs
  travel inside the response (base64), RunPod's response limit applies to them as well, so a
  job that cannot fit stops at the first output that overflows instead of encoding the rest.
* ``max_jpeg_scans`` (``BEN2_WORKER_MAX_JPEG_SCANS``): a decoder's own work beyond the pixel
  count: a progressive JPEG is decoded once per scan. (Animated GIF/WebP/APNG and multi-page
  TIFF cost one frame: only the first is decoded.)
* ``max_nodes`` (``BEN2_WORKER_MAX_NODES``): a workflow's size, checked before validation.
* ``max_error_bytes`` (``BEN2_WORKER_MAX_ERROR_BYTES``): an error response; an error naming
  10,000 nodes is cut to the first few with a count of the rest, never megabytes.

:class:`JobBudget` is the running tally of one job; it is confined to that job's thread."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_MAX_ERROR_BYTES, DEFAULT_MAX_PIXELS, BudgetSettings
from .errors import InputError

if TYPE_CHECKING:
    from .config import Settings

#: Entries kept when an error's details must be cut (node records, list items).
_KEEP_ITEMS = 20
_KEEP_DEPTH = 6
_KEEP_CHARS = 300
_KEEP_TOTAL = 400


class BudgetExceededError(InputError):
    """The request asks for more work than one job may do; ``limit`` names the setting."""

    def __init__(self, message: str, *, limit: str, field: str | None = None):
        super().__init__(message, field=field)
        self.limit = limit


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


@dataclass(frozen=True)
class Budget(BudgetSettings):
    """The limits: the settings' budget branch plus the one-image limit (:meth:`from_settings`)."""

    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(max_pixels=settings.max_pixels, **dataclasses.asdict(settings.budget))

    def check_nodes(self, count: int) -> None:
        """Refuse a workflow with more nodes than ``max_nodes`` before any validation work."""
        if count > self.max_nodes:
            raise BudgetExceededError(
                f"the workflow has {count} nodes, over the {self.max_nodes} node limit (BEN2_WORKER_MAX_NODES)",
                limit="BEN2_WORKER_MAX_NODES", field="workflow",
            )

    def check_image(self, what: str, width: int, height: int) -> None:
        """One image (decoded or produced) against ``max_pixels``, before it is made."""
        if width * height > self.max_pixels:
            raise BudgetExceededError(
                f"{what} would be {width}x{height} = {_mp(width * height)}, over the {_mp(self.max_pixels)} "
                "limit for one image (BEN2_WORKER_MAX_PIXELS)", limit="BEN2_WORKER_MAX_PIXELS",
            )


class JobBudget:
    """The running tally of one job. ``response_limit``: bytes the outputs may take inside the
    response (base64 delivery), ``None`` when they are uploaded instead."""

    def __init__(self, budget: Budget = Budget(), *, response_limit: int | None = None):
        self.budget = budget
        self.response_limit = response_limit
        self.decoded_pixels = 0
        self.outputs = 0
        self.output_pixels = 0
        self.output_bytes = 0
        self.inline_bytes = 0

    def decode(self, name: str, data: bytes) -> None:
        """Count an upload's pixels from its header, before decoding it. Unreadable headers are
        left to the decoder, whose error names the problem."""
        from .imaging import read_image_size

        try:
            fmt, width, height = read_image_size(data)
        except InputError:
            return
        self.budget.check_image(f"image {name!r}", width, height)
        if fmt == "JPEG":
            # A scan starts with an SOS marker (FF DA); in entropy-coded data FF is always
            # followed by 00 or a restart marker, so counting the pair over-counts at most.
            scans = bytes(data).count(b"\xff\xda")
            if scans > self.budget.max_jpeg_scans:
                raise BudgetExceededError(
                    f"image {name!r} is a JPEG of {scans} scans, over the limit of {self.budget.max_jpeg_scans} "
                    "(BEN2_WORKER_MAX_JPEG_SCANS): each scan is another pass of the decoder over the whole image",
                    limit="BEN2_WORKER_MAX_JPEG_SCANS", field=name,
                )
        total = self.decoded_pixels + width * height
        if total > self.budget.max_job_pixels:
            raise BudgetExceededError(
                f"decoding image {name!r} ({width}x{height}) would bring this job to {_mp(total)} decoded, over the "
                f"{_mp(self.budget.max_job_pixels)} limit for one job (BEN2_WORKER_MAX_JOB_PIXELS)",
                limit="BEN2_WORKER_MAX_JOB_PIXELS", field=name,
            )
        self.decoded_pixels = total

    def output(self, what: str, width: int, height: int) -> None:
        """Count an output image before it is encoded."""
        b = self.budget
        if self.outputs + 1 > b.max_outputs:
            raise BudgetExceededError(
                f"{what} would be output number {self.outputs + 1}, over the limit of {b.max_outputs} output images "
                "per job (BEN2_WORKER_MAX_OUTPUTS)", limit="BEN2_WORKER_MAX_OUTPUTS",
            )
        total = self.output_pixels + width * height
        if total > b.max_output_pixels:
            raise BudgetExceededError(
                f"{what} ({width}x{height}) would bring this job's outputs to {_mp(total)}, over the "
                f"{_mp(b.max_output_pixels)} limit (BEN2_WORKER_MAX_OUTPUT_PIXELS)", limit="BEN2_WORKER_MAX_OUTPUT_PIXELS",
            )
        self.outputs += 1
        self.output_pixels = total

    def encoded(self, what: str, nbytes: int, *, inline: bool = True) -> None:
        """Count an output's encoded bytes as soon as it exists, so the next one is never made
        when this one already cannot be carried."""
        b = self.budget
        self.output_bytes += nbytes
        if self.output_bytes > b.max_output_bytes:
            raise BudgetExceededError(
                f"{what} brings this job's outputs to {_mib(self.output_bytes)}, over the {_mib(b.max_output_bytes)} "
                "limit (BEN2_WORKER_MAX_OUTPUT_BYTES)", limit="BEN2_WORKER_MAX_OUTPUT_BYTES",
            )
        if inline and self.response_limit is not None:
            self.inline_bytes += (nbytes + 2) // 3 * 4  # as base64
            if self.inline_bytes > self.response_limit:
                raise BudgetExceededError(
                    f"{what} brings the base64 outputs to {self.inline_bytes / 1e6:.1f} MB, over RunPod's "
                    f"{self.response_limit / 1e6:g} MB limit for /runsync results; set BUCKET_ENDPOINT_URL (S3 upload) "
                    "or give an output put_url, or request webp/jpeg output", limit="RUNSYNC_LIMIT_BYTES",
                )


# ---------------------------------------------------------------------------- error responses


def clip_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _clip_value(value: Any, depth: int = 0, room: list[int] | None = None) -> Any:
    """A JSON-safe copy of ``value`` with bounded depth, lengths and total entries (``room``
    counts down what may still be copied, so even a cyclic or very wide value stays small)."""
    room = [_KEEP_TOTAL] if room is None else room
    room[0] -= 1
    if isinstance(value, str):
        return clip_text(value, _KEEP_CHARS)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= _KEEP_DEPTH or room[0] <= 0:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out: dict = {}
        for k, v in items[:_KEEP_ITEMS]:
            if room[0] <= 0:
                break
            out[str(k)[:_KEEP_CHARS]] = _clip_value(v, depth + 1, room)
        if len(out) < len(items):
            out["…"] = f"{len(items) - len(out)} more entries"
        return out
    if isinstance(value, (list, tuple)):
        out_list = []
        for v in value[:_KEEP_ITEMS]:
            if room[0] <= 0:
                break
            out_list.append(_clip_value(v, depth + 1, room))
        if len(out_list) < len(value):
            out_list.append(f"… {len(value) - len(out_list)} more items")
        return out_list
    return clip_text(repr(value), _KEEP_CHARS)


def bounded_error(response: dict, max_bytes: int = DEFAULT_MAX_ERROR_BYTES) -> dict:
    """``response`` (an error answer) cut to at most about ``max_bytes`` of JSON.

    The message keeps its start (which names the problem); details keep their first entries
    and say how many were left out. Works on any value, including cyclic or deeply nested
    ones a hostile request smuggled into an error record."""
    out = {k: (clip_text(v, max_bytes // 2) if isinstance(v, str) else _clip_value(v)) for k, v in response.items()}
    try:
        size = len(json.dumps(out, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        size = max_bytes + 1
    if size > max_bytes and "details" in out:
        out["details"] = f"{_count(response.get('details'))} detail records left out: the error would exceed " \
                         f"{max_bytes} bytes (BEN2_WORKER_MAX_ERROR_BYTES)"
    return out


def _count(value: Any) -> int:
    return len(value) if isinstance(value, (dict, list, tuple)) else 1
