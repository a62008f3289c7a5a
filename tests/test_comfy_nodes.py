"""The ComfyUI node pack (docs/comfyui.md), loaded and run the way ComfyUI does it.

ComfyUI itself is not on PyPI and cannot be installed in this test environment, so the two
ComfyUI modules the pack talks to are replaced by stand-ins in tests/comfy_standins/:
``folder_paths`` (model and output folders, ComfyUI's save-path counter) and
``comfy.model_management`` (records soft_empty_cache / unload_all_models). Everything else is
real: the pack is imported from the repository root's ``__init__.py`` with importlib under a
folder name, exactly as ComfyUI's ``load_custom_node`` does; its classes are called with
ComfyUI-layout torch tensors (IMAGE float32 [B,H,W,C] 0..1, MASK [B,H,W]) under
``torch.inference_mode()`` as ComfyUI executes nodes; LoadImage and PreviewImage (ComfyUI core
nodes, not ours) are tiny stand-in classes; the engines are the worker's, on test models (the
BEN2 stand-in, a tiny Florence-2, the real NudeNet wheel model, a tiny Llama GGUF), accepted
through ``allow_custom_models`` because they differ from the pinned checksums."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, subject_photo
from PIL import Image

torch = pytest.importorskip("torch")  # ComfyUI always has torch; the pack imports it only inside nodes

from standin_models import build_models_dir  # noqa: E402

from ben2_worker.config import Settings  # noqa: E402
from ben2_worker.engines import Engines  # noqa: E402
from ben2_worker.errors import EngineUnavailableError  # noqa: E402
from ben2_worker.workflow import NODE_TYPES, ContentBlockedError, WorkflowRunner, ui_to_api  # noqa: E402
from ben2_worker.workflow.spec import CONTROL_AFTER_GENERATE, WIDGET_TYPES  # noqa: E402

STANDINS = Path(__file__).resolve().parent / "comfy_standins"
WORKFLOWS = ROOT / "workflows"
SIMPLE_UI = "BG_remove_BEN2_simple_2nd.json"
FULL_UI = "BG_remove_BEN2_simple_1st.json"
USER_NODES = ("BEN2_ONNX_RemoveBg", "SmartResizeForModel", "RestoreOriginalSize", "FreeVRAMInline", "NudeNetSafetyChecker",
              "MultiDomainSafetyClassifier", "HybridSafetyGate", "LocalJSONExtractorLlama", "SaveImageNoMetadata")
THIRD_PARTY = ("Florence2ModelLoader", "Florence2Run", "ShowText|pysssss")
CORE = ("LoadImage", "PreviewImage")
GGUF = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
CAPTION = "a red product photo on a plain background"
SAFE = {"classification": {d: "SAFE" for d in ("sexual", "violence", "hate", "disturbing", "drugs")},
        "reasons": ["neutral product photo"], "confidence": 0.95}
W, H = 1600, 1200  # > 1 MP, so SmartResizeForModel really shrinks it


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- ComfyUI, reduced


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """A ComfyUI root (stand-in folder_paths) with the BEN2 stand-in in models/ben2_onnx, and the
    pack loaded from the repository root as ComfyUI loads custom_nodes/<folder>/__init__.py."""
    base = tmp_path_factory.mktemp("ComfyUI")
    sys.path.insert(0, str(STANDINS))
    import folder_paths
    from comfy import model_management

    folder_paths.reset(str(base))
    build_models_dir(Path(folder_paths.models_dir))  # models/ben2_onnx/BEN2_Base.onnx (stand-in)
    spec = importlib.util.spec_from_file_location("ben2-worker", ROOT / "__init__.py")  # ComfyUI: the folder's name
    pack = importlib.util.module_from_spec(spec)
    sys.modules["ben2-worker"] = pack
    spec.loader.exec_module(pack)
    mappings = pack.NODE_CLASS_MAPPINGS  # ComfyUI reads these right after the import

    from ben2_worker.comfy_nodes import engines

    engines.configure(Settings(models_dir=Path(folder_paths.models_dir), allow_custom_models=True, threads=1))
    yield pack, mappings, folder_paths, model_management
    engines.configure(None)
    # Forget the stand-ins and the loaded pack, so no other test module sees a "ComfyUI".
    for name in list(sys.modules):
        if name in ("folder_paths", "comfy", "ben2-worker") or name.startswith(("comfy.", "ben2_worker.comfy_nodes")):
            del sys.modules[name]
    sys.path.remove(str(STANDINS))


class LoadImage:
    """ComfyUI core's LoadImage, reduced to what the tests need: a named test image -> IMAGE
    ``[1,H,W,3]`` float32 (ComfyUI: ``np.array(img).astype(np.float32) / 255.0``) and MASK."""

    uploads: dict[str, np.ndarray] = {}
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"image": (sorted(cls.uploads),)}}

    def load_image(self, image):
        rgb = self.uploads[image]
        return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None], torch.zeros((1, 64, 64), dtype=torch.float32)


class PreviewImage:
    """ComfyUI core's PreviewImage, reduced: records what it was given."""

    received: list = []
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images):
        self.received.append(images)
        return {"ui": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]}}


def execute(prompt: dict, classes: dict, extra_pnginfo: dict | None = None) -> dict:
    """ComfyUI's execution, reduced: every node an output node needs runs once, its inputs
    first, under torch.inference_mode(); hidden ``unique_id`` / ``extra_pnginfo`` passed where
    declared; a node with ``INPUT_IS_LIST`` gets every input as a list; an output
    ``{"ui", "result"}`` dict split as ComfyUI does. Returns node id -> (outputs, ui)."""
    done: dict[str, tuple] = {}

    def run(node_id: str) -> tuple:
        if node_id not in done:
            node = prompt[node_id]
            cls = classes[node["class_type"]]
            kwargs = {name: run(v[0])[v[1]] if isinstance(v, list) else v for name, v in node["inputs"].items()}
            hidden = cls.INPUT_TYPES().get("hidden", {})
            if "unique_id" in hidden:
                kwargs["unique_id"] = node_id
            if "extra_pnginfo" in hidden:
                kwargs["extra_pnginfo"] = extra_pnginfo
            if getattr(cls, "INPUT_IS_LIST", False):
                kwargs = {k: v if isinstance(v, list) and k not in hidden else [v] for k, v in kwargs.items()}
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            ui = None
            if isinstance(out, dict):
                ui, out = out.get("ui"), out.get("result", ())
            assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES), (node["class_type"], out)
            done[node_id] = (out, ui)
        return done[node_id][0]

    with torch.inference_mode():
        for node_id in sorted(prompt, key=int):
            if getattr(classes[prompt[node_id]["class_type"]], "OUTPUT_NODE", False):
                run(node_id)
    return done


def as_uint8(image) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def png_chunks(data: bytes) -> list[bytes]:
    pos, names = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        names.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return names


# --------------------------------------------------------------------------- loading


def test_pack_loads_as_a_comfyui_custom_node_pack(comfy):
    pack, mappings, folder_paths, _ = comfy
    assert set(USER_NODES) <= set(mappings)
    assert set(THIRD_PARTY) <= set(mappings)  # no Florence-2 / pysssss pack is installed here
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(mappings)
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["LocalJSONExtractorLlama"] == "Local JSON Extractor (Llama)"
    for name, cls in mappings.items():
        assert callable(getattr(cls(), cls.FUNCTION)) and isinstance(cls.CATEGORY, str), name
    assert mappings["SaveImageNoMetadata"].OUTPUT_NODE and not mappings["BEN2_ONNX_RemoveBg"].OUTPUT_NODE
    # Model folders registered with ComfyUI, under its models folder.
    models = Path(folder_paths.models_dir)
    for name in ("ben2_onnx", "llm", "LLM", "nudenet"):
        assert str(models / name) in folder_paths.get_folder_paths(name)
    assert folder_paths.get_filename_list("ben2_onnx") == ["BEN2_Base.onnx"]


def test_pack_import_needs_no_optional_engine_and_root_init_is_inert(tmp_path):
    """In a fresh interpreter with llama_cpp and transformers unimportable: the repository
    root's __init__.py does nothing until ComfyUI reads the mappings (so pytest, which imports a
    rootdir __init__.py, is unaffected), then loads every node without importing torch."""
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.modules["llama_cpp"] = None
        sys.modules["transformers"] = None
        sys.path.insert(0, {str(STANDINS)!r})
        import folder_paths
        folder_paths.reset({str(tmp_path)!r})
        path_before = list(sys.path)
        spec = importlib.util.spec_from_file_location("ben2-worker", {str(ROOT / "__init__.py")!r})
        pack = importlib.util.module_from_spec(spec)
        sys.modules["ben2-worker"] = pack
        spec.loader.exec_module(pack)
        inert = "ben2_worker" not in sys.modules and sys.path == path_before and not hasattr(pack, "WEB_DIRECTORY")
        names = sorted(pack.NODE_CLASS_MAPPINGS)
        print(json.dumps({{"inert": inert, "names": names, "torch": "torch" in sys.modules,
                          "llama": sys.modules.get("llama_cpp") is None}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["inert"], result
    assert set(USER_NODES) | set(THIRD_PARTY) == set(result["names"])
    assert result["torch"] is False and result["llama"] is True


def test_nodes_whose_engine_library_is_missing_say_what_to_install(comfy, monkeypatch):
    _, mappings, _, _ = comfy
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(EngineUnavailableError, match=r"llama-cpp-python.*pip install llama-cpp-python"):
        mappings["MultiDomainSafetyClassifier"]().run(caption="a cat", model_path=f"C:/models/llm/{GGUF}")
    with pytest.raises(EngineUnavailableError, match=r"LocalJSONExtractorLlama needs llama-cpp-python"):
        mappings["LocalJSONExtractorLlama"]().run(caption="a cat", model_path=GGUF, subject_priority="auto")
    with pytest.raises(EngineUnavailableError, match=r"transformers >= 4.56.*pip install"):
        mappings["Florence2ModelLoader"]().run(model="Florence-2-base", precision="fp16", attention="sdpa")


# --------------------------------------------------------------------------- the user's nodes, exactly


def _strip_tooltips(types: dict) -> dict:
    out = {}
    for section, inputs in types.items():
        out[section] = {}
        for name, entry in inputs.items():
            opts = {k: v for k, v in (entry[1] if len(entry) > 1 else {}).items() if k != "tooltip"}
            out[section][name] = (entry[0], opts) if opts else (entry[0],)
    return out


@pytest.mark.parametrize("name", USER_NODES + THIRD_PARTY)
def test_input_and_return_types_are_the_native_runners_specs(comfy, name):
    """One source of truth: the pack's INPUT_TYPES/RETURN_TYPES are the specs the native runner
    validates against (only tooltips, machine-dependent COMBO lists and the hidden node id differ)."""
    _, mappings, _, _ = comfy
    cls, spec = mappings[name], NODE_TYPES[name]
    assert cls.SPEC is spec
    types = cls.INPUT_TYPES()
    hidden = {"unique_id": "UNIQUE_ID"}
    if name == "ShowText|pysssss":  # pysssss' node also takes the saved workflow (extra_pnginfo)
        hidden["extra_pnginfo"] = "EXTRA_PNGINFO"
    assert types.pop("hidden") == hidden
    expected = spec.input_types()
    for inp in spec.inputs:
        if inp.dynamic:  # e.g. Florence2ModelLoader.model lists the folders in models/LLM
            section = "required" if inp.required else "optional"
            assert isinstance(types[section][inp.name][0], list)
            types[section][inp.name] = expected[section][inp.name]
    assert _strip_tooltips(types) == _strip_tooltips(expected)
    assert list(types["required"]) == [i.name for i in spec.inputs if i.required]  # order = widget order
    assert cls.RETURN_TYPES == spec.return_types and cls.RETURN_NAMES == spec.return_names
    assert cls.OUTPUT_NODE == spec.output_node and cls.FUNCTION == "run"


def _widget_type(entry: tuple) -> str:
    return "COMBO" if isinstance(entry[0], list) else entry[0]


@pytest.mark.parametrize("workflow", [SIMPLE_UI, FULL_UI])
def test_every_widget_of_the_users_workflows_maps_onto_input_types(comfy, workflow):
    """Walk each node of the user's UI file as ComfyUI's frontend does: its ``widgets_values``
    fill, in order, the INPUT_TYPES inputs that are widgets (COMBO lists, INT, FLOAT, STRING,
    BOOLEAN without forceInput); a seed's control_after_generate value and LoadImage's upload
    are UI-only. Each value must be valid for its input; sockets and outputs must match too."""
    _, mappings, _, _ = comfy
    ui = load_workflow(workflow)
    seen = set()
    for node in ui["nodes"]:
        kind = node["type"]
        if kind in CORE:
            continue
        assert kind in mappings, f"{workflow}: node type {kind} is not provided by the pack"
        seen.add(kind)
        types = mappings[kind].INPUT_TYPES()
        declared = {**types.get("required", {}), **types.get("optional", {})}
        widgets = [(n, e) for n, e in declared.items()
                   if _widget_type(e) in WIDGET_TYPES and not (len(e) > 1 and e[1].get("forceInput"))]
        assert [i["name"] for i in node["inputs"] if i.get("widget")] == [n for n, _ in widgets], kind
        for inp in node["inputs"]:
            assert inp["name"] in declared, (kind, inp["name"])
            assert inp["type"] == _widget_type(declared[inp["name"]]), (kind, inp["name"])
        values = list(node.get("widgets_values") or [])
        if kind == "ShowText|pysssss":
            values = []  # the saved text is display only
        pos = 0
        for name, entry in widgets:
            value, opts = values[pos], (entry[1] if len(entry) > 1 else {})
            pos += 1
            kind_of = _widget_type(entry)
            if kind_of == "COMBO":
                assert value in entry[0] or not entry[0], (kind, name, value)
            elif kind_of == "BOOLEAN":
                assert isinstance(value, bool), (kind, name, value)
            elif kind_of == "STRING":
                assert isinstance(value, str), (kind, name, value)
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (kind, name, value)
                assert kind_of == "FLOAT" or isinstance(value, int), (kind, name, value)
                assert opts.get("min", value) <= value <= opts.get("max", value), (kind, name, value)
            if name in ("seed", "noise_seed") and pos < len(values) and values[pos] in CONTROL_AFTER_GENERATE:
                pos += 1
        assert pos == len(values), f"{kind}: {len(values) - pos} widget value(s) left over"
        outputs = [(o["name"], o["type"]) for o in node.get("outputs", [])]
        assert outputs == list(zip(mappings[kind].RETURN_NAMES, mappings[kind].RETURN_TYPES)), kind
    assert seen == ({"Florence2ModelLoader", "Florence2Run", "ShowText|pysssss", "NudeNetSafetyChecker",
                     "MultiDomainSafetyClassifier", "HybridSafetyGate"} if workflow == FULL_UI else set()) | {
        "SmartResizeForModel", "BEN2_ONNX_RemoveBg", "RestoreOriginalSize", "FreeVRAMInline", "SaveImageNoMetadata"}


# --------------------------------------------------------------------------- running the user's simple workflow


def _simple_prompt(name: str) -> dict:
    ui = load_workflow(SIMPLE_UI)
    # The user's file has SaveImageNoMetadata bypassed (mode 4); enable it so saving is checked too.
    next(n for n in ui["nodes"] if n["type"] == "SaveImageNoMetadata")["mode"] = 0
    next(n for n in ui["nodes"] if n["type"] == "LoadImage")["widgets_values"][0] = name
    return ui


def test_users_simple_workflow_runs_through_the_node_classes(comfy):
    pack, mappings, folder_paths, mm = comfy
    photo = subject_photo(W, H)  # the stand-in's matte is exactly the middle box (red channel 255)
    LoadImage.uploads = {"photo.png": photo}
    PreviewImage.received = []
    mm.calls.clear()
    ui = _simple_prompt("photo.png")
    prompt = ui_to_api(ui)  # what ComfyUI's frontend sends (graphToPrompt)
    assert sorted(n["class_type"] for n in prompt.values()) == sorted(
        ["LoadImage", "SmartResizeForModel", "BEN2_ONNX_RemoveBg", "RestoreOriginalSize", "FreeVRAMInline",
         "PreviewImage", "SaveImageNoMetadata"])

    done = execute(prompt, {**mappings, "LoadImage": LoadImage, "PreviewImage": PreviewImage})

    # SmartResize shrank the photo to ~1 MP and reported the original size.
    small, ow, oh = done["16"][0]
    assert (ow, oh) == (W, H) and small.dtype == torch.float32 and small.shape[0] == 1
    assert abs(small.shape[1] * small.shape[2] - 1024 * 1024) / (1024 * 1024) < 0.01
    # BEN2 returned an RGBA IMAGE and a [B,H,W] MASK at the working size.
    cut_small, mask = done["4"][0]
    assert cut_small.shape == (*small.shape[:3], 4) and mask.shape == small.shape[:3]
    # The previewed image: the full-resolution cut-out of the original pixels.
    (image,) = PreviewImage.received
    assert image.shape == (1, H, W, 4) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    cut = as_uint8(image[0])
    alpha = cut[..., 3]
    assert alpha[int(0.27 * H):int(0.73 * H), int(0.27 * W):int(0.73 * W)].min() == 255  # the stand-in's box
    assert alpha[: int(0.23 * H)].max() == 0 and alpha[int(0.77 * H):].max() == 0
    assert alpha[:, : int(0.23 * W)].max() == 0 and alpha[:, int(0.77 * W):].max() == 0
    assert np.array_equal(cut[..., :3], photo)  # every RGB value is the original's, not a 1 MP enlargement
    assert image is done["6"][0][0]  # FreeVRAMInline passes the same tensor through
    assert ("soft_empty_cache", False) in mm.calls and ("unload_all_models",) not in mm.calls

    # SaveImageNoMetadata: ComfyUI's output folder, ComfyUI's name and ui dict, a bare PNG.
    assert done["7"][1] == {"images": [{"filename": "Untitled image_00001_.png", "subfolder": "", "type": "output"}]}
    data = (Path(folder_paths.get_output_directory()) / "Untitled image_00001_.png").read_bytes()
    assert set(png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}  # no tEXt/iTXt/zTXt/eXIf/tIME: no metadata
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), cut)

    # The same bytes as the native runner (one implementation of every stage).
    from ben2_worker.comfy_nodes import engines

    native = WorkflowRunner(Engines(cutout=engines.cutout("CUDA"), settings=engines.settings()))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    result = native.run(ui, {"photo.png": buf.getvalue()})
    out = next(o for o in result.images if o.node_id == "7")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.data))), cut)

    # A second save counts on, as ComfyUI's SaveImage does.
    again = mappings["SaveImageNoMetadata"]().run(images=image, filename_prefix="shop/cut", unique_id="7")
    assert again == {"ui": {"images": [{"filename": "cut_00001_.png", "subfolder": "shop", "type": "output"}]}}
    assert (Path(folder_paths.get_output_directory()) / "shop" / "cut_00001_.png").is_file()


def test_batches_masks_and_the_literal_path(comfy):
    """Batches run image by image; a tensor that did not come from SmartResize runs literally
    (RestoreOriginalSize enlarges it), and a tensor changed in place loses its provenance."""
    _, mappings, _, _ = comfy
    a, b = subject_photo(64, 48), subject_photo(64, 48, box=(0.0, 0.0, 0.5, 0.5))
    batch = torch.from_numpy(np.stack([a, b]).astype(np.float32) / 255.0)
    with torch.inference_mode():
        image, mask = mappings["BEN2_ONNX_RemoveBg"]().run(image=batch, provider="CPU", background_color="white",
                                                          sensitivity=1.0, mask_blur=0, mask_offset=0, unique_id="4")
        assert image.shape == (2, 48, 64, 3) and mask.shape == (2, 48, 64)
        assert float(mask[0, 24, 32]) == 1.0 and float(mask[0, 0, 0]) == 0.0 and float(mask[1, 0, 0]) == 1.0
        assert np.array_equal(as_uint8(image[0])[0, 0], [255, 255, 255])  # composited over white
        (big,) = mappings["RestoreOriginalSize"]().run(image=image, original_width=128, original_height=96,
                                                       interpolation="bilinear")
        assert big.shape == (2, 96, 128, 3)  # no provenance: a plain resize
        small, w, h = mappings["SmartResizeForModel"]().run(image=torch.from_numpy(subject_photo(2000, 1000)[None] / 255.0),
                                                           target_model="1024 (BEN2/BiRefNet)", resize_mode="smart")
        small.mul_(0.5)  # another node changing the tensor in place
        cut, _ = mappings["BEN2_ONNX_RemoveBg"]().run(image=small, provider="CPU")
        (restored,) = mappings["RestoreOriginalSize"]().run(image=cut, original_width=w, original_height=h)
    assert restored.shape == (1, 1000, 2000, 4)
    assert float(restored[0, 500, 1000, 0]) == pytest.approx(0.5, abs=0.01)  # the halved pixels, enlarged: literal


def test_provider_widget_selects_onnxruntime_providers(comfy, caplog):
    from ben2_worker.comfy_nodes import engines

    cpu = engines.cutout("CPU")
    assert cpu.model.info.providers == ("CPUExecutionProvider",)
    assert engines.cutout("CPU") is cpu  # cached once per process, keyed by model file and provider
    cuda = engines.cutout("CUDA")  # on a machine without CUDA: a logged fallback to CPU, as in the worker
    assert cuda is not cpu and cuda.model.info.providers[-1] == "CPUExecutionProvider"


def test_free_vram_unload_models_releases_comfy_models_and_our_engines(comfy):
    _, mappings, _, mm = comfy
    from ben2_worker.comfy_nodes import engines

    engines.cutout("CPU")
    assert engines.cached_count() >= 1
    mm.calls.clear()
    image = torch.zeros((1, 8, 8, 3))
    (out,) = mappings["FreeVRAMInline"]().run(image=image, mode="aggressive", unload_models=True)
    assert out is image
    assert mm.calls == [("unload_all_models",), ("soft_empty_cache", True)]
    assert engines.cached_count() == 0


# --------------------------------------------------------------------------- the safety nodes


def test_gate_node_fails_closed(comfy):
    _, mappings, _, _ = comfy
    gate = mappings["HybridSafetyGate"]()
    image = torch.zeros((1, 8, 8, 3))
    clean = {"is_nsfw": False, "max_score": 0.1, "threshold": 0.6, "detections": [], "all_detections_count": 0, "model": "t"}
    nsfw = {**clean, "is_nsfw": True, "max_score": 0.91,
            "detections": [{"label": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [1, 2, 3, 4]}]}
    out, status = gate.run(image=image, nudenet_json=json.dumps(clean), multidomain_json=json.dumps(SAFE))
    assert out is image and status.startswith("ALLOWED")
    with pytest.raises(ContentBlockedError, match=r"^Content blocked by hybrid safety gate: nudenet: FEMALE_BREAST"):
        gate.run(image=image, nudenet_json=json.dumps(nsfw), multidomain_json=json.dumps(SAFE), unique_id="27")
    with pytest.raises(ContentBlockedError, match="Content blocked"):  # a malformed verdict blocks
        gate.run(image=image, nudenet_json=json.dumps(clean), multidomain_json="{}")


def test_nudenet_node_on_the_real_wheel_model(comfy):
    pytest.importorskip("nudenet")
    _, mappings, _, _ = comfy
    node = mappings["NudeNetSafetyChecker"]()
    one = torch.from_numpy(subject_photo(320, 240).astype(np.float32) / 255.0)[None]
    text, is_nsfw, score = node.run(image=one, threshold=0.6)
    verdict = json.loads(text)
    assert is_nsfw is False and verdict["is_nsfw"] is False and verdict["model"] == "nudenet-320n"
    assert set(verdict) == {"is_nsfw", "max_score", "threshold", "detections", "all_detections_count", "model"}
    text2, is_nsfw2, _ = node.run(image=torch.cat([one, one]), threshold=0.6)  # a batch: every image checked
    assert json.loads(text2)["batch_size"] == 2 and is_nsfw2 is False


def test_users_full_workflow_runs_through_the_node_classes(comfy):
    """The full workflow (Florence-2 -> classifier, NudeNet, gate before BEN2) through the pack's
    classes — including its stand-ins for kijai's Florence-2 and pysssss' ShowText — on real
    engines: a tiny Florence-2 that captions everything as CAPTION, the real NudeNet wheel model
    (found inside the installed wheel), a tiny GGUF whose constrained verdict is all SAFE, under
    the Windows model_path of the user's file (resolved by file name in models/llm)."""
    for mod in ("transformers", "llama_cpp", "nudenet", "gguf"):
        pytest.importorskip(mod)
    from florence_fixture import build_tiny_florence
    from gguf_fixture import build_verdict_llama_gguf

    from ben2_worker.comfy_nodes import engines
    from ben2_worker.safety import policy

    _, mappings, folder_paths, _ = comfy
    models = Path(folder_paths.models_dir)
    build_tiny_florence(models / "LLM" / "Florence-2-base", fixed_caption=CAPTION)
    corpus = "\n".join([policy.system_prompt(policy.DEFAULT_DOMAINS), policy.build_messages(CAPTION)[1]["content"]])
    build_verdict_llama_gguf(models / "llm" / GGUF, "SAFE", corpus=corpus)
    assert "Florence-2-base" in mappings["Florence2ModelLoader"].INPUT_TYPES()["required"]["model"][0]

    photo = subject_photo(640, 480)
    LoadImage.uploads = {"ComfyUI_00119_.png": photo}
    PreviewImage.received = []
    prompt = ui_to_api(load_workflow(FULL_UI))
    done = execute(prompt, {**mappings, "LoadImage": LoadImage, "PreviewImage": PreviewImage})

    assert done["8"][0][2] == CAPTION  # Florence2Run's caption
    assert done["14"][1] == {"text": [CAPTION]}  # ShowText's ui text
    assert done["14"][0] == ([CAPTION],)  # OUTPUT_IS_LIST: a list of texts, as pysssss' node
    assert json.loads(done["25"][0][0])["classification"] == SAFE["classification"]
    assert json.loads(done["26"][0][0])["is_nsfw"] is False
    assert done["27"][0][1].startswith("ALLOWED")
    (image,) = PreviewImage.received
    cut = as_uint8(image[0])
    assert cut.shape == (480, 640, 4) and np.array_equal(cut[..., :3], photo)

    # Same result as the native runner on the same engines.
    s = engines.settings()
    folder = models / "LLM" / "Florence-2-base"
    native = WorkflowRunner(Engines(
        cutout=engines.cutout("CUDA"), nudenet=engines.nudenet(), caption=engines.captioner(folder, "fp16", "sdpa"),
        classifier=engines.classifier(f"C:/x/{GGUF}", 4096, -1, node="test", pinned=True), settings=s))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    result = native.run(load_workflow(FULL_UI), {"ComfyUI_00119_.png": buf.getvalue()})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.images[0].data))), cut)


# --------------------------------------------------------------------------- third-party nodes


def test_third_party_stand_ins_are_left_to_the_real_packs(comfy, tmp_path, monkeypatch, caplog):
    from ben2_worker.comfy_nodes import compat

    _, _, folder_paths, _ = comfy
    custom = Path(folder_paths.get_folder_paths("custom_nodes")[0])
    kijai = custom / "ComfyUI-Florence2"
    kijai.mkdir()
    (kijai / "nodes.py").write_text('NODE_CLASS_MAPPINGS = {"Florence2ModelLoader": A, "Florence2Run": B}\n')
    disabled = custom / "ComfyUI-Custom-Scripts.disabled" / "py"
    disabled.mkdir(parents=True)
    (disabled / "show_text.py").write_text('NODE_CLASS_MAPPINGS = {"ShowText|pysssss": ShowText}\n')
    original = custom / "users-original-pack"
    original.mkdir()
    (original / "__init__.py").write_text('NODE_CLASS_MAPPINGS = {"BEN2_ONNX_RemoveBg": X}\n')
    try:
        with caplog.at_level("WARNING", logger="ben2_worker.comfy"):
            decisions = {d.group: d for d in compat.decide({}, ("BEN2_ONNX_RemoveBg",))}
        assert not decisions["kijai/ComfyUI-Florence2"].register
        assert str(kijai) in decisions["kijai/ComfyUI-Florence2"].reason
        assert decisions["pysssss/ComfyUI-Custom-Scripts"].register  # a disabled pack provides nothing
        assert "users-original-pack" in caplog.text and "BEN2_ONNX_RemoveBg" in caplog.text

        # Already registered by a pack ComfyUI loaded before ours.
        fake_nodes = type(sys)("nodes")
        fake_nodes.NODE_CLASS_MAPPINGS = {"ShowText|pysssss": object}
        monkeypatch.setitem(sys.modules, "nodes", fake_nodes)
        assert not {d.group: d for d in compat.decide({})}["pysssss/ComfyUI-Custom-Scripts"].register

        # BEN2_COMFY_COMPAT_NODES, read by config.py into the pack's settings
        from ben2_worker.comfy_nodes import engines as pack_engines

        configured = pack_engines.settings()
        for value, register in (("always", all), ("NEVER", lambda d: not any(d))):
            mode = Settings.from_env({"BEN2_COMFY_COMPAT_NODES": value}).comfy_compat_nodes
            monkeypatch.setattr(pack_engines, "_settings", dataclasses.replace(configured, comfy_compat_nodes=mode))
            assert register([d.register for d in compat.decide({})]), value
    finally:
        for pack in (kijai, disabled.parent, original):
            shutil.rmtree(pack)


# --------------------------------------------------------------------------- node-pack mends


def test_show_text_stand_in_has_pysssss_list_semantics(comfy):
    _, mappings, _, _ = comfy
    cls = mappings["ShowText|pysssss"]
    assert cls.INPUT_IS_LIST is True and cls.OUTPUT_IS_LIST == (True,)
    assert cls.INPUT_TYPES()["hidden"] == {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}
    workflow = {"nodes": [{"id": 14, "type": "ShowText|pysssss", "widgets_values": []}]}
    out = cls().run(text=["first", "second"], unique_id=["14"], extra_pnginfo=[{"workflow": workflow}])
    assert out == {"ui": {"text": ["first", "second"]}, "result": (["first", "second"],)}
    assert workflow["nodes"][0]["widgets_values"] == [["first", "second"]]  # saved with the image's workflow


def test_is_changed_follows_the_model_files(comfy):
    """A replaced classifier model file must re-run the node, not serve the cached verdict."""
    _, mappings, folder_paths, _ = comfy
    llm = Path(folder_paths.models_dir) / "llm"
    llm.mkdir(exist_ok=True)
    model = llm / "probe.gguf"
    model.write_bytes(b"GGUF one")
    cls = mappings["MultiDomainSafetyClassifier"]
    first = cls.IS_CHANGED(caption="x", model_path="C:/anywhere/probe.gguf")
    assert first == cls.IS_CHANGED(caption="y", model_path="probe.gguf")  # same file, same stamp
    model.write_bytes(b"GGUF two, longer")  # replaced
    assert cls.IS_CHANGED(caption="x", model_path="probe.gguf") != first
    ben2 = mappings["BEN2_ONNX_RemoveBg"]
    assert ben2.IS_CHANGED(provider="CPU") == ben2.IS_CHANGED(provider="CPU") != ""
    missing = cls.IS_CHANGED(caption="x", model_path="absent.gguf")
    assert missing != cls.IS_CHANGED(caption="x", model_path="absent.gguf")  # never cached while missing
    assert mappings["SmartResizeForModel"].IS_CHANGED(image=None) == ""  # no model: cache by inputs as usual
    model.unlink()


def test_gate_status_says_what_block_unsafe_false_let_through(comfy):
    _, mappings, _, _ = comfy
    unsafe = {**SAFE, "classification": {**SAFE["classification"], "violence": "UNSAFE"}}
    clean = {"is_nsfw": False, "max_score": 0.1, "threshold": 0.6, "detections": [], "all_detections_count": 0}
    image = torch.zeros((1, 8, 8, 3))
    _, status = mappings["HybridSafetyGate"]().run(image=image, nudenet_json=json.dumps(clean),
                                                   multidomain_json=json.dumps(unsafe), block_unsafe=False)
    assert status == "ALLOWED with flagged content let through: classifier violence=UNSAFE (block_unsafe=false)"
    assert "all checks passed" not in status


def test_the_node_pack_gives_the_task_apis_alpha(comfy):
    """One photo and the user's BEN2 settings (sensitivity 0.7, offset -1) through the node pack
    and through the task API on the same model: byte-identical alpha (see test_doors)."""
    import base64

    from ben2_worker.api.delivery import Delivery
    from ben2_worker.api.jobs import JobProcessor
    from ben2_worker.engines import load_cutout_engine

    pack, mappings, folder_paths, mm = comfy
    photo = subject_photo(W, H, box=(0.2, 0.3, 0.7, 0.8))
    LoadImage.uploads = {"photo.png": photo}
    PreviewImage.received = []
    ui = _simple_prompt("photo.png")
    next(n for n in ui["nodes"] if n["type"] == "SaveImageNoMetadata")["mode"] = 4  # bypassed, as in their file
    execute(ui_to_api(ui), {**mappings, "LoadImage": LoadImage, "PreviewImage": PreviewImage})
    (image,) = PreviewImage.received
    pack_alpha = as_uint8(image[0])[..., 3]

    settings = Settings(models_dir=Path(folder_paths.models_dir), allow_custom_models=True, threads=1)
    worker = JobProcessor(Engines(cutout=load_cutout_engine(settings), settings=settings), delivery=Delivery())
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    options = {"sensitivity": 0.7, "mask_blur": 0, "mask_offset": -1, "background": "none"}
    answer = worker({"id": "api", "input": {"image": base64.b64encode(buf.getvalue()).decode(), "output": options}})
    api_alpha = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]["data"]))))[..., 3]
    assert 0 < int((api_alpha == 255).sum()) < W * H
    assert np.array_equal(pack_alpha, api_alpha)
