"""Declarative node specs: ComfyUI's ``INPUT_TYPES``/``RETURN_TYPES`` as data.

One :class:`NodeSpec` per class type holds what validation, UI->API conversion and the docs
need (input names in ``INPUT_TYPES`` order, types, defaults, ranges, choices, which inputs are
widgets, return types) plus the function that executes the node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

#: Widget (constant-valued) input types; everything else (IMAGE, MASK, FL2MODEL...) is a socket.
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

#: Values the frontend appends after a seed widget (control_after_generate): UI-only.
CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")
SEED_WIDGET_NAMES = ("seed", "noise_seed")


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # INT FLOAT STRING BOOLEAN COMBO, or a socket type (IMAGE, MASK, FL2MODEL, ...)
    required: bool = True
    default: Any = MISSING
    min: float | None = None
    max: float | None = None
    step: float | None = None
    #: Fixed choices of a COMBO input.
    choices: tuple[str, ...] | None = None
    #: COMBO whose choices depend on the machine (LoadImage files, Florence-2 folders):
    #: validated by the node's own check, not against a fixed list.
    dynamic: bool = False
    #: STRING/INT... that can only be linked (``forceInput``): no widget in the UI.
    force_input: bool = False
    multiline: bool = False
    control_after_generate: bool = False
    tooltip: str = ""

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.force_input

    def comfy_config(self) -> tuple:
        """The ``INPUT_TYPES`` entry ComfyUI would show for this input."""
        opts: dict[str, Any] = {}
        if self.default is not MISSING:
            opts["default"] = self.default
        for key in ("min", "max", "step"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        if self.force_input:
            opts["forceInput"] = True
        if self.multiline:
            opts["multiline"] = True
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        first = list(self.choices or ()) if self.type == "COMBO" else self.type
        return (first, opts) if opts else (first,)


#: An executor: (context, node_id, **inputs) -> tuple of outputs (same length as RETURN_TYPES).
Executor = Callable[..., tuple]


@dataclass(frozen=True)
class NodeSpec:
    class_type: str
    display_name: str
    inputs: tuple[InputSpec, ...]
    return_types: tuple[str, ...]
    return_names: tuple[str, ...]
    fn: Executor = field(repr=False, compare=False)
    output_node: bool = False
    category: str = ""
    #: Who wrote the original node (docs only).
    source: str = ""
    #: Engine attribute of :class:`ben2_worker.engines.Engines` this node needs to run.
    engine: str | None = None
    #: Widgets the UI shows that the node itself does not take (LoadImage's ``upload``).
    ui_only_widgets: tuple[str, ...] = ()
    #: Extra validation of constant inputs: (settings_ctx, inputs) -> list of (input_name, message).
    check: Callable[..., list[tuple[str, str]]] | None = field(default=None, repr=False, compare=False)

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @property
    def widget_names(self) -> list[str]:
        return [i.name for i in self.inputs if i.is_widget]

    def input_types(self) -> dict:
        """ComfyUI's ``INPUT_TYPES()`` dict for this node (``required``/``optional``)."""
        out: dict[str, dict] = {"required": {}, "optional": {}}
        for spec in self.inputs:
            out["required" if spec.required else "optional"][spec.name] = spec.comfy_config()
        if not out["optional"]:
            del out["optional"]
        return out
