"""UI-format workflows (what ComfyUI's "Save" writes) to API format (what ``/prompt`` takes).

ComfyUI only converts in the browser (``graphToPrompt``). This does what it does for the node
types we serve:

* ``widgets_values`` are mapped by position onto the inputs that carry a ``widget`` entry (the
  frontend lists every widget there, in order); with no such entries the spec's widget order
  is used. A seed widget's extra control_after_generate value (``fixed``, ``randomize``...) and
  UI-only widgets (LoadImage's ``upload``) are dropped; a list value becomes
  ``{"__value__": [...]}``.
* A link overrides its widget's value. Links through ``Reroute`` nodes are followed;
  ``PrimitiveNode`` values are written into their targets.
* mode 4 (bypassed): the node disappears and each consumer is fed from the bypassed node's
  input of the same type (the input at the consumer's slot index first, then the first of that
  type), as the frontend does; with none, the input is left out (validation then names it).
* mode 2 (muted): the node disappears, and so does every node that needed it through a required
  input, transitively — an output behind a muted node is dropped rather than failing.
* ``_meta.title`` is the node's title (or the node type's display name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import WorkflowValidationError, error_entry
from .nodes import NODE_TYPES
from .spec import CONTROL_AFTER_GENERATE, SEED_WIDGET_NAMES
from .validate import sort_key

MODE_MUTED = 2
MODE_BYPASS = 4
#: Frontend-only nodes: never sent to the server.
VIRTUAL_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")


def is_ui_workflow(data: Any) -> bool:
    """True for a UI-format file (``nodes`` list + ``links``), False for API format."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and (
        "links" in data or "version" in data or "last_node_id" in data
    )


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


class _Muted:
    pass


class _Unresolved:
    pass


@dataclass(frozen=True)
class _Constant:
    value: Any


_MUTED = _Muted()
_UNRESOLVED = _Unresolved()


def _bad(details: str) -> WorkflowValidationError:
    return WorkflowValidationError(error_entry("invalid_prompt", "Invalid UI-format workflow", details))


def _parse_links(raw: Any) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    for entry in raw or []:
        try:
            if isinstance(entry, dict):
                lid, o, os_, t, ts, typ = (entry["id"], entry["origin_id"], entry["origin_slot"], entry["target_id"],
                                           entry["target_slot"], entry.get("type"))
            else:
                lid, o, os_, t, ts, typ = entry[:6]
            links[int(lid)] = _Link(str(o), int(os_), str(t), int(ts), typ)
        except (KeyError, TypeError, ValueError, IndexError):
            raise _bad(f"malformed link {entry!r}: expected [id, from_node, from_slot, to_node, to_slot, type]") from None
    return links


def _wrap(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def ui_to_api(ui: dict) -> dict:
    """Convert a UI-format workflow; raises :class:`WorkflowValidationError` (invalid_prompt) on a
    malformed file. Unknown node types are converted too (validation reports them)."""
    if not is_ui_workflow(ui):
        raise _bad("not a UI-format workflow (expected a 'nodes' list and 'links')")
    subgraphs = (ui.get("definitions") or {}).get("subgraphs") if isinstance(ui.get("definitions"), dict) else None
    if subgraphs:
        raise _bad("the workflow uses subgraphs, which this runner does not expand; unpack them in ComfyUI "
                   "(right-click > Unpack Subgraph) or send the API-format export")

    nodes: dict[str, dict] = {}
    for node in ui["nodes"]:
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            raise _bad(f"malformed node {str(node)[:120]!r}: expected an object with 'id' and 'type'")
        nodes[str(node["id"])] = node
    links = _parse_links(ui.get("links"))

    def resolve(link_id: Any, wanted_type: Any) -> Any:
        """Where a link really comes from: (node_id, slot), a _Constant, _MUTED or _UNRESOLVED."""
        seen: set[int] = set()
        try:
            link = links.get(int(link_id))
        except (TypeError, ValueError):
            return _UNRESOLVED
        while link is not None:
            key = id(link)
            if key in seen:
                raise _bad(f"links loop through Reroute/bypassed nodes near node {link.origin_id}")
            seen.add(key)
            src = nodes.get(link.origin_id)
            if src is None:
                return _UNRESOLVED
            src_type, mode, src_inputs = src["type"], src.get("mode", 0), src.get("inputs") or []
            if src_type == "Reroute":
                nxt = src_inputs[0].get("link") if src_inputs else None
                link = links.get(int(nxt)) if nxt is not None else None
                continue
            if src_type == "PrimitiveNode":
                wv = src.get("widgets_values")
                return _Constant(wv[0]) if isinstance(wv, list) and wv else _UNRESOLVED
            if mode == MODE_MUTED:
                return _MUTED
            if mode == MODE_BYPASS:
                # The frontend's rule: the input at the origin slot's index first, then every
                # input in order; the first whose type equals the consumer's input type.
                order = [link.origin_slot] + list(range(len(src_inputs)))
                chosen = None
                for idx in order:
                    if 0 <= idx < len(src_inputs) and src_inputs[idx].get("type") == wanted_type:
                        chosen = src_inputs[idx]
                        break
                if chosen is None or chosen.get("link") is None:
                    return _UNRESOLVED
                link = links.get(int(chosen["link"]))
                continue
            return (link.origin_id, link.origin_slot)
        return _UNRESOLVED

    out: dict[str, dict] = {}
    muted_inputs: dict[str, list[str]] = {}
    for node_id in sorted(nodes, key=sort_key):
        node = nodes[node_id]
        class_type = node["type"]
        if class_type in VIRTUAL_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        spec = NODE_TYPES.get(class_type)
        ui_inputs = [i for i in (node.get("inputs") or []) if isinstance(i, dict)]
        inputs: dict[str, Any] = {}

        wv = node.get("widgets_values")
        if isinstance(wv, dict):  # some packs save widgets by name
            inputs.update({k: _wrap(v) for k, v in wv.items()})
        elif isinstance(wv, list):
            names = [i["widget"]["name"] for i in ui_inputs if isinstance(i.get("widget"), dict) and "name" in i["widget"]]
            if not names and spec is not None:
                names = spec.widget_names
            pos = 0
            for name in names:
                if pos >= len(wv):
                    break
                inputs[name] = _wrap(wv[pos])
                pos += 1
                ispec = spec.input(name) if spec else None
                has_control = name in SEED_WIDGET_NAMES or (ispec is not None and ispec.control_after_generate)
                if has_control and pos < len(wv) and isinstance(wv[pos], str) and wv[pos] in CONTROL_AFTER_GENERATE:
                    pos += 1  # control_after_generate: UI-only
        if spec is not None:
            known = {i.name for i in spec.inputs}
            inputs = {k: v for k, v in inputs.items() if k in known}
        else:
            inputs.pop("upload", None)

        for ui_input in ui_inputs:
            name, link_id = ui_input.get("name"), ui_input.get("link")
            if link_id is None or not isinstance(name, str):
                continue
            res = resolve(link_id, ui_input.get("type"))
            if isinstance(res, tuple):
                inputs[name] = [res[0], res[1]]
            elif isinstance(res, _Constant):
                inputs[name] = _wrap(res.value)
            else:
                inputs.pop(name, None)  # as the frontend: an input from a removed node is left out
                if res is _MUTED:
                    muted_inputs.setdefault(node_id, []).append(name)

        title = node.get("title") or (spec.display_name if spec else class_type)
        out[node_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    # Muted nodes take everything that needed them (through a required input) with them.
    def required(class_type: str, name: str) -> bool:
        spec = NODE_TYPES.get(class_type)
        ispec = spec.input(name) if spec else None
        return ispec.required if ispec is not None else True

    # Who consumes each node's outputs, so the removal is linear in the graph's size.
    consumers: dict[str, list[tuple[str, str]]] = {}
    for nid, api_node in out.items():
        for name, value in api_node["inputs"].items():
            if isinstance(value, list) and len(value) == 2:
                consumers.setdefault(str(value[0]), []).append((nid, name))
    dead = [nid for nid, names in muted_inputs.items() if any(required(out[nid]["class_type"], n) for n in names)]
    while dead:
        nid = dead.pop()
        if out.pop(nid, None) is None:
            continue
        for consumer, name in consumers.get(nid, ()):
            api_node = out.get(consumer)
            if api_node is not None and api_node["inputs"].pop(name, None) is not None and required(api_node["class_type"], name):
                dead.append(consumer)
    return out
