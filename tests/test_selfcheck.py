"""`ben2-worker selfcheck` (ben2_worker.ops.selfcheck / ben2_worker.cli.selfcheck): the images' last build step.

Against a models folder built here in the product layout — the BEN2 stand-in
(tests/standin_models.py), the real nudenet/320n.onnx copied out of the nudenet wheel, a tiny
Florence-2 (tests/florence_fixture.py) and a tiny Llama GGUF (tests/gguf_fixture.py) — with a
manifest that pins those files' sha256, so the store's real verification runs. The self-check
must pass there, fail NAMING THE FILE after one byte flips, and name the node, workflow or
library (and the fix) for every other problem. A fake ComfyUI install (nodes.py, server.py,
comfy/cli_args.py, custom_nodes/) stands in for /comfyui to test the registry loader."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ben2_worker.ops import selfcheck as sc
from ben2_worker.cli.selfcheck import selfcheck as selfcheck_command
from ben2_worker.models.store import VERIFIED_FILENAME, load_manifest
from ben2_worker.ops.selfcheck import FAIL, OK, SKIP, WARN, SelfcheckOptions, run_selfcheck

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
GGUF_NAME = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
FLORENCE_DIR = "LLM/Florence-2-base"


# ----------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def manifest_toml(models_dir: Path, names: tuple[str, ...] = ("ben2", "nudenet", "florence2", "llama")) -> str:
    """A manifest in the real one's shape (same names, destinations and pipelines) whose pins
    are the sha256 and sizes of the files in ``models_dir``: the store's real checks, stand-in bytes."""
    real = load_manifest()
    out = ["schema = 1", ""]
    for name in names:
        spec = real[name]
        if name == "florence2":
            files = sorted(p for p in (models_dir / FLORENCE_DIR).rglob("*") if p.is_file())
            dests = [p.relative_to(models_dir).as_posix() for p in files]
        else:
            dests = [f.dest for f in spec.files]
        source = "pypi" if spec.source == "pypi" else "huggingface"
        revision = spec.revision if source == "pypi" else "0" * 40
        out += [
            f"[models.{name}]",
            f"title = {_q(spec.title + ' (test stand-in)')}",
            f"source = {_q(source)}",
            f"repo = {_q(spec.repo if source == 'pypi' else 'tests/standin-' + name)}",
            f"revision = {_q(revision)}",
            'revision_source = "tests/test_selfcheck.py"',
            'licence = "test fixture"',
            'licence_url = "https://example.invalid/licence"',
            f"pipelines = {json.dumps(list(spec.pipelines))}",
            "",
        ]
        for dest in dests:
            path = models_dir / dest
            path_in_repo = spec.files[0].path_in_repo if source == "pypi" else Path(dest).name
            out += [
                f"[[models.{name}.files]]",
                f"path_in_repo = {_q(path_in_repo)}",
                f"dest = {_q(dest)}",
                f"sha256 = {_q(sha256(path))}",
                'sha256_source = "computed by tests/test_selfcheck.py"',
                f"size = {path.stat().st_size}",
                'size_source = "computed by tests/test_selfcheck.py"',
                "",
            ]
    return "\n".join(out)


def build_standin_models(root: Path, *, full: bool = True) -> Path:
    """The product layout with stand-in bytes; returns the manifest path written beside it."""
    from standin_models import build_models_dir

    build_models_dir(root)
    names: tuple[str, ...] = ("ben2",)
    if full:
        from florence_fixture import build_tiny_florence
        from gguf_fixture import build_tiny_llama_gguf

        spec = importlib.util.find_spec("nudenet")
        assert spec is not None and spec.submodule_search_locations
        src = Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"
        (root / "nudenet").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / "nudenet" / "320n.onnx")
        build_tiny_florence(root / FLORENCE_DIR)
        build_tiny_llama_gguf(root / "llm" / GGUF_NAME)
        names = ("ben2", "nudenet", "florence2", "llama")
    manifest = root.parent / f"{root.name}.manifest.toml"
    manifest.write_text(manifest_toml(root, names), "utf-8")
    return manifest


def options(models_dir: Path, manifest: Path, **kw) -> SelfcheckOptions:
    kw.setdefault("pipelines", ("simple", "full"))
    kw.setdefault("workflows", (WORKFLOWS,))
    return SelfcheckOptions(models_dir=models_dir, manifest=load_manifest(manifest), **kw)


def copy_models(src: tuple[Path, Path], dest: Path) -> tuple[Path, Path]:
    models, manifest = src
    shutil.copytree(models, dest / "models")
    shutil.copyfile(manifest, dest / "manifest.toml")
    return dest / "models", dest / "manifest.toml"


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def cli(*args: str):
    app = typer.Typer(add_completion=False)
    app.command("selfcheck")(selfcheck_command)  # mounted the way cli.py mounts it
    app.command("noop")(lambda: None)  # a second command keeps `selfcheck` a named subcommand
    return CliRunner().invoke(app, ["selfcheck", *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("BEN2_WORKER_MODELS", "BEN2_WORKER_PIPELINES", "BEN2_WORKER_WORKFLOWS", "BEN2_WORKER_PROVIDERS",
                "BEN2_WORKER_ALLOW_CUSTOM_MODELS", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def full_models(tmp_path_factory) -> tuple[Path, Path]:
    """(models dir, manifest) with all four models as stand-ins; never modified by a test."""
    for mod in ("torch", "nudenet", "gguf", "llama_cpp"):
        pytest.importorskip(mod)
    pytest.importorskip("transformers", minversion="4.56")
    root = tmp_path_factory.mktemp("selfcheck") / "models"
    manifest = build_standin_models(root, full=True)
    return root, manifest


@pytest.fixture(scope="session")
def simple_models(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("selfcheck-simple") / "models"
    manifest = build_standin_models(root, full=False)
    return root, manifest


# ----------------------------------------------------------------------------- models


def test_passes_against_the_standin_models_folder(full_models):
    models, manifest = full_models
    report = run_selfcheck(options(models, manifest))
    assert report.ok, "\n".join(f"{c.item}: {c.detail} / {c.fix}" for c in report.failures)
    files = {c.item: c for c in report.find("models") if "/" in c.item}
    expected = {"ben2_onnx/BEN2_Base.onnx", "nudenet/320n.onnx", f"llm/{GGUF_NAME}", f"{FLORENCE_DIR}/model.safetensors",
                f"{FLORENCE_DIR}/config.json"}
    assert expected <= set(files), sorted(files)
    assert all(c.status == OK and "sha256" in c.detail for c in files.values())
    # every workflow, UI and API format, and the worker-comfyui variants, validates with model checks
    workflows = {c.item: c.status for c in report.find("workflows")}
    assert workflows == {
        "workflows/BG_remove_BEN2_simple_1st.api.json": OK, "workflows/BG_remove_BEN2_simple_1st.json": OK,
        "workflows/BG_remove_BEN2_simple_2nd.api.json": OK, "workflows/BG_remove_BEN2_simple_2nd.json": OK,
        "comfyui/BG_remove_BEN2_simple_1st.api.json": OK, "comfyui/BG_remove_BEN2_simple_2nd.api.json": OK,
    }
    assert report.find("nodes", "native runner")[0].status == OK
    assert {c.item for c in report.find("runtime")} >= {"onnxruntime providers", "torch", "transformers", "llama-cpp-python"}


@pytest.mark.parametrize("dest", ["ben2_onnx/BEN2_Base.onnx", f"{FLORENCE_DIR}/model.safetensors", f"llm/{GGUF_NAME}"])
def test_one_flipped_byte_fails_naming_the_file(full_models, tmp_path, dest):
    models, manifest = copy_models(full_models, tmp_path)
    assert run_selfcheck(options(models, manifest, workflows=())).ok  # stamps recorded
    flip_byte(models / dest)
    report = run_selfcheck(options(models, manifest, workflows=()))
    assert not report.ok
    (bad,) = report.failures
    assert bad.section == "models" and bad.item == dest
    assert str(models / dest) in bad.detail and "corrupt" in bad.detail
    assert sha256(models / dest) in bad.detail  # the actual checksum, next to the pinned one
    name = {"ben2_onnx": "ben2", "LLM": "florence2", "llm": "llama"}[dest.split("/")[0]]
    assert f"ben2-worker models download {name}" in bad.fix


def test_cli_exit_codes_table_json_and_the_failing_file(full_models, tmp_path):
    models, manifest = copy_models(full_models, tmp_path)
    args = ["--models-dir", str(models), "--pipelines", "simple,full", "--workflows", str(WORKFLOWS), "--manifest", str(manifest)]
    ok = cli(*args)
    assert ok.exit_code == 0, ok.output
    assert "BEN2_Base.onnx" in ok.output and "selfcheck OK" in ok.output
    as_json = cli(*args, "--json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is True and doc["counts"]["fail"] == 0
    assert any(c["item"] == f"llm/{GGUF_NAME}" and c["status"] == "ok" for c in doc["checks"])

    flip_byte(models / "nudenet" / "320n.onnx")
    bad = cli(*args)
    assert bad.exit_code == 1
    line = next(x for x in bad.output.splitlines() if x.startswith("FAIL models: nudenet/320n.onnx"))
    assert "corrupt" in line and "ben2-worker models download nudenet" in line
    bad_json = cli(*args, "--json")
    assert bad_json.exit_code == 1
    failed = [c for c in json.loads(bad_json.stdout)["checks"] if c["status"] == "fail"]
    assert [c["item"] for c in failed] == ["nudenet/320n.onnx"]


def test_rerun_is_cheap_thanks_to_stamps(full_models, tmp_path, monkeypatch):
    models, manifest = copy_models(full_models, tmp_path)
    assert run_selfcheck(options(models, manifest, workflows=())).ok
    assert (models / VERIFIED_FILENAME).is_file()

    def no_hashing(*_a, **_k):
        raise AssertionError("a file was re-hashed although its stamp is valid")

    monkeypatch.setattr("ben2_worker.models.store.sha256_file", no_hashing)
    assert run_selfcheck(options(models, manifest, workflows=())).ok


def test_missing_models_name_the_file_and_the_download(tmp_path):
    report = run_selfcheck(SelfcheckOptions(models_dir=tmp_path, pipelines=("simple", "full")))
    assert not report.ok
    ben2 = report.find("models", "ben2_onnx/BEN2_Base.onnx")[0]
    assert ben2.status == FAIL and "does not exist" in ben2.detail
    assert f"ben2-worker models download ben2 --models-dir {tmp_path}" in ben2.fix
    florence = report.find("models", "LLM/Florence-2-base/")
    assert len(florence) == 1 and "all 11 files" in florence[0].detail  # one row, not eleven
    assert "models download florence2" in florence[0].fix
    assert report.find("models", GGUF_NAME)[0].status == FAIL


def test_size_mismatch_and_truncation(simple_models, tmp_path):
    models, manifest = copy_models(simple_models, tmp_path)
    path = models / "ben2_onnx" / "BEN2_Base.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=()))
    (bad,) = report.failures
    assert bad.item == "ben2_onnx/BEN2_Base.onnx" and "expected" in bad.detail and "bytes" in bad.detail


def test_simple_pipeline_skips_workflows_that_need_the_full_one(simple_models):
    models, manifest = simple_models
    report = run_selfcheck(options(models, manifest, pipelines=("simple",)))
    assert report.ok, [c.detail for c in report.failures]
    statuses = {c.item: c.status for c in report.find("workflows")}
    assert statuses["workflows/BG_remove_BEN2_simple_2nd.json"] == OK
    assert statuses["comfyui/BG_remove_BEN2_simple_2nd.api.json"] == OK
    skipped = report.find("workflows", "BG_remove_BEN2_simple_1st.json")[0]
    assert skipped.status == SKIP and "full" in skipped.detail
    assert not report.find("runtime", "torch")  # the simple pipeline never imports the safety stack


def test_image_build_needs_whole_second_mtimes_and_readable_stamps(simple_models, tmp_path):
    models, manifest = copy_models(simple_models, tmp_path)
    model = models / "ben2_onnx" / "BEN2_Base.onnx"
    os.utime(model, ns=(1_704_067_200_123_456_789, 1_704_067_200_123_456_789))
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(), image_build=True))
    (bad,) = report.failures
    assert bad.item == "mtimes" and "ben2_onnx/BEN2_Base.onnx" in bad.detail and "touch" in bad.fix
    # without --image-build the same folder is fine
    assert run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=())).ok

    os.utime(model, (1_704_067_200, 1_704_067_200))
    stamp = models / VERIFIED_FILENAME
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(), image_build=True))
    assert report.ok, [c.detail for c in report.failures]
    assert stamp.stat().st_mode & 0o004, "the stamp file must be readable by the non-root worker"
    assert report.find("models", VERIFIED_FILENAME)[0].status == OK


def test_unwritable_models_folder_is_reported(simple_models, tmp_path, monkeypatch):
    models, manifest = copy_models(simple_models, tmp_path)
    (models / VERIFIED_FILENAME).unlink(missing_ok=True)

    def read_only(*_a, **_k):
        raise PermissionError(13, "Permission denied")  # what a read-only models folder answers

    monkeypatch.setattr("ben2_worker.models.store.write_json", read_only)
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=()))
    stamp = report.find("models", VERIFIED_FILENAME)[0]
    assert stamp.status == WARN and "every worker start will re-hash" in stamp.detail
    os.utime(models / "ben2_onnx" / "BEN2_Base.onnx", (1_704_067_200, 1_704_067_200))
    strict = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(), image_build=True))
    assert [c.item for c in strict.failures] == [VERIFIED_FILENAME]


# ----------------------------------------------------------------------------- runtime


def test_require_gpu_fails_without_the_cuda_provider(simple_models):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    models, manifest = simple_models
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(), require_gpu=True))
    (bad,) = report.failures
    assert bad.item == "onnxruntime providers" and "CUDAExecutionProvider" in bad.detail
    assert "onnxruntime-gpu==1.26.0" in bad.fix


def test_two_onnxruntime_distributions_fail(monkeypatch):
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.26.0"}
    monkeypatch.setattr(sc, "_distribution_version", lambda name: versions.get(name))
    report = sc.Report()
    sc._check_onnxruntime(report, require_gpu=False, providers="auto")
    bad = report.find("runtime", "onnxruntime packages")[0]
    assert bad.status == FAIL and "onnxruntime 1.32.0, onnxruntime-gpu 1.26.0" in bad.detail
    assert bad.fix.startswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu==1.26.0")


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("ldd") is None:
        pytest.skip("needs a C compiler and ldd")
    return cc


def test_missing_shared_libraries_are_named_and_the_driver_is_not(tmp_path):
    cc = _cc()
    (tmp_path / "x.c").write_text("int x(void) { return 1; }\n")
    for soname in ("libgone.so.7", "libcuda.so.1"):  # link against stand-ins, then remove them
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / soname), f"-Wl,-soname,{soname}", str(tmp_path / "x.c")], check=True)
    for soname in ("libgone.so.7", "libcuda.so.1"):
        os.symlink(soname, tmp_path / (soname.split(".so")[0] + ".so"))
    needy = tmp_path / "libneedy.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(needy), str(tmp_path / "x.c"), f"-L{tmp_path}", "-Wl,--no-as-needed",
                    "-lgone", "-lcuda"], check=True)
    for name in ("libgone.so.7", "libcuda.so.1", "libgone.so", "libcuda.so"):
        (tmp_path / name).unlink()
    assert sc.missing_shared_libraries(needy) == ["libgone.so.7"]
    report = sc.Report()
    sc._check_libraries(report, "test lib", needy, fix="install libgone")
    (row,) = report.checks
    assert row.status == FAIL and "libgone.so.7" in row.detail and "libcuda" not in row.detail and row.fix == "install libgone"


def test_a_library_whose_dependencies_resolve_passes():
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    lib = next(iter(sorted(capi.glob("libonnxruntime*.so*"))), None) or next(iter(sorted(capi.glob("*.so"))), None)
    if lib is None or shutil.which("ldd") is None:
        pytest.skip("no onnxruntime shared library or no ldd here")
    assert sc.missing_shared_libraries(lib) == []


# ----------------------------------------------------------------------------- nodes & workflows


def test_unknown_node_type_is_named_with_file_and_node(tmp_path, simple_models):
    models, manifest = simple_models
    api = json.loads((WORKFLOWS / "BG_remove_BEN2_simple_2nd.api.json").read_text())
    api["99"] = {"class_type": "MysteryNode", "inputs": {"image": ["1", 0]}}
    wf = tmp_path / "mystery.api.json"
    wf.write_text(json.dumps(api))
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(wf,)))
    node = report.find("nodes", "native: MysteryNode")[0]
    assert node.status == FAIL and "mystery.api.json node 99" in node.detail and "NODE_TYPES" in node.fix
    assert report.find("workflows", "mystery.api.json")[0].status == FAIL


def test_workflow_folder_problems(tmp_path, simple_models):
    models, manifest = simple_models
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"hello": "world"}')
    report = run_selfcheck(options(models, manifest, pipelines=("simple",), workflows=(tmp_path, tmp_path / "nope")))
    items = {c.item: c for c in report.failures}
    assert "not valid JSON" in items[f"{tmp_path.name}/broken.json"].detail
    assert "not a ComfyUI workflow" in items[f"{tmp_path.name}/other.json"].detail
    assert "does not exist" in items[str(tmp_path / "nope")].detail


def test_workflow_node_types_reads_both_formats():
    ui = json.loads((WORKFLOWS / "BG_remove_BEN2_simple_2nd.json").read_text())
    api = json.loads((WORKFLOWS / "BG_remove_BEN2_simple_2nd.api.json").read_text())
    ui_types = sc.workflow_node_types(ui)
    assert "SaveImageNoMetadata" in ui_types  # bypassed in the UI file, still a node ComfyUI must know
    assert set(sc.workflow_node_types(api)) == set(ui_types) - {"SaveImageNoMetadata"}


# ----------------------------------------------------------------------------- ComfyUI registry


FAKE_COMFY = {
    "comfy/__init__.py": "",
    "comfy/options.py": """
        args_parsing = False
        def enable_args_parsing(enable=True):
            global args_parsing
            args_parsing = enable
    """,
    "comfy/cli_args.py": """
        import argparse
        import comfy.options
        parser = argparse.ArgumentParser()
        parser.add_argument("--cpu", action="store_true")
        args = parser.parse_args() if comfy.options.args_parsing else parser.parse_args([])
    """,
    "server.py": """
        class PromptServer:
            instance = None
            def __init__(self, loop):
                PromptServer.instance = self
                self.loop = loop
    """,
    "nodes.py": """
        import importlib.util, logging, os, sys
        from comfy.cli_args import args
        if not args.cpu:  # the real one initialises CUDA at import unless --cpu
            raise RuntimeError("Found no NVIDIA driver on your system")
        class LoadImage: pass
        class PreviewImage: pass
        class SaveImage: pass
        NODE_CLASS_MAPPINGS = {"LoadImage": LoadImage, "PreviewImage": PreviewImage, "SaveImage": SaveImage}
        LOADED_MODULE_DIRS = {}
        async def init_extra_nodes(init_custom_nodes=True, init_api_nodes=True):
            root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_nodes")
            for name in sorted(os.listdir(root)) if init_custom_nodes else []:
                path = os.path.join(root, name, "__init__.py")
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                except Exception as e:
                    logging.warning(f"Cannot import {os.path.dirname(path)} module for custom nodes: {e}")
                    continue
                NODE_CLASS_MAPPINGS.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
                LOADED_MODULE_DIRS[name] = os.path.dirname(path)
    """,
}


def fake_comfyui(root: Path, pack_nodes: list[str], *, broken_pack: bool = False) -> Path:
    for rel, text in FAKE_COMFY.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    pack = root / "custom_nodes" / "fakepack" / "__init__.py"
    pack.parent.mkdir(parents=True)
    pack.write_text(
        "from server import PromptServer\n"
        "assert PromptServer.instance is not None, 'custom nodes register routes on PromptServer.instance'\n"
        f"NODE_CLASS_MAPPINGS = {{n: object for n in {pack_nodes!r}}}\n"
    )
    if broken_pack:
        bad = root / "custom_nodes" / "brokenpack" / "__init__.py"
        bad.parent.mkdir(parents=True)
        bad.write_text("import module_that_is_not_installed\n")
    return root


def _workflow_types() -> set[str]:
    types: set[str] = set()
    for f in sc.workflow_files([WORKFLOWS]):
        types |= set(sc.workflow_node_types(json.loads(f.read_text())))
    return types


def test_comfyui_registry_is_loaded_from_the_install(tmp_path):
    needed = sorted(_workflow_types() - {"LoadImage", "PreviewImage"})
    comfy = fake_comfyui(tmp_path / "comfyui", needed)
    registry = sc.load_comfyui_registry(comfy, timeout=120)
    assert "error" not in registry, registry
    assert set(needed) <= set(registry["nodes"]) and registry["custom_modules"] == ["fakepack"]

    report = sc.Report()
    sc.check_comfyui_nodes(report, sc.workflow_files([WORKFLOWS]), comfy, image_build=True, timeout=120)
    assert report.ok, [c.detail for c in report.failures]
    assert report.find("nodes", "ComfyUI workflows")[0].status == OK


def test_comfyui_missing_node_and_failed_import_are_named(tmp_path):
    needed = sorted(_workflow_types() - {"LoadImage", "PreviewImage", "ShowText|pysssss"})
    comfy = fake_comfyui(tmp_path / "comfyui", needed, broken_pack=True)
    report = sc.Report()
    sc.check_comfyui_nodes(report, sc.workflow_files([WORKFLOWS]), comfy, image_build=False, timeout=120)
    missing = report.find("nodes", "ComfyUI: ShowText|pysssss")[0]
    assert missing.status == FAIL and "BG_remove_BEN2_simple_1st" in missing.detail and "pysssss" in missing.fix
    failed = report.find("nodes", "custom node import")[0]
    assert failed.status == WARN and "brokenpack" in failed.detail and "module_that_is_not_installed" in failed.detail


def test_comfyui_fallback_checks_the_pack_and_core_names(tmp_path):
    not_comfy = tmp_path / "empty"
    not_comfy.mkdir()
    report = sc.Report()
    sc.check_comfyui_nodes(report, sc.workflow_files([WORKFLOWS]), not_comfy, image_build=False, timeout=60)
    registry = report.find("nodes", "ComfyUI registry")[0]
    assert registry.status == WARN and "no nodes.py" in registry.detail and "core node names" in registry.detail
    strict = sc.Report()
    sc.check_comfyui_nodes(strict, sc.workflow_files([WORKFLOWS]), not_comfy, image_build=True, timeout=60)
    assert strict.find("nodes", "ComfyUI registry")[0].status == FAIL


# ----------------------------------------------------------------------------- options


def test_pipelines_option():
    assert sc.parse_pipelines_option("full, simple") == ("simple", "full")
    assert sc.parse_pipelines_option(None) == ("simple",)
    with pytest.raises(ValueError, match="subset of simple, full"):
        sc.parse_pipelines_option("simple,everything")


def test_cli_usage_error_exits_2(tmp_path):
    result = cli("--models-dir", str(tmp_path), "--pipelines", "everything")
    assert result.exit_code == 2 and "pipelines must be" in result.output


def test_cli_reads_the_environment(simple_models, monkeypatch):
    models, manifest = simple_models
    monkeypatch.setenv("BEN2_WORKER_MODELS", str(models))
    monkeypatch.setenv("BEN2_WORKER_PIPELINES", "simple")
    monkeypatch.setenv("BEN2_WORKER_WORKFLOWS", str(WORKFLOWS / "comfyui"))
    result = cli("--manifest", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["meta"]["pipelines"] == ["simple"] and doc["meta"]["models_dir"] == str(models)
    assert [Path(p).name for p in doc["meta"]["workflows"]] == ["BG_remove_BEN2_simple_1st.api.json", "BG_remove_BEN2_simple_2nd.api.json"]


def test_module_entry_point_runs(simple_models):
    models, manifest = simple_models
    proc = subprocess.run(
        [sys.executable, "-m", "ben2_worker.cli.selfcheck", "--models-dir", str(models), "--pipelines", "simple",
         "--workflows", str(WORKFLOWS / "comfyui"), "--manifest", str(manifest)],
        capture_output=True, text=True, timeout=300, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "selfcheck OK" in proc.stderr
