"""ONNX Runtime set-up shared by every engine: how many threads the container may really
use, which execution providers to ask for, and how a session is created fast.

Why threads: onnxruntime sizes its pools from the host's core count and pins threads to cores;
in a 1-CPU container that oversubscribes the quota and, on some hosts, crashes with
``pthread_setaffinity_np`` errors. Setting the thread counts explicitly avoids both.

Why an optimised-model cache: for a BEN2-sized graph (~90 M parameters) onnxruntime's graph
optimiser is a large share of session creation, and it does the same work at every start. The
first start saves the optimised graph (``SessionOptions.optimized_model_filepath``) under a key
of model sha256, onnxruntime version, providers, optimisation level and CPU features; later
starts load that file with the optimiser off. docs/performance.md has the measurements.

Why an int8 variant: dynamic int8 quantisation of BEN2's MatMuls is an opt-in speed-up for CPU
workers. Its matte differs from fp32's by an amount only the real weights can tell
(``bench/compare_int8.py``), so it is never the default."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import GRAPH_LEVELS, MODEL_VARIANTS

log = logging.getLogger(__name__)

#: Short names accepted in configuration, in the order ``auto`` prefers them.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")

_warned: set[str] = set()


def _cgroup_cpu_limit(root: Path) -> float | None:
    """CPU quota in cores from cgroup v2 ``cpu.max`` or v1 ``cfs_quota/period``; None if unlimited."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: the smaller of its affinity mask and the cgroup quota, at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(cgroup_root)
    limit = affinity if quota is None else min(affinity, math.floor(quota) or 1)
    return max(1, limit)


def thread_count(override: int | None = None) -> int:
    """Intra-op threads for onnxruntime: an explicit override (capped at the CPUs we have), else all CPUs we may use."""
    cpus = available_cpus()
    return max(1, min(override, cpus)) if override else cpus


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def resolve_providers(requested: str | Iterable[str], available: Iterable[str] | None = None) -> list[str]:
    """Turn ``auto`` or ``"cuda,cpu"`` into onnxruntime provider names that exist here.

    A provider asked for by name but missing is logged once and skipped; CPU is always last,
    so a session can always be built."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    available = list(available)
    if isinstance(requested, str):
        names = [p.strip().lower() for p in requested.split(",") if p.strip()]
    else:
        names = [p.strip().lower() for p in requested]
    explicit = names and names != ["auto"]
    if not explicit:
        names = list(AUTO_ORDER)
    chosen: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name, name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        elif explicit:
            known = ", ".join(sorted(PROVIDER_ALIASES))
            if name not in PROVIDER_ALIASES and full not in PROVIDER_ALIASES.values():
                _warn_once(f"unknown execution provider {name!r} (known: {known}); ignoring it")
            else:
                _warn_once(
                    f"execution provider {name!r} ({full}) was requested but is not available "
                    f"(available: {', '.join(available)}); falling back"
                )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen




def _graph_level(name: str):
    import onnxruntime

    levels = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if name not in levels:
        raise ValueError(f"graph optimisation level must be one of {', '.join(GRAPH_LEVELS)}, got {name!r}")
    return levels[name]


def session_options(
    threads: int | None = None,
    *,
    inter_op_threads: int = 1,
    graph_level: str = "all",
    cpu_arena: bool = True,
):
    """Session options with explicit thread counts (see module docstring).

    ``inter_op_threads`` > 1 switches to the parallel executor (independent branches side by
    side); BEN2's graph is one chain, so 1 measured best. ``cpu_arena`` off frees activations
    after each run instead of keeping them pooled (lower idle RSS, slower runs)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = thread_count(threads)
    opts.inter_op_num_threads = max(1, inter_op_threads)
    opts.execution_mode = (
        onnxruntime.ExecutionMode.ORT_PARALLEL if inter_op_threads > 1 else onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    )
    opts.graph_optimization_level = _graph_level(graph_level)
    opts.enable_cpu_mem_arena = cpu_arena
    # Spinning threads burn a serverless CPU quota between requests for nothing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


# ----------------------------------------------------------------- cache of derived model files


def usable_cache_dir(folder: Path) -> Path | None:
    """``folder``, created if needed, when this process can write there; else None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def default_cache_dir(model_path: Path) -> Path | None:
    """Where derived files (optimised graphs, int8 variants) of a model go: a ``.ort-cache``
    folder beside the model when it is writable (a network volume then shares it between
    workers), else ``~/.cache/ben2-worker/ort``; None when neither can be written."""
    for candidate in (model_path.parent / ".ort-cache", Path.home() / ".cache" / "ben2-worker" / "ort"):
        if usable_cache_dir(candidate) is not None:
            return candidate
    return None


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def model_digest(path: Path, cache_dir: Path | None) -> str:
    """sha256 of a model file, remembered in ``cache_dir`` under its path, size and mtime so a
    start does not re-hash hundreds of megabytes (the same trust the model store's stamps give)."""
    st = path.stat()
    stamp_key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    stamp = cache_dir / f"digest-{stamp_key}.json" if cache_dir else None
    if stamp is not None:
        try:
            return json.loads(stamp.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if stamp is not None:
        try:
            _atomic_write_text(stamp, json.dumps({"path": str(path.resolve()), "sha256": sha}))
        except OSError:
            pass
    return sha


def _cpu_fingerprint() -> str:
    """What an optimised CPU graph depends on: layout transforms follow the SIMD width."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{flags or platform.processor()}"


def optimized_cache_key(model_sha: str, providers: Iterable[str], graph_level: str) -> str:
    """Key of an optimised graph: the model's bytes, the optimiser's version, where it runs."""
    import onnxruntime

    parts = [model_sha, onnxruntime.__version__, ",".join(providers), graph_level, _cpu_fingerprint()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def quantize_int8(source: Path, dest: Path) -> Path:
    """Dynamic int8 quantisation (weights int8, activations quantised per run) of a float model,
    written atomically. Needs the ``onnx`` package, which the slim install does not carry: build
    the variant where it is installed (an image build step) or install it."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise RuntimeError(
            f"building the int8 variant of {source.name} needs the 'onnx' package ({exc}); "
            "install it, or build the variant once where it is installed and copy it into the cache"
        ) from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".onnx", dir=dest.parent)
    os.close(fd)
    try:
        # MatMul only: ConvInteger is slower than float Conv on onnxruntime's CPU kernels.
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul"])
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


@dataclass(frozen=True)
class SessionLoad:
    """How a session came to be, for logs and benchmarks."""

    seconds: float  #: wall time of session creation (including a first-start optimise + save)
    source: Path  #: the file onnxruntime was given
    optimized_from_cache: bool  #: True: the optimiser was skipped
    variant: str  #: fp32 or int8


def variant_path(model_path: Path, variant: str, cache_dir: Path | None, model_sha: str | None = None) -> Path:
    """The file a variant is built from: the model itself for fp32, a cached int8 file for int8."""
    if variant not in MODEL_VARIANTS:
        raise ValueError(f"model variant must be one of {', '.join(MODEL_VARIANTS)}, got {variant!r}")
    if variant == "fp32":
        return model_path
    if cache_dir is None:
        raise RuntimeError(f"the int8 variant of {model_path} needs a writable cache folder, and none was found")
    import onnxruntime

    sha = model_sha or model_digest(model_path, cache_dir)
    dest = cache_dir / f"{model_path.stem}.{sha[:16]}.ort{onnxruntime.__version__}.int8.onnx"
    if not dest.is_file():
        log.info("building the int8 variant of %s (once) -> %s", model_path, dest)
        quantize_int8(model_path, dest)
    return dest


def create_session(
    model_path: Path,
    *,
    providers: list[str],
    threads: int | None = None,
    cache_dir: Path | None = None,
    variant: str = "fp32",
    graph_level: str = "all",
    cpu_arena: bool = True,
    inter_op_threads: int = 1,
):
    """An InferenceSession for ``model_path``, from the optimised-graph cache when it holds one.

    Without a cache this is a plain session. With one: a hit loads the saved graph with the
    optimiser off; a miss optimises as usual while onnxruntime saves the result to a temporary
    name, moved into place only once the session exists (no half-written cache entry). A
    cached file that fails to load is removed and the source is used. TensorRT builds its own
    engines, so its sessions are never cached here. Returns ``(session, SessionLoad)``."""
    import onnxruntime

    t0 = time.perf_counter()
    model_path = Path(model_path)
    sha = model_digest(model_path, cache_dir) if cache_dir is not None else None
    source = variant_path(model_path, variant, cache_dir, sha)

    def build(path: Path, level: str, save_to: Path | None = None):
        opts = session_options(threads, inter_op_threads=inter_op_threads, graph_level=level, cpu_arena=cpu_arena)
        if save_to is not None:
            opts.optimized_model_filepath = str(save_to)
        return onnxruntime.InferenceSession(str(path), sess_options=opts, providers=providers)

    cacheable = cache_dir is not None and graph_level != "disable" and "TensorrtExecutionProvider" not in providers
    if not cacheable:
        session = build(source, graph_level)
        return session, SessionLoad(time.perf_counter() - t0, source, False, variant)

    key = optimized_cache_key(f"{sha}:{variant}", providers, graph_level)
    cached = cache_dir / f"{model_path.stem}.{variant}.{key}.optimized.onnx"
    if cached.is_file():
        try:
            session = build(cached, "disable")
            return session, SessionLoad(time.perf_counter() - t0, cached, True, variant)
        except Exception as exc:  # noqa: BLE001 - a bad cache entry must never stop a start
            log.warning("optimised-model cache entry %s did not load (%s); rebuilding it", cached, exc)
            cached.unlink(missing_ok=True)
    tmp = cache_dir / f".{cached.name}.{os.getpid()}.part.onnx"
    try:
        session = build(source, graph_level, save_to=tmp)
        os.replace(tmp, cached)
    except Exception as exc:  # noqa: BLE001 - a full or read-only cache must never stop a start
        log.warning("could not write the optimised-model cache %s (%s); loading without it", cached, exc)
        session = build(source, graph_level)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return session, SessionLoad(time.perf_counter() - t0, source, False, variant)


# ----------------------------------------------------------------- GPU workers never fall back silently


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")


def gpu_required(requested: str | Iterable[str], device: str = "auto") -> bool:
    """Must this worker run on a GPU? Yes when the image was built for one (``device`` ``gpu``,
    ``BEN2_WORKER_DEVICE``) or the providers setting names a GPU provider without also naming
    ``cpu`` (naming ``cpu`` too is consent to fall back)."""
    if device == "gpu":
        return True
    names = [p.strip().lower() for p in (requested.split(",") if isinstance(requested, str) else requested) if p.strip()]
    full = {PROVIDER_ALIASES.get(n, n) for n in names}
    return bool(full & set(GPU_PROVIDERS)) and "CPUExecutionProvider" not in full


def require_gpu_providers(requested: str | Iterable[str], device: str, active: Iterable[str], *, what: str = "BEN2") -> bool:
    """Refuse to serve at CPU speed on a worker that must use a GPU; True when a GPU provider is active.

    ``active`` is what the built session really uses (``session.get_providers()``): onnxruntime
    silently drops a provider whose libraries fail to load, so asking for one proves nothing.
    Raises :class:`~ben2_worker.errors.GpuUnavailableError` naming the most likely cause."""
    from .errors import GpuUnavailableError

    active = list(active)
    on_gpu = any(p in GPU_PROVIDERS for p in active)
    if on_gpu or not gpu_required(requested, device):
        return on_gpu
    why = "BEN2_WORKER_DEVICE=gpu (the image is built for a GPU)" if device == "gpu" else f"BEN2_WORKER_PROVIDERS={requested}"
    raise GpuUnavailableError(
        f"{what} would run on {', '.join(active) or 'no provider'} but this worker must use a GPU ({why}): "
        f"{gpu_unavailable_cause()}. Fix the cause, or set BEN2_WORKER_DEVICE=auto (and no GPU-only "
        "BEN2_WORKER_PROVIDERS) to run on the CPU on purpose."
    )


def gpu_unavailable_cause(available: Iterable[str] | None = None, dev: Path = Path("/dev")) -> str:
    """Why onnxruntime cannot use a GPU here, as far as can be told without one."""
    import ctypes

    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    available = list(available)
    if not any(p in GPU_PROVIDERS for p in available):
        return (f"the installed onnxruntime has no GPU provider (available: {', '.join(available)}); "
                "install onnxruntime-gpu instead of onnxruntime")
    if not any(dev.glob("nvidia[0-9]*")):
        return f"no NVIDIA device is visible ({dev}/nvidia0 absent): the container has no GPU attached"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "the NVIDIA driver library libcuda.so.1 cannot be loaded (no driver mounted into the container)"
    return ("the CUDA provider failed to load: a CUDA 12 / cuDNN 9 library is missing or the driver is too old "
            "(onnxruntime's own error above names the file)")


def warm_up(run, what: str = "BEN2") -> float:
    """One inference at start on a GPU provider (kernels, cuDNN autotuning, TensorRT engines),
    so the first job neither discovers a broken provider nor pays for it. Returns seconds."""
    import time

    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    log.info("%s warm-up inference took %.2f s", what, seconds)
    return seconds
