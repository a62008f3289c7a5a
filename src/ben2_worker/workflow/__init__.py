"""A native runner for the user's ComfyUI workflows (no ComfyUI server): UI->API conversion,
ComfyUI-style validation, and execution of each needed node once over the worker's engines.
See docs/workflows.md."""

from .convert import is_ui_workflow, ui_to_api
from .errors import ContentBlockedError, WorkflowExecutionError, WorkflowValidationError
from .nodes import NODE_TYPES
from .results import OutputImage, OutputText, WorkflowResult
from .runner import WorkflowRunner
from .spec import InputSpec, NodeSpec
from .values import ImageValue, MaskValue

__all__ = [
    "ContentBlockedError",
    "ImageValue",
    "InputSpec",
    "MaskValue",
    "NODE_TYPES",
    "NodeSpec",
    "OutputImage",
    "OutputText",
    "WorkflowExecutionError",
    "WorkflowResult",
    "WorkflowRunner",
    "WorkflowValidationError",
    "is_ui_workflow",
    "ui_to_api",
]
