"""Errors of the workflow runner, shaped like ComfyUI's so worker-comfyui clients recognise them.

A prompt that fails validation answers ComfyUI's ``{"error": {...}, "node_errors": {...}}``
pair (``execution.validate_prompt`` in ComfyUI 0.3.6x); the exception's ``str()`` is one
readable paragraph naming node ids and inputs, for logs and for the ``error`` string of a
RunPod response."""

from __future__ import annotations

from typing import Any

from ..errors import BlockedError, InputError, NodeFailedError


def error_entry(type_: str, message: str, details: str = "", **extra: Any) -> dict:
    """One ComfyUI error record: ``{"type", "message", "details", "extra_info"}``."""
    return {"type": type_, "message": message, "details": details, "extra_info": dict(extra)}


class WorkflowValidationError(InputError):
    """A workflow refused before anything ran.

    ``error`` is ComfyUI's top-level record (type ``invalid_prompt``, ``prompt_no_outputs`` or
    ``prompt_outputs_failed_validation``); ``node_errors`` maps node ids to
    ``{"errors": [...], "dependent_outputs": [...], "class_type": str}``."""

    def __init__(self, error: dict, node_errors: dict | None = None, summary: str | None = None):
        self.error = error
        self.node_errors = node_errors or {}
        super().__init__(summary or _summary(error, self.node_errors), field="workflow")


class WorkflowExecutionError(NodeFailedError):
    """A node failed while running for a reason that is neither the caller's input nor a
    missing engine (a bug, an engine that raised something unexpected). Names the node; the
    exception it raised is the ``__cause__``. A node that raised one of the package's own
    errors fails as a plain :class:`~ben2_worker.errors.NodeFailedError` around it."""


class ContentBlockedError(BlockedError):
    """The safety gate refused the image (or could not decide, which also blocks)."""

    def __init__(self, message: str, *, reasons: list[str] | None = None, node_id: str | None = None,
                 verdict: dict | None = None):
        super().__init__(message)
        self.reasons = list(reasons or [])
        self.node_id = node_id
        self.verdict = verdict  # safety.gate.Verdict.as_dict(): which check, which domain, reasons


def _describe(node_id: str, record: dict) -> str:
    errors = record.get("errors", [])
    class_type = record.get("class_type", "?")
    parts = []
    for err in errors:
        name = (err.get("extra_info") or {}).get("input_name")
        where = f"input '{name}': " if name else ""
        text = err.get("message", "")
        details = str(err.get("details", ""))
        if name:
            for sep in (" - ", ": ", ", "):
                if details.startswith(name + sep):
                    details = details[len(name) + len(sep):]
                    break
            if details == name:
                details = ""
        if err.get("type") == "custom_validation_failed" and details:
            text = details
        elif details and details not in text:
            text = f"{text} ({details})"
        parts.append(where + text)
    return f"node {node_id} ({class_type}) " + "; ".join(parts)


def _summary(error: dict, node_errors: dict) -> str:
    head = error.get("message", "invalid workflow")
    if node_errors:
        body = ". ".join(_describe(nid, rec) for nid, rec in node_errors.items())
        return f"{head}: {body}."
    details = error.get("details")
    return f"{head}: {details}" if details else head
