"""Self-check: can this install serve? Run as the last step of every image build.

``ben2-worker selfcheck`` (:func:`run_selfcheck`) answers, file by file and node by node:

* **models** — every file the selected pipelines need is present and has its pinned sha256
  (:meth:`ModelStore.status` with ``full=True``; verified stamps make a re-run cost a ``stat``
  per file). With ``image_build`` also: the stamp was recorded and is readable by any user, and
  mtimes are whole seconds — image layers keep whole seconds, so a stamp taken over sub-second
  mtimes would not match after a push and every worker start would re-hash gigabytes.
* **runtime** — exactly one onnxruntime distribution, its providers (``require_gpu``: the CUDA
  provider must be there and every library it links must resolve, the driver's ``libcuda.so.1``
  excepted, which only exists at run time); for the full pipeline torch, transformers'
  native Florence-2 and llama-cpp-python (built with CUDA when ``require_gpu``).
* **nodes** — every node type the workflows use (bypassed ones included: ComfyUI's editor
  needs them) is implemented by the native runner; with ``comfyui`` also registered in that
  ComfyUI install (its registry is loaded in a subprocess; when that is impossible, our
  pack's ``NODE_CLASS_MAPPINGS`` plus ComfyUI's core node names are checked instead).
* **workflows** — each workflow validates (:meth:`WorkflowRunner.prepare`) with model checks;
  one that needs a pipeline not selected is skipped, not failed.

Every failure names the file or node and the fix. :class:`Report` renders as a rich table or
JSON; the CLI exits 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings, child_environment
from ..engines import Engines
from ..errors import Ben2WorkerError
from ..models.store import PIPELINES, ModelSpec, ModelStore, models_for_pipeline
from ..runtime import resolve_providers

__all__ = [
    "COMFYUI_CORE_NODES",
    "Check",
    "NODE_SOURCES",
    "Report",
    "SelfcheckOptions",
    "check_comfyui_nodes",
    "check_models",
    "check_native_nodes",
    "check_runtime",
    "check_workflows",
    "load_comfyui_registry",
    "missing_shared_libraries",
    "run_selfcheck",
    "workflow_files",
    "workflow_node_types",
]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

#: The NVIDIA driver's library: mounted into the container at run time by the NVIDIA
#: container toolkit, absent during ``docker build``; never reported as missing.
DRIVER_LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")

#: onnxruntime distributions that all install the same ``onnxruntime`` package folder.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")
#: The CUDA 12 build the images install (docker/cuda12-pins.txt); named in fixes.
ORT_GPU_PIN = "onnxruntime-gpu==1.26.0"

#: Engine attribute (workflow/nodes.py) -> the pipeline whose models it needs.
ENGINE_PIPELINE = {"cutout": "simple", "caption": "full", "nudenet": "full", "classifier": "full"}

#: UI-only node types that never reach a ComfyUI registry (the frontend resolves them).
VIRTUAL_NODE_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")

#: ComfyUI core node names (``nodes.NODE_CLASS_MAPPINGS`` of ComfyUI 0.3.x) this project's
#: workflows may use; the fallback when ComfyUI's registry cannot be imported.
COMFYUI_CORE_NODES = frozenset({
    "LoadImage", "LoadImageMask", "PreviewImage", "SaveImage", "ImageScale", "ImageScaleBy",
    "ImageInvert", "ImageBatch", "ImagePadForOutpaint", "EmptyImage",
})

#: Where each non-core node type of the workflows comes from, for "install X" fixes.
NODE_SOURCES = {
    "SmartResizeForModel": "this project's node pack (ben2_worker.comfy_nodes)",
    "RestoreOriginalSize": "this project's node pack (ben2_worker.comfy_nodes)",
    "BEN2_ONNX_RemoveBg": "this project's node pack (ben2_worker.comfy_nodes)",
    "FreeVRAMInline": "this project's node pack (ben2_worker.comfy_nodes)",
    "NudeNetSafetyChecker": "this project's node pack (ben2_worker.comfy_nodes)",
    "MultiDomainSafetyClassifier": "this project's node pack (ben2_worker.comfy_nodes)",
    "HybridSafetyGate": "this project's node pack (ben2_worker.comfy_nodes)",
    "LocalJSONExtractorLlama": "this project's node pack (ben2_worker.comfy_nodes)",
    "SaveImageNoMetadata": "this project's node pack (ben2_worker.comfy_nodes)",
    "Florence2ModelLoader": "this project's node pack, or kijai/ComfyUI-Florence2 (see Dockerfile.comfyui)",
    "Florence2Run": "this project's node pack, or kijai/ComfyUI-Florence2 (see Dockerfile.comfyui)",
    "ShowText|pysssss": "this project's node pack, or pysssss' ComfyUI-Custom-Scripts (github.com/pythongosssss; see Dockerfile.comfyui)",
}

#: Printed by the registry loader before its JSON, so ComfyUI's own output can be ignored.
REGISTRY_MARKER = "@@BEN2_SELFCHECK_REGISTRY@@"

#: Runs inside the ComfyUI install's Python: load core, extra and custom nodes the way
#: ComfyUI's main.py does (CPU mode, no server started, no paid API nodes), print the registry.
_REGISTRY_SCRIPT = r"""
import asyncio, json, logging, os, sys, traceback
comfy_dir = os.path.abspath(sys.argv[1])
marker = sys.argv[2]
failures = []

class _Catch(logging.Handler):
    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:
            return
        if "Cannot import" in msg or "IMPORT FAILED" in msg or "Failed to load custom node" in msg:
            failures.append(msg.strip().splitlines()[0][:500])

logging.getLogger().addHandler(_Catch())
os.chdir(comfy_dir)
sys.path.insert(0, comfy_dir)
sys.argv = [os.path.join(comfy_dir, "main.py"), "--cpu"]
try:
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses --cpu: no GPU needed)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    import server
    server.PromptServer(loop)  # custom nodes register routes on PromptServer.instance
    import nodes
    result = None
    for kwargs in ({"init_custom_nodes": True, "init_api_nodes": False}, {"init_custom_nodes": True}, {}):
        try:
            result = nodes.init_extra_nodes(**kwargs)
            break
        except TypeError:
            continue
    if asyncio.iscoroutine(result):
        result = loop.run_until_complete(result)
    loaded = sorted(getattr(nodes, "LOADED_MODULE_DIRS", {}) or {})
    out = {"nodes": sorted(nodes.NODE_CLASS_MAPPINGS), "import_failed": failures, "custom_modules": loaded}
except BaseException as exc:
    out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:], "import_failed": failures}
print(marker + json.dumps(out), flush=True)
"""


# ----------------------------------------------------------------------------- report


@dataclass
class Check:
    """One line of the report. ``fix`` says what to do; set whenever ``status`` is fail/warn."""

    section: str
    item: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, item: str, status: str, detail: str, fix: str = "") -> Check:
        check = Check(section, item, status, detail, fix)
        self.checks.append(check)
        return check

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def find(self, section: str | None = None, item: str | None = None) -> list[Check]:
        return [c for c in self.checks if (section is None or c.section == section) and (item is None or item in c.item)]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "meta": self.meta, "checks": [c.to_dict() for c in self.checks]}

    def summary_line(self) -> str:
        n = self.counts()
        verdict = "OK" if self.ok else f"FAILED ({n[FAIL]} problem{'s' if n[FAIL] != 1 else ''})"
        return f"selfcheck {verdict}: {n[OK]} ok, {n[WARN]} warnings, {n[FAIL]} failed, {n[SKIP]} skipped"


@dataclass
class SelfcheckOptions:
    models_dir: Path
    pipelines: tuple[str, ...] = ("simple",)
    #: Workflow files or folders (searched recursively for ``*.json``).
    workflows: tuple[Path, ...] = ()
    #: A ComfyUI install (the folder holding main.py, nodes.py, custom_nodes/).
    comfyui: Path | None = None
    require_gpu: bool = False
    #: Stricter checks for an image build (stamps recorded and world-readable, whole-second
    #: mtimes, ComfyUI registry must load).
    image_build: bool = False
    #: Another manifest (tests, mirrors); None = the packaged one.
    manifest: Mapping[str, ModelSpec] | None = None
    lock_path: Path | None = None
    comfyui_timeout: float = 900.0
    #: Python of the ComfyUI install (default: this interpreter, as in the images).
    comfyui_python: str | None = None
    #: ``BEN2_WORKER_PROVIDERS`` as config.py read it (which onnxruntime providers to check).
    providers: str = "auto"


# ----------------------------------------------------------------------------- helpers


def _human(size: int | None) -> str:
    if size is None:
        return "? bytes"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= div:
            return f"{size / div:.1f} {unit}"
    return f"{size} B"


def _download_fix(name: str, models_dir: Path) -> str:
    return f"run `ben2-worker models download {name} --models-dir {models_dir}` (it replaces a bad file)"


def missing_shared_libraries(path: Path, ignore: Iterable[str] = DRIVER_LIBRARIES) -> list[str] | None:
    """Libraries ``path`` needs (directly or through its dependencies) that the dynamic loader
    cannot find, as ``ldd`` reports them; None when ``ldd`` is unavailable."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        proc = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    skip = set(ignore)
    missing: list[str] = []
    for line in proc.stdout.splitlines():
        if "not found" in line:
            lib = line.split("=>", 1)[0].strip()
            if lib and lib not in skip and lib not in missing:
                missing.append(lib)
    return missing


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- models


def _stamp_entries(store: ModelStore) -> dict[str, Any]:
    try:
        data = json.loads(store.stamp_path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_models(report: Report, store: ModelStore, pipelines: Sequence[str], *, image_build: bool = False) -> None:
    """One row per model file: verified (sha256 matches the pin) or what is wrong and the fix."""
    names: list[str] = []
    for pipeline in pipelines:
        for name in models_for_pipeline(store.manifest, pipeline):
            if name not in names:
                names.append(name)
    if not names:
        report.add("models", "(none)", SKIP, f"no model is needed by pipeline(s) {', '.join(pipelines)}")
        return
    verified: list[tuple[str, Path, int | None]] = []
    for name in names:
        spec = store.manifest[name]
        try:
            status = store.status(name, full=True)
        except (Ben2WorkerError, OSError) as exc:
            report.add("models", f"{name}", FAIL, f"cannot check model '{name}': {exc}", _download_fix(name, store.models_dir))
            continue
        if len(status.files) > 1 and all(f.state == "missing" for f in status.files):
            folder = store.models_dir / spec.primary
            report.add("models", f"{spec.primary}/", FAIL,
                       f"all {len(status.files)} files of model '{name}' ({spec.title}) are missing from {folder} "
                       f"({', '.join(Path(f.dest).name for f in status.files)})",
                       _download_fix(name, store.models_dir))
            continue
        for f in status.files:
            item = f.dest
            where = str(f.path)
            if f.state == "verified":
                report.add("models", item, OK, f"sha256 {f.actual_sha256 or f.expected_sha256} ({_human(f.size)}, model '{name}')")
                verified.append((f.dest, f.path, f.size))
            elif f.state == "missing":
                report.add("models", item, FAIL,
                           f"{where} does not exist (model '{name}': {spec.title}; expected sha256 "
                           f"{f.expected_sha256 or 'not pinned'}, {_human(f.expected_size)})",
                           _download_fix(name, store.models_dir))
            elif f.state == "size_mismatch":
                report.add("models", item, FAIL,
                           f"{where} has {f.size:,} bytes, expected {f.expected_size:,} (truncated or the wrong file; model '{name}')",
                           _download_fix(name, store.models_dir))
            elif f.state == "corrupt":
                report.add("models", item, FAIL,
                           f"{where} is corrupt: sha256 {f.actual_sha256}, pinned {f.expected_sha256} (model '{name}')",
                           _download_fix(name, store.models_dir))
            elif f.state == "unpinned":
                report.add("models", item, FAIL,
                           f"{where} is present but no sha256 is pinned for it in the manifest or a lock file, so it cannot be verified",
                           f"run `ben2-worker models download {name} --force --models-dir {store.models_dir}` to record its checksum")
            else:  # "present" never comes back from a full check; be explicit anyway
                report.add("models", item, FAIL, f"{where}: unexpected state {f.state!r}", _download_fix(name, store.models_dir))
    if verified:
        _check_stamps(report, store, verified, image_build=image_build)


def _check_stamps(report: Report, store: ModelStore, verified: list[tuple[str, Path, int | None]], *, image_build: bool) -> None:
    """Worker starts verify through stamps (size + mtime_ns + sha256): make sure they will hold."""
    total = sum(size or 0 for _, _, size in verified)
    stamps = _stamp_entries(store)
    unstamped = [dest for dest, _, _ in verified if dest not in stamps]
    bad = FAIL if image_build else WARN
    if unstamped:
        report.add("models", store.stamp_path.name, bad,
                   f"could not record verified stamps in {store.stamp_path} for {', '.join(unstamped)} (read-only models "
                   f"folder?): every worker start will re-hash {_human(total)}",
                   f"run the self-check once as a user who may write {store.models_dir}")
    elif image_build:
        try:
            mode = store.stamp_path.stat().st_mode
            if not mode & stat.S_IROTH:
                os.chmod(store.stamp_path, stat.S_IMODE(mode) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                mode = store.stamp_path.stat().st_mode
            readable = bool(mode & stat.S_IROTH)
        except OSError:
            readable = False
        if readable:
            report.add("models", store.stamp_path.name, OK, f"verified stamps recorded for {len(verified)} file(s), readable by every user")
        else:
            report.add("models", store.stamp_path.name, FAIL,
                       f"{store.stamp_path} is not readable by other users: a non-root worker would re-hash {_human(total)} at every start",
                       f"chmod a+r {store.stamp_path}")
    if not image_build:
        return
    subsecond = []
    unreadable = []
    for dest, path, _ in verified:
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_mtime_ns % 1_000_000_000:
            subsecond.append(dest)
        if not st.st_mode & stat.S_IROTH:
            unreadable.append(dest)
    if subsecond:
        report.add("models", "mtimes", FAIL,
                   f"{', '.join(subsecond)}: mtime has a sub-second part; image layers keep whole seconds, so after a push the "
                   f"verified stamps stop matching and every worker start re-hashes {_human(total)}",
                   "normalise model mtimes before the self-check (docker/fetch-models.sh does: touch -d @SECONDS)")
    if unreadable:
        report.add("models", "permissions", FAIL,
                   f"{', '.join(unreadable)}: not readable by other users (the image runs as a non-root user)",
                   f"chmod -R a+rX {store.models_dir}")


# ----------------------------------------------------------------------------- runtime


def check_runtime(report: Report, pipelines: Sequence[str], *, require_gpu: bool, providers: str = "auto") -> None:
    _check_onnxruntime(report, require_gpu=require_gpu, providers=providers)
    if "full" in pipelines:
        _check_torch(report, require_gpu=require_gpu)
        _check_transformers(report)
        _check_llama(report, require_gpu=require_gpu)


def _check_onnxruntime(report: Report, *, require_gpu: bool, providers: str) -> None:
    installed = {d: v for d in ORT_DISTRIBUTIONS if (v := _distribution_version(d)) is not None}
    if len(installed) > 1:
        listing = ", ".join(f"{d} {v}" for d, v in installed.items())
        keep = ORT_GPU_PIN if require_gpu or "onnxruntime-gpu" in installed else "onnxruntime"
        report.add("runtime", "onnxruntime packages", FAIL,
                   f"{listing} are installed together; they share one `onnxruntime` folder, so whichever was installed "
                   f"last silently overwrote the other",
                   f"pip uninstall -y {' '.join(installed)} && pip install {keep}")
    try:
        import onnxruntime
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        report.add("runtime", "onnxruntime", FAIL, f"cannot import onnxruntime: {type(exc).__name__}: {exc}",
                   f"pip install {ORT_GPU_PIN} (GPU) or onnxruntime (CPU)")
        return
    available = list(onnxruntime.get_available_providers())
    dist = ", ".join(f"{d} {v}" for d, v in installed.items()) or f"onnxruntime {onnxruntime.__version__}"
    chosen = resolve_providers(providers, available)
    detail = f"{dist}; available: {', '.join(available)}; BEN2 sessions will use: {', '.join(chosen)}"
    if "CUDAExecutionProvider" in available:
        report.add("runtime", "onnxruntime providers", OK, detail)
    elif require_gpu:
        report.add("runtime", "onnxruntime providers", FAIL, f"CUDAExecutionProvider is not available ({detail})",
                   f"pip uninstall -y onnxruntime && pip install {ORT_GPU_PIN} (the CUDA 12 build)")
        return
    else:
        report.add("runtime", "onnxruntime providers", OK, f"CPU only ({detail})")
        return
    if require_gpu:
        capi = Path(onnxruntime.__file__).parent / "capi"
        _check_libraries(report, "onnxruntime CUDA provider", capi / "libonnxruntime_providers_cuda.so",
                         fix="install the CUDA 12 / cuDNN 9 libraries (docker/cuda12-pins.txt) and register them with "
                             "docker/register-cuda-libs.sh")


def _check_libraries(report: Report, item: str, path: Path, *, fix: str) -> None:
    if not path.is_file():
        report.add("runtime", item, FAIL, f"{path} does not exist", fix)
        return
    missing = missing_shared_libraries(path)
    if missing is None:
        report.add("runtime", item, WARN, f"cannot run ldd to check the libraries {path.name} links", "install libc-bin (ldd)")
    elif missing:
        report.add("runtime", item, FAIL, f"{path.name} links libraries the loader cannot find: {', '.join(missing)}", fix)
    else:
        report.add("runtime", item, OK,
                   f"every library {path.name} links resolves ({', '.join(DRIVER_LIBRARIES[:1])} comes from the NVIDIA driver at run time)")


def _check_torch(report: Report, *, require_gpu: bool) -> None:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        report.add("runtime", "torch", FAIL, f"cannot import torch (Florence-2 needs it): {type(exc).__name__}: {exc}",
                   "install the full extra: pip install 'ben2-worker[full]'")
        return
    cuda = getattr(torch.version, "cuda", None)
    if cuda:
        report.add("runtime", "torch", OK, f"torch {torch.__version__}, built for CUDA {cuda}")
    elif require_gpu:
        report.add("runtime", "torch", WARN, f"torch {torch.__version__} is a CPU build: Florence-2 will caption on the CPU",
                   "build with TORCH_VARIANT=cuda for GPU captions (docs/deploy.md)")
    else:
        report.add("runtime", "torch", OK, f"torch {torch.__version__} (CPU build)")


def _check_transformers(report: Report) -> None:
    try:
        import transformers
        from transformers import Florence2ForConditionalGeneration, Florence2Processor  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        report.add("runtime", "transformers", FAIL,
                   f"transformers has no native Florence-2 ({type(exc).__name__}: {exc}); it needs transformers >= 4.56",
                   "pip install 'transformers==5.24.0' (the version in requirements/lock.txt)")
        return
    report.add("runtime", "transformers", OK, f"transformers {transformers.__version__} (native Florence-2, no remote code)")


def _check_llama(report: Report, *, require_gpu: bool) -> None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        report.add("runtime", "llama-cpp-python", FAIL, "llama-cpp-python is not installed (the safety classifier needs it)",
                   "install the CUDA wheel built by docker/build-llama-wheel.sh, or pip install llama-cpp-python==0.3.36")
        return
    version = _distribution_version("llama-cpp-python") or _distribution_version("llama_cpp_python") or "?"
    lib_dir = Path(spec.origin).parent / "lib"
    cuda_lib = lib_dir / "libggml-cuda.so"
    if cuda_lib.is_file():
        _check_libraries(report, "llama.cpp CUDA backend", cuda_lib,
                         fix="the CUDA libraries (cudart, cuBLAS 12) must be on the loader path: docker/register-cuda-libs.sh")
    elif require_gpu:
        report.add("runtime", "llama.cpp CUDA backend", FAIL,
                   f"llama-cpp-python {version} was built without CUDA (no {cuda_lib}): the LLM would run on the CPU",
                   "rebuild it with CMAKE_ARGS='-DGGML_CUDA=on' (docker/build-llama-wheel.sh)")
    try:
        importlib.import_module("llama_cpp")
    except Exception as exc:  # noqa: BLE001
        text = f"{type(exc).__name__}: {exc}"
        if any(lib in text for lib in DRIVER_LIBRARIES):
            report.add("runtime", "llama-cpp-python", OK,
                       f"llama-cpp-python {version} (CUDA build; importable only where the NVIDIA driver is mounted: {text})")
        else:
            report.add("runtime", "llama-cpp-python", FAIL, f"cannot import llama_cpp {version}: {text}",
                       "reinstall llama-cpp-python (docker/build-llama-wheel.sh for the CUDA build)")
        return
    report.add("runtime", "llama-cpp-python", OK, f"llama-cpp-python {version}" + (" (CUDA build)" if cuda_lib.is_file() else " (CPU build)"))


# ----------------------------------------------------------------------------- workflows & nodes


def workflow_files(paths: Iterable[Path]) -> list[Path]:
    """The ``*.json`` files of each folder (recursively) and each file named, in a stable order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        found = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in found:
            if f not in out:
                out.append(f)
    return out


def _load_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text("utf-8")), None
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return None, f"{path} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def workflow_node_types(data: Any) -> dict[str, list[str]]:
    """class_type -> node ids using it, for a UI-format (bypassed/muted nodes included, virtual
    nodes excluded) or API-format workflow. Empty for something that is neither."""
    from ..workflow import is_ui_workflow

    types: dict[str, list[str]] = {}
    if is_ui_workflow(data):
        for node in data.get("nodes", []):
            if isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"] not in VIRTUAL_NODE_TYPES:
                types.setdefault(node["type"], []).append(str(node.get("id")))
    elif isinstance(data, dict):
        for nid, node in data.items():
            if isinstance(node, dict) and isinstance(node.get("class_type"), str):
                types.setdefault(node["class_type"], []).append(str(nid))
    return types


def _collect_node_types(files: Sequence[Path]) -> dict[str, list[str]]:
    """class_type -> ["<file name> node <id>", ...] across all readable workflow files."""
    users: dict[str, list[str]] = {}
    for path in files:
        data, err = _load_json(path)
        if err is not None:
            continue
        for class_type, ids in workflow_node_types(data).items():
            users.setdefault(class_type, []).extend(f"{_item_name(path)} node {i}" for i in ids)
    return users


def _item_name(path: Path) -> str:
    """``folder/file.json``: the same file name sits in workflows/ and workflows/comfyui/."""
    return path.name if path.parent.name in ("", ".") else f"{path.parent.name}/{path.name}"


def _where(users: list[str], limit: int = 3) -> str:
    more = f" and {len(users) - limit} more" if len(users) > limit else ""
    return ", ".join(users[:limit]) + more


def check_native_nodes(report: Report, files: Sequence[Path]) -> None:
    from ..workflow import NODE_TYPES

    users = _collect_node_types(files)
    if not users:
        return
    missing = {t: u for t, u in users.items() if t not in NODE_TYPES}
    for class_type, where in sorted(missing.items()):
        report.add("nodes", f"native: {class_type}", FAIL,
                   f"node type {class_type!r} (used by {_where(where)}) is not implemented by the native runner",
                   "add it to ben2_worker/workflow/nodes.py (NODE_TYPES), or remove the node from the workflow")
    present = sorted(t for t in users if t in NODE_TYPES)
    if present:
        report.add("nodes", "native runner", OK, f"{len(present)} node type(s) implemented: {', '.join(present)}")


def load_comfyui_registry(comfyui: Path, *, python: str | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Node names registered by the ComfyUI install at ``comfyui`` (core, extras, custom nodes),
    loaded in a subprocess as ComfyUI's main.py would, in CPU mode. Returns the loader's JSON:
    ``{"nodes": [...], "import_failed": [...], "custom_modules": [...]}`` or ``{"error": ...}``."""
    comfyui = Path(comfyui)
    if not (comfyui / "nodes.py").is_file():
        return {"error": f"{comfyui} is not a ComfyUI install (no nodes.py)", "import_failed": []}
    env = child_environment(PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
    try:
        proc = subprocess.run(
            [python or sys.executable, "-c", _REGISTRY_SCRIPT, str(comfyui), REGISTRY_MARKER],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=str(comfyui),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"loading ComfyUI's node registry took longer than {timeout:.0f} s", "import_failed": []}
    except OSError as exc:
        return {"error": f"cannot start {python or sys.executable}: {exc}", "import_failed": []}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(REGISTRY_MARKER):
            try:
                return json.loads(line[len(REGISTRY_MARKER):])
            except ValueError:
                break
    tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
    return {"error": f"the registry loader exited with status {proc.returncode} without a result: {tail}", "import_failed": []}


_PACK_SCRIPT = (
    "import json; from ben2_worker.comfy_nodes import NODE_CLASS_MAPPINGS as m; "
    f"print({REGISTRY_MARKER!r} + json.dumps(sorted(m)))"
)


def _pack_node_names(python: str | None = None, timeout: float = 300.0) -> tuple[set[str], str | None]:
    """NODE_CLASS_MAPPINGS of this project's node pack, or (empty, why not). Imported in a
    subprocess: the pack registers folders with ComfyUI's folder_paths at import, which must
    not leak into this process."""
    try:
        proc = subprocess.run([python or sys.executable, "-c", _PACK_SCRIPT], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return set(), f"cannot import ben2_worker.comfy_nodes: {exc}"
    for line in proc.stdout.splitlines():
        if line.startswith(REGISTRY_MARKER):
            return set(json.loads(line[len(REGISTRY_MARKER):])), None
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return set(), f"cannot import ben2_worker.comfy_nodes: {tail}"


def check_comfyui_nodes(report: Report, files: Sequence[Path], comfyui: Path, *, image_build: bool = False,
                        python: str | None = None, timeout: float = 900.0) -> None:
    users = _collect_node_types(files)
    registry = load_comfyui_registry(comfyui, python=python, timeout=timeout)
    failed_imports = [str(x) for x in registry.get("import_failed", [])]
    if "error" not in registry:
        names = set(registry.get("nodes", []))
        mods = registry.get("custom_modules", [])
        report.add("nodes", "ComfyUI registry", OK,
                   f"loaded from {comfyui}: {len(names)} node types" + (f"; custom node modules: {', '.join(mods)}" if mods else ""))
        source = f"ComfyUI at {comfyui}"
    else:
        pack, why = _pack_node_names(python)
        names = set(COMFYUI_CORE_NODES) | pack
        report.add("nodes", "ComfyUI registry", FAIL if image_build else WARN,
                   f"could not load ComfyUI's node registry from {comfyui}: {registry['error']}; checked this project's "
                   f"pack mappings ({'none: ' + why if why else f'{len(pack)} nodes'}) plus ComfyUI's core node names instead",
                   "run the self-check with the ComfyUI install's Python (e.g. /opt/venv/bin/python) so `import nodes` works")
        source = "this project's pack + ComfyUI core"
    # A pack that fails to import is reported, not failed: it may be one the base image ships
    # (ComfyUI-Manager, say) that this project does not need. Missing node types fail below.
    for msg in failed_imports:
        report.add("nodes", "custom node import", WARN, msg,
                   "install the pack's requirements (pip install -r custom_nodes/<pack>/requirements.txt) and read the traceback above")
    missing = {t: u for t, u in users.items() if t not in names}
    for class_type, where in sorted(missing.items()):
        origin = NODE_SOURCES.get(class_type, "the custom node pack that provides it")
        report.add("nodes", f"ComfyUI: {class_type}", FAIL,
                   f"node type {class_type!r} (used by {_where(where)}) is not registered in {source}",
                   f"install {origin} into {Path(comfyui) / 'custom_nodes'}" + (" (its import failed, see above)" if failed_imports else ""))
    present = sorted(t for t in users if t in names)
    if present and not missing:
        report.add("nodes", "ComfyUI workflows", OK, f"all {len(present)} node types the workflows use are registered")


def check_workflows(report: Report, files: Sequence[Path], models_dir: Path, pipelines: Sequence[str]) -> None:
    """Validate each workflow as the worker would, model files included; skip one that needs a
    pipeline not selected."""
    from ..workflow import NODE_TYPES, WorkflowRunner, WorkflowValidationError  # PIL, numpy

    settings = Settings(models_dir=Path(models_dir))
    lenient = WorkflowRunner(Engines(settings=settings), check_models=False)
    strict = WorkflowRunner(Engines(settings=settings), check_models=True)
    for path in files:
        item = _item_name(path)
        data, err = _load_json(path)
        if err is not None:
            report.add("workflows", item, FAIL, err, f"fix or remove {path}")
            continue
        if not workflow_node_types(data):
            report.add("workflows", item, FAIL, f"{path} is not a ComfyUI workflow (neither UI nor API format)",
                       f"remove {path} from the workflows folder")
            continue
        try:
            plan = lenient.plan(data)
        except WorkflowValidationError as exc:
            report.add("workflows", item, FAIL, f"{path}: {exc}", _workflow_fix(exc))
            continue
        engines = sorted({NODE_TYPES[plan.graph[n]["class_type"]].engine for n in plan.order} - {None})
        needed = sorted({ENGINE_PIPELINE.get(e, "full") for e in engines}, key=PIPELINES.index)
        if any(p not in pipelines for p in needed):
            report.add("workflows", item, SKIP,
                       f"needs the {'/'.join(needed)} pipeline (engines {', '.join(engines)}); selected: {', '.join(pipelines)}")
            continue
        try:
            plan = strict.plan(data)
        except WorkflowValidationError as exc:
            report.add("workflows", item, FAIL, f"{path}: {exc}", _workflow_fix(exc))
            continue
        outputs = ", ".join(f"{nid} {plan.graph[nid]['class_type']}" for nid in plan.outputs)
        report.add("workflows", item, OK,
                   f"valid: {len(plan.order)} nodes to run; outputs {outputs}; engines {', '.join(engines) or 'none'}")


def _workflow_fix(exc: Any) -> str:
    text = json.dumps(getattr(exc, "node_errors", {}) or getattr(exc, "error", {}))
    if "model_path" in text or "'model'" in text or "Florence-2" in text or ".gguf" in text:
        return "download the model it names (`ben2-worker models download <name>`) or fix the model widget"
    return "fix the node and input named above (`ben2-worker workflow validate FILE` prints ComfyUI's error JSON)"


# ----------------------------------------------------------------------------- entry point


def parse_pipelines_option(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"simple,full"`` -> ("simple", "full"); ValueError naming the bad value."""
    if value is None:
        return ("simple",)
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [p.strip().lower() for p in parts if str(p).strip()]
    bad = [p for p in names if p not in PIPELINES]
    if bad or not names:
        raise ValueError(f"pipelines must be a comma-separated subset of {', '.join(PIPELINES)}, got {value!r}")
    return tuple(p for p in PIPELINES if p in names)


def run_selfcheck(opts: SelfcheckOptions) -> Report:
    report = Report(meta={
        "models_dir": str(Path(opts.models_dir).absolute()),
        "pipelines": list(opts.pipelines),
        "require_gpu": opts.require_gpu,
        "image_build": opts.image_build,
        "python": sys.version.split()[0],
    })
    store = ModelStore(Path(opts.models_dir), dict(opts.manifest) if opts.manifest is not None else None, opts.lock_path)
    check_models(report, store, opts.pipelines, image_build=opts.image_build)

    check_runtime(report, opts.pipelines, require_gpu=opts.require_gpu, providers=opts.providers)

    files = workflow_files(opts.workflows)
    report.meta["workflows"] = [str(f) for f in files]
    if opts.workflows and not files:
        report.add("workflows", "(none)", FAIL, f"no *.json workflow found in {', '.join(map(str, opts.workflows))}",
                   "pass --workflows DIR with the workflow files")
    for p in opts.workflows:
        if not Path(p).exists():
            report.add("workflows", str(p), FAIL, f"{p} does not exist", "pass an existing folder or file to --workflows")
    if files:
        check_native_nodes(report, files)
        if opts.comfyui is not None:
            check_comfyui_nodes(report, files, Path(opts.comfyui), image_build=opts.image_build,
                                python=opts.comfyui_python, timeout=opts.comfyui_timeout)
        check_workflows(report, files, store.models_dir, opts.pipelines)
    elif opts.comfyui is not None:
        report.add("nodes", "ComfyUI", SKIP, "no workflows given, so no node types to look up")
    return report
