"""UI -> API conversion: the user's two real workflows, and small hand-made graphs for muted,
bypassed, Reroute and Primitive nodes."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import ROOT

from ben2_worker.workflow import WorkflowValidationError, is_ui_workflow, ui_to_api

WORKFLOWS = ROOT / "workflows"
SIMPLE = "BG_remove_BEN2_simple_2nd"
FULL = "BG_remove_BEN2_simple_1st"
WINDOWS_GGUF = "C:/Users/genfp/AI_avatar/Comfy_vanila/ComfyUI/models/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- user workflows


def test_simple_workflow_converts_exactly():
    api = ui_to_api(load(SIMPLE + ".json"))
    # SaveImageNoMetadata (7) is bypassed (mode 4): gone, and nothing consumed it.
    assert sorted(api, key=int) == ["1", "4", "5", "6", "13", "16"]
    # LoadImage's UI-only `upload` widget ("image") is dropped.
    assert api["1"] == {"inputs": {"image": "d85517548420589fd6ce9c3f1a808449d46f41ce.jpg"},
                        "class_type": "LoadImage", "_meta": {"title": "Load Image"}}
    assert api["16"]["inputs"] == {"image": ["1", 0], "target_model": "1024 (BEN2/BiRefNet)",
                                   "resize_mode": "smart", "interpolation": "lanczos"}
    assert api["4"]["inputs"] == {"image": ["16", 0], "provider": "CUDA", "background_color": "none",
                                  "custom_hex_color": "#F3FFFF", "sensitivity": 0.7, "mask_blur": 0, "mask_offset": -1}
    # Linked widgets: the link wins over the saved widget values (1024, 1024).
    assert api["5"]["inputs"] == {"image": ["4", 0], "original_width": ["16", 1], "original_height": ["16", 2],
                                  "interpolation": "lanczos"}
    assert api["6"]["inputs"] == {"image": ["5", 0], "mode": "soft", "unload_models": False}
    assert api["13"] == {"inputs": {"images": ["6", 0]}, "class_type": "PreviewImage", "_meta": {"title": "Preview Image"}}


def test_full_workflow_converts_exactly():
    api = ui_to_api(load(FULL + ".json"))
    assert "7" not in api  # bypassed SaveImageNoMetadata
    assert sorted(api, key=int) == ["1", "4", "5", "6", "8", "13", "14", "15", "16", "18", "25", "26", "27"]
    # Seed 25479647846595 keeps its value; the "fixed" control_after_generate value is dropped.
    assert api["8"]["inputs"] == {
        "image": ["16", 0], "florence2_model": ["15", 0], "text_input": "", "task": "more_detailed_caption",
        "fill_mask": True, "keep_model_loaded": False, "max_new_tokens": 512, "num_beams": 3, "do_sample": True,
        "output_mask_select": "", "seed": 25479647846595,
    }
    # lora is listed first in the node's inputs but is a socket, not a widget: values map onto widgets only.
    assert api["15"]["inputs"] == {"model": "Florence-2-base", "precision": "fp16", "attention": "sdpa",
                                   "convert_to_safetensors": False}
    # The Windows path is kept as the value (resolved by file name at validation).
    assert api["25"]["inputs"] == {"caption": ["8", 2], "model_path": WINDOWS_GGUF, "temperature": 0.1,
                                   "max_new_tokens": 300, "n_ctx": 4096, "n_gpu_layers": -1}
    assert api["26"]["inputs"] == {"image": ["16", 0], "threshold": 0.6}
    assert api["27"]["inputs"] == {"image": ["16", 0], "nudenet_json": ["26", 0], "multidomain_json": ["25", 0],
                                   "block_unsafe": True, "block_borderline": False, "nudenet_overrides_llama": True}
    assert api["4"]["inputs"]["image"] == ["27", 0]  # the gate sits before BEN2
    # ShowText's saved widgets_values (the last shown text) are display only.
    assert api["14"] == {"inputs": {"text": ["8", 2]}, "class_type": "ShowText|pysssss", "_meta": {"title": "Show Text 🐍"}}
    assert api["18"]["inputs"] == {"text": ["25", 0]}


@pytest.mark.parametrize("name", [SIMPLE, FULL])
def test_repo_api_exports_are_the_converters_output(name):
    assert load(name + ".api.json") == ui_to_api(load(name + ".json"))


def test_format_detection():
    assert is_ui_workflow(load(SIMPLE + ".json"))
    assert not is_ui_workflow(load(SIMPLE + ".api.json"))
    assert not is_ui_workflow({"nodes": {"class_type": "X"}}) and not is_ui_workflow([])


def test_conversion_does_not_modify_its_input():
    ui = load(FULL + ".json")
    before = copy.deepcopy(ui)
    ui_to_api(ui)
    assert ui == before


# --------------------------------------------------------------------------- hand-made graphs


def node(nid, type_, inputs=(), outputs=(), widgets=None, mode=0, title=None):
    n = {"id": nid, "type": type_, "mode": mode, "inputs": list(inputs), "outputs": list(outputs)}
    if widgets is not None:
        n["widgets_values"] = widgets
    if title:
        n["title"] = title
    return n


def sock(name, type_, link=None):
    return {"name": name, "type": type_, "link": link}


def widget(name, type_, link=None):
    return {"name": name, "type": type_, "widget": {"name": name}, "link": link}


def ui(nodes, links):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "version": 0.4}


def load_image(nid=1):
    return node(nid, "LoadImage", [widget("image", "COMBO"), widget("upload", "IMAGEUPLOAD")],
                [{"name": "IMAGE", "type": "IMAGE", "links": []}, {"name": "MASK", "type": "MASK", "links": []}],
                ["in.png", "image"])


def ben2(nid, image_link, mode=0):
    return node(nid, "BEN2_ONNX_RemoveBg",
                [sock("image", "IMAGE", image_link), widget("provider", "COMBO"), widget("background_color", "COMBO"),
                 widget("custom_hex_color", "STRING"), widget("sensitivity", "FLOAT"), widget("mask_blur", "INT"),
                 widget("mask_offset", "INT")],
                [{"name": "image", "type": "IMAGE"}, {"name": "mask", "type": "MASK"}],
                ["CPU", "white", "#FFFFFF", 1.0, 0, 0], mode=mode)


def preview(nid, link):
    return node(nid, "PreviewImage", [sock("images", "IMAGE", link)], [], [])


def test_bypassed_node_passes_its_input_through_by_type():
    graph = ui([load_image(1), ben2(2, 10, mode=4), ben2(3, 11, mode=4), preview(4, 12)],
               [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 3, 0, "IMAGE"], [12, 3, 0, 4, 0, "IMAGE"]])
    api = ui_to_api(graph)
    assert sorted(api) == ["1", "4"]
    assert api["4"]["inputs"] == {"images": ["1", 0]}  # through two bypassed nodes


def test_bypassed_node_without_an_input_of_that_type_leaves_the_input_out():
    resize = node(2, "SmartResizeForModel",
                  [sock("image", "IMAGE", 10), widget("target_model", "COMBO"), widget("resize_mode", "COMBO"),
                   widget("interpolation", "COMBO")],
                  [{"name": "image", "type": "IMAGE"}, {"name": "original_width", "type": "INT"},
                   {"name": "original_height", "type": "INT"}],
                  ["1024 (BEN2/BiRefNet)", "smart", "lanczos"], mode=4)
    restore = node(3, "RestoreOriginalSize",
                   [sock("image", "IMAGE", 11), widget("original_width", "INT", 12), widget("original_height", "INT", 13),
                    widget("interpolation", "COMBO")], [{"name": "image", "type": "IMAGE"}], [1024, 1024, "lanczos"])
    graph = ui([load_image(1), resize, restore, preview(4, 14)],
               [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 3, 0, "IMAGE"], [12, 2, 1, 3, 1, "INT"], [13, 2, 2, 3, 2, "INT"],
                [14, 3, 0, 4, 0, "IMAGE"]])
    api = ui_to_api(graph)
    # The image passes through; the INT outputs have no INT input to come from: left out, as
    # ComfyUI's frontend does, so validation reports them (see test_workflow_validate).
    assert api["3"]["inputs"] == {"image": ["1", 0], "interpolation": "lanczos"}


def test_muted_node_drops_the_outputs_that_need_it_only():
    graph = ui([load_image(1), ben2(2, 10, mode=2), preview(3, 11), preview(4, 12)],
               [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 3, 0, "IMAGE"], [12, 1, 0, 4, 0, "IMAGE"]])
    api = ui_to_api(graph)
    assert sorted(api) == ["1", "4"]  # preview 3 needed the muted BEN2; preview 4 did not


def test_muted_chain_is_removed_transitively():
    free = node(3, "FreeVRAMInline", [sock("image", "IMAGE", 11), widget("mode", "COMBO"), widget("unload_models", "BOOLEAN")],
                [{"name": "image", "type": "IMAGE"}], ["soft", False])
    graph = ui([load_image(1), ben2(2, 10, mode=2), free, preview(4, 12)],
               [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 3, 0, "IMAGE"], [12, 3, 0, 4, 0, "IMAGE"]])
    assert sorted(ui_to_api(graph)) == ["1"]


def test_reroutes_and_notes_are_frontend_only():
    reroute_a = node(5, "Reroute", [sock("", "*", 10)], [{"name": "", "type": "IMAGE", "links": [11]}])
    reroute_b = node(6, "Reroute", [sock("", "*", 11)], [{"name": "", "type": "IMAGE", "links": [12]}])
    note = node(7, "Note", [], [], ["remember to check the edges"])
    graph = ui([load_image(1), reroute_a, reroute_b, ben2(2, 12), preview(3, 13), note],
               [[10, 1, 0, 5, 0, "IMAGE"], [11, 5, 0, 6, 0, "*"], [12, 6, 0, 2, 0, "IMAGE"], [13, 2, 0, 3, 0, "IMAGE"]])
    api = ui_to_api(graph)
    assert sorted(api) == ["1", "2", "3"]
    assert api["2"]["inputs"]["image"] == ["1", 0]


def test_primitive_node_value_is_written_into_its_target():
    prim = node(9, "PrimitiveNode", [], [{"name": "INT", "type": "INT", "links": [20], "widget": {"name": "original_width"}}],
                [2048, "fixed"])
    restore = node(3, "RestoreOriginalSize",
                   [sock("image", "IMAGE", 10), widget("original_width", "INT", 20), widget("original_height", "INT"),
                    widget("interpolation", "COMBO")], [{"name": "image", "type": "IMAGE"}], [1024, 768, "bicubic"])
    graph = ui([load_image(1), prim, restore, preview(4, 11)],
               [[10, 1, 0, 3, 0, "IMAGE"], [20, 9, 0, 3, 1, "INT"], [11, 3, 0, 4, 0, "IMAGE"]])
    api = ui_to_api(graph)
    assert "9" not in api
    assert api["3"]["inputs"] == {"image": ["1", 0], "original_width": 2048, "original_height": 768, "interpolation": "bicubic"}


def test_titles_lists_and_old_style_widgets():
    # An old-style node: widgets not listed in `inputs` -> the spec's widget order is used.
    old = node(2, "BEN2_ONNX_RemoveBg", [sock("image", "IMAGE", 10)], [{"name": "image", "type": "IMAGE"}],
               ["CUDA", "custom", "#F3FFFF", 0.5, 2, 3], title="My cut-out")
    unknown = node(3, "SomeoneElsesNode", [widget("items", "LIST"), widget("upload", "IMAGEUPLOAD")], [], [[1, 2], "x"])
    api = ui_to_api(ui([load_image(1), old, unknown, preview(4, 11)],
                       [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 4, 0, "IMAGE"]]))
    assert api["2"]["_meta"] == {"title": "My cut-out"}
    assert api["2"]["inputs"] == {"image": ["1", 0], "provider": "CUDA", "background_color": "custom",
                                  "custom_hex_color": "#F3FFFF", "sensitivity": 0.5, "mask_blur": 2, "mask_offset": 3}
    assert api["3"] == {"inputs": {"items": {"__value__": [1, 2]}}, "class_type": "SomeoneElsesNode",
                        "_meta": {"title": "SomeoneElsesNode"}}


def test_dict_style_links_are_read():
    graph = ui([load_image(1), preview(2, 10)], [])
    graph["links"] = [{"id": 10, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"}]
    assert ui_to_api(graph)["2"]["inputs"] == {"images": ["1", 0]}


@pytest.mark.parametrize(
    "bad",
    [
        {"nodes": [{"type": "LoadImage"}], "links": []},
        {"nodes": [], "links": [["x"]]},
        {"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "abc"}]}},
    ],
)
def test_malformed_ui_files_are_invalid_prompts(bad):
    with pytest.raises(WorkflowValidationError) as info:
        ui_to_api(bad)
    assert info.value.error["type"] == "invalid_prompt"
