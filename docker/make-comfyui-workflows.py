#!/usr/bin/env python3
"""Derive the API-format workflows for runpod/worker-comfyui from the user's exports.

worker-comfyui returns only images of type "output": it drops PreviewImage ("temp") images and
every text output. The user's workflows end in a PreviewImage (their SaveImageNoMetadata is
bypassed), so through worker-comfyui they return no image at all. For each
``workflows/<name>.api.json`` this writes ``workflows/comfyui/<name>.api.json`` where:

* each PreviewImage becomes an active SaveImageNoMetadata (the id and filename_prefix of the
  bypassed SaveImageNoMetadata of the UI workflow ``workflows/<name>.json`` that reads the same
  image, when there is one);
* a model_path written on Windows (``C:/Users/.../llm/X.gguf``) becomes the image's
  ``/comfyui/models/llm/X.gguf``.

    python3 docker/make-comfyui-workflows.py [--check] [REPO_ROOT]

``--check`` writes nothing and exits 1 if a committed file differs from what would be written.
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

COMFY_LLM_DIR = "/comfyui/models/llm"
MODEL_PATH_NODES = ("MultiDomainSafetyClassifier", "LocalJSONExtractorLlama")
DEFAULT_PREFIX = "ComfyUI"


def _base_name(value: str) -> str:
    parts = [p for p in re.split(r"[\\/]", str(value).strip()) if p]
    return parts[-1] if parts else ""


def _ui_save_nodes(ui: dict) -> dict[tuple[str, int], tuple[str, str]]:
    """(source node id, slot) -> (SaveImageNoMetadata id, filename_prefix) for each such UI node."""
    links = {}
    for link in ui.get("links", []):
        if isinstance(link, list) and len(link) >= 5:
            links[link[0]] = (str(link[1]), int(link[2]))
    out: dict[tuple[str, int], tuple[str, str]] = {}
    for node in ui.get("nodes", []):
        if node.get("type") != "SaveImageNoMetadata":
            continue
        source = None
        for inp in node.get("inputs", []):
            if inp.get("name") == "images" and inp.get("link") in links:
                source = links[inp["link"]]
        widgets = node.get("widgets_values") or []
        prefix = widgets[0] if widgets and isinstance(widgets[0], str) else DEFAULT_PREFIX
        if source is not None:
            out[source] = (str(node["id"]), prefix)
    return out


def derive(api: dict, ui: dict | None) -> dict:
    saves = _ui_save_nodes(ui) if ui else {}
    out: dict = {}
    for nid, node in api.items():
        node = json.loads(json.dumps(node))  # deep copy
        if node.get("class_type") == "PreviewImage":
            images = node.get("inputs", {}).get("images")
            key = (str(images[0]), int(images[1])) if isinstance(images, list) and len(images) == 2 else None
            new_id, prefix = saves.get(key, (nid, DEFAULT_PREFIX)) if key else (nid, DEFAULT_PREFIX)
            if new_id in api and new_id != nid:
                new_id = nid
            out[new_id] = {
                "inputs": {"filename_prefix": prefix, "images": images},
                "class_type": "SaveImageNoMetadata",
                "_meta": {"title": "Save Image (No Metadata)"},
            }
            continue
        if node.get("class_type") in MODEL_PATH_NODES:
            path = node.get("inputs", {}).get("model_path")
            if isinstance(path, str) and _base_name(path):
                node["inputs"]["model_path"] = f"{COMFY_LLM_DIR}/{_base_name(path)}"
        out[nid] = node
    return dict(sorted(out.items(), key=lambda kv: (0, int(kv[0])) if kv[0].isdigit() else (1, kv[0])))


def render(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def plan(root: Path) -> dict[Path, str]:
    src = root / "workflows"
    out: dict[Path, str] = {}
    for api_path in sorted(src.glob("*.api.json")):
        ui_path = src / api_path.name.replace(".api.json", ".json")
        ui = json.loads(ui_path.read_text("utf-8")) if ui_path.is_file() else None
        api = json.loads(api_path.read_text("utf-8"))
        out[src / "comfyui" / api_path.name] = render(derive(api, ui))
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    files = plan(root)
    if not files:
        print(f"error: no workflows/*.api.json under {root}", file=sys.stderr)
        return 2
    stale = []
    for path, text in files.items():
        current = path.read_text("utf-8") if path.is_file() else None
        if current == text:
            continue
        if check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python3 docker/make-comfyui-workflows.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
