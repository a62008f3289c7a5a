"""API-format graph validation, with ComfyUI's error types, before anything runs.

Mirrors ``execution.validate_prompt`` of ComfyUI 0.3.6x: every node must name a known class
(``invalid_prompt``), at least one output node must exist (``prompt_no_outputs``), and every
node an output depends on is checked input by input (``prompt_outputs_failed_validation`` with
per-node ``required_input_missing``, ``bad_linked_input``, ``return_type_mismatch``,
``invalid_input_type``, ``value_not_in_list``, ``value_smaller_than_min``,
``value_bigger_than_max``, ``custom_validation_failed``, ``exception_during_inner_validation``).
Two deliberate differences: a dependency cycle is refused here rather than mid-run, and a graph
with *any* failing output is refused as a whole (ComfyUI would run the outputs that passed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import WorkflowValidationError, error_entry
from .nodes import NODE_TYPES, CheckContext
from .spec import MISSING, InputSpec, NodeSpec


@dataclass
class Link:
    node_id: str
    slot: int


@dataclass
class Plan:
    """A validated graph, ready to run."""

    graph: dict  # normalised API format (what prepare() returns)
    order: list[str]  # execution order of the nodes the outputs need
    outputs: list[str]
    inputs: dict[str, dict[str, Any]]  # node -> {name: value | Link}, only inputs present
    resolved: dict[tuple[str, str], Path] = field(default_factory=dict)


def sort_key(node_id: str) -> tuple:
    # ASCII digits only ("²".isdigit() is true, int() refuses it) and few enough for int().
    return (0, int(node_id), "") if node_id.isascii() and node_id.isdigit() and len(node_id) <= 18 else (1, 0, node_id)


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's ``validate_node_input``: equal, ``*``, or sharing a comma-separated alternative."""
    if received == expected or received == "*" or expected == "*":
        return True
    a = {t.strip() for t in str(received).split(",")}
    b = {t.strip() for t in str(expected).split(",")}
    return bool(a & b)


def supported_types() -> str:
    return ", ".join(NODE_TYPES)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and not isinstance(value[0], bool) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


# ----------------------------------------------------------------------------- values


class _BadValue(Exception):
    def __init__(self, entry: dict):
        self.entry = entry


def _convert(spec: InputSpec, value: Any) -> Any:
    """A constant input checked and converted as ComfyUI would (a little stricter for booleans)."""
    name = spec.name
    info = {"input_name": name, "received_value": value}

    def bad_type(reason: str) -> _BadValue:
        return _BadValue(error_entry("invalid_input_type", f"Failed to convert an input value to a {spec.type} value",
                                     f"{name}, {value!r}, {reason}", **info))

    if isinstance(value, dict):
        if "__value__" not in value:
            raise bad_type("a constant must not be an object")
        value = value["__value__"]
    if spec.type == "INT":
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise bad_type("not a whole number")
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad_type("not a whole number") from None
        elif not isinstance(value, int):
            raise bad_type("not a whole number")
    elif spec.type == "FLOAT":
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad_type("not a number") from None
        elif isinstance(value, (int, float)):
            value = float(value)
        else:
            raise bad_type("not a number")
        if not math.isfinite(value):
            raise bad_type("not a finite number")
    elif spec.type == "BOOLEAN":
        if isinstance(value, bool):
            pass
        elif isinstance(value, int) and value in (0, 1):
            value = bool(value)
        elif isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        else:
            raise bad_type("expected true or false")
    elif spec.type == "STRING":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad_type("expected text")
        value = str(value)
    elif spec.type == "COMBO":
        if spec.choices is not None and not spec.dynamic:
            if not isinstance(value, str) or value not in spec.choices:
                raise _BadValue(error_entry("value_not_in_list", "Value not in list",
                                            f"{name}: '{value}' not in {list(spec.choices)}", **info))
        elif not isinstance(value, str) or not value:
            raise bad_type("expected a name")
    else:  # a socket type (IMAGE, MASK, FL2MODEL...): only a link can carry it
        raise _BadValue(error_entry("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                    f"{name}: a {spec.type} input must be linked to another node's output", **info))

    if spec.type in ("INT", "FLOAT"):
        if spec.min is not None and value < spec.min:
            raise _BadValue(error_entry("value_smaller_than_min", f"Value {value} smaller than min of {spec.min}", name, **info))
        if spec.max is not None and value > spec.max:
            raise _BadValue(error_entry("value_bigger_than_max", f"Value {value} bigger than max of {spec.max}", name, **info))
    return value


# ----------------------------------------------------------------------------- graph


def _invalid(message: str, details: str = "", summary: str | None = None, node_errors: dict | None = None) -> WorkflowValidationError:
    return WorkflowValidationError(error_entry("invalid_prompt", message, details), node_errors, summary)


def _needed(graph: dict, outputs: list[str]) -> dict[str, set[str]]:
    """Output id -> every node id it depends on (itself included), following link-shaped inputs."""
    deps: dict[str, set[str]] = {}
    for out in outputs:
        seen, stack = set(), [out]
        while stack:
            nid = stack.pop()
            if nid in seen or nid not in graph:
                continue
            seen.add(nid)
            for value in (graph[nid].get("inputs") or {}).values():
                if _is_link(value):
                    stack.append(str(value[0]))
        deps[out] = seen
    return deps


def _order(graph: dict, outputs: list[str]) -> list[str]:
    """Topological order from the outputs (depth first); a cycle is an invalid prompt."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for out in outputs:
        stack: list[tuple[str, list[str]]] = []

        def children(nid: str) -> list[str]:
            kids = [str(v[0]) for v in (graph[nid].get("inputs") or {}).values() if _is_link(v) and str(v[0]) in graph]
            return list(reversed(kids))

        if state.get(out) == 2:
            continue
        state[out] = 1
        stack.append((out, children(out)))
        while stack:
            nid, kids = stack[-1]
            if kids:
                kid = kids.pop()
                if state.get(kid) == 2:
                    continue
                if state.get(kid) == 1:
                    path = [n for n, _ in stack]
                    cycle = path[path.index(kid):] + [kid]
                    errs = {n: {"errors": [error_entry("dependency_cycle", "Dependency cycle detected",
                                                       " -> ".join(cycle))],
                                "dependent_outputs": [], "class_type": graph[n]["class_type"]} for n in cycle[:-1]}
                    raise _invalid("Dependency cycle detected", " -> ".join(cycle),
                                   f"Dependency cycle detected: nodes {' -> '.join(cycle)} feed each other; "
                                   "a workflow must be a directed acyclic graph.", errs)
                state[kid] = 1
                stack.append((kid, children(kid)))
            else:
                stack.pop()
                state[nid] = 2
                order.append(nid)
    return order


def validate(workflow: Any, *, models_dir: Path, engines: Any, check_models: bool | None) -> Plan:
    if not isinstance(workflow, dict):
        raise _invalid("Invalid prompt", f"the workflow must be a JSON object of nodes, got {type(workflow).__name__}")

    graph: dict[str, dict] = {}
    unknown: dict[str, dict] = {}
    for raw_id, node in workflow.items():
        node_id = str(raw_id)
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not node.get("class_type"):
            raise _invalid("Cannot execute because a node is missing the class_type property.", f"Node ID '#{node_id}'",
                           f"Cannot execute because node {node_id} is missing the class_type property "
                           "(is this an API-format workflow? UI-format files have 'nodes' and 'links').")
        inputs = node.get("inputs", {})
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise _invalid("Invalid prompt", f"Node ID '#{node_id}': inputs must be an object")
        class_type = node["class_type"]
        graph[node_id] = {"inputs": inputs, "class_type": class_type}
        if isinstance(node.get("_meta"), dict):
            graph[node_id]["_meta"] = node["_meta"]
        if class_type not in NODE_TYPES:
            unknown[node_id] = {
                "errors": [error_entry("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                       f"Node ID '#{node_id}'")],
                "dependent_outputs": [], "class_type": class_type,
            }
    if unknown:
        first = next(iter(unknown))
        named = ", ".join(f"node {nid} ({rec['class_type']!r})" for nid, rec in unknown.items())
        raise _invalid(
            f"Cannot execute because node {unknown[first]['class_type']} does not exist.", f"Node ID '#{first}'",
            f"Cannot execute because these node types are not supported by this worker: {named}. "
            f"Supported node types: {supported_types()}.", unknown,
        )

    ids = sorted(graph, key=sort_key)
    outputs = [nid for nid in ids if NODE_TYPES[graph[nid]["class_type"]].output_node]
    if not outputs:
        outs = ", ".join(n for n, s in NODE_TYPES.items() if s.output_node)
        raise WorkflowValidationError(
            error_entry("prompt_no_outputs", "Prompt has no outputs"), {},
            f"Prompt has no outputs: the workflow has no active output node ({outs}); "
            "muted (mode 2) and bypassed (mode 4) outputs do not count.",
        )

    order = _order(graph, outputs)
    deps = _needed(graph, outputs)
    cctx = CheckContext(models_dir=Path(models_dir), engines=engines, check_models=check_models)
    node_errors: dict[str, dict] = {}
    plan_inputs: dict[str, dict[str, Any]] = {}
    normalised: dict[str, dict] = {}

    for nid in ids:
        node = graph[nid]
        spec: NodeSpec = NODE_TYPES[node["class_type"]]
        raw_inputs = node["inputs"]
        values: dict[str, Any] = {}
        out_inputs: dict[str, Any] = {}
        errors: list[dict] = []
        for ispec in spec.inputs:
            value = raw_inputs.get(ispec.name, MISSING)
            info = {"input_name": ispec.name}
            if value is MISSING or value is None:
                if ispec.required:
                    errors.append(error_entry("required_input_missing", "Required input is missing", ispec.name, **info))
                continue
            if isinstance(value, list):
                if not _is_link(value):
                    errors.append(error_entry("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                              ispec.name, **info, received_value=value))
                    continue
                src, slot = str(value[0]), int(value[1])
                link_info = dict(info, linked_node=[src, slot])
                if src not in graph:
                    errors.append(error_entry("exception_during_inner_validation", "Exception when validating inner node",
                                              f"{ispec.name} is linked to node {src}, which is not in the workflow", **link_info))
                    continue
                src_spec = NODE_TYPES[graph[src]["class_type"]]
                if not 0 <= slot < len(src_spec.return_types):
                    have = ", ".join(f"{i}: {n} ({t})" for i, (n, t) in enumerate(zip(src_spec.return_names, src_spec.return_types))) or "none"
                    errors.append(error_entry("exception_during_inner_validation", "Exception when validating inner node",
                                              f"{ispec.name} is linked to output slot {slot} of node {src} ({src_spec.class_type}), "
                                              f"which has outputs {have}", **link_info))
                    continue
                received = src_spec.return_types[slot]
                expected = "COMBO" if ispec.type == "COMBO" else ispec.type
                if not types_match(received, expected):
                    errors.append(error_entry("return_type_mismatch", "Return type mismatch between linked nodes",
                                              f"{ispec.name}, received_type({received}) mismatch input_type({expected})",
                                              **link_info, received_type=received))
                    continue
                values[ispec.name] = Link(src, slot)
                out_inputs[ispec.name] = [src, slot]
                continue
            try:
                converted = _convert(ispec, value)
            except _BadValue as bad:
                errors.append(bad.entry)
                continue
            values[ispec.name] = converted
            out_inputs[ispec.name] = {"__value__": converted} if isinstance(value, dict) else converted
        if spec.check is not None and not errors and nid in order:
            check_values = {k: ([v.node_id, v.slot] if isinstance(v, Link) else v) for k, v in values.items()}
            try:
                problems = spec.check(cctx, nid, check_values)
            except Exception as exc:  # noqa: BLE001 - a check's own failure is a validation error, not a crash
                errors.append(error_entry("exception_during_validation", "Exception when validating node", str(exc)))
                problems = []
            for input_name, message in problems:
                errors.append(error_entry("custom_validation_failed", "Custom validation failed for node",
                                          f"{input_name} - {message}", input_name=input_name))
        normalised[nid] = {"inputs": out_inputs, "class_type": node["class_type"]}
        if "_meta" in node:
            normalised[nid]["_meta"] = node["_meta"]
        plan_inputs[nid] = values
        # ComfyUI validates only what the outputs need; unused nodes may be incomplete.
        if errors and nid in order:
            node_errors[nid] = {
                "errors": errors,
                "dependent_outputs": [o for o in outputs if nid in deps[o]],
                "class_type": node["class_type"],
            }

    if node_errors:
        node_errors = {k: node_errors[k] for k in sorted(node_errors, key=sort_key)}
        details = "\n".join(f"{e['message']}: {e['details']}" for rec in node_errors.values() for e in rec["errors"])
        raise WorkflowValidationError(
            error_entry("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), node_errors
        )
    return Plan(graph=normalised, order=order, outputs=outputs, inputs=plan_inputs, resolved=dict(cctx.resolved))
