"""What a workflow run hands back: encoded images, texts and timings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OutputImage:
    node_id: str
    filename: str  # as ComfyUI names it: "<prefix>_00001_.png"
    type: str  # "output" (SaveImageNoMetadata) or "temp" (PreviewImage)
    data: bytes  # PNG without metadata
    width: int
    height: int


@dataclass
class OutputText:
    node_id: str
    class_type: str
    text: str


@dataclass
class WorkflowResult:
    images: list[OutputImage] = field(default_factory=list)
    texts: list[OutputText] = field(default_factory=list)
    #: Seconds per executed node ("<id>:<class_type>"), plus "validate" and "total".
    timings: dict[str, float] = field(default_factory=dict)
