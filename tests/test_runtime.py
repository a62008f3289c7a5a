"""Thread counts from the container's real CPU quota, and provider selection."""

from __future__ import annotations

import logging
import os

import pytest

from ben2_worker import runtime
from ben2_worker.ben2 import Ben2Model
from ben2_worker.config import Settings


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_caps_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU -> 1 thread, never 0
    assert runtime.available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.available_cpus(tmp_path) == _affinity()
    (tmp_path / "cpu.max").write_text("100000000 100000\n")  # 1000 CPUs of quota: affinity wins
    assert runtime.available_cpus(tmp_path) == _affinity()


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert runtime.available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert runtime.available_cpus(tmp_path) == _affinity()


def test_no_cgroup_files(tmp_path):
    assert runtime.available_cpus(tmp_path / "missing") == _affinity()


def test_thread_override_is_capped(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    assert runtime.thread_count(None) == 2
    assert runtime.thread_count(1) == 1
    assert runtime.thread_count(64) == 2


def test_auto_providers_prefer_gpu_when_present():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.resolve_providers("auto", avail) == avail
    assert runtime.resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_missing_requested_provider_warns_once_and_falls_back(caplog):
    runtime._warned.clear()
    with caplog.at_level(logging.WARNING, logger="ben2_worker.runtime"):
        for _ in range(3):
            got = runtime.resolve_providers("cuda,cpu", ["CPUExecutionProvider"])
            assert got == ["CPUExecutionProvider"]
    warnings = [r for r in caplog.records if "cuda" in r.getMessage()]
    assert len(warnings) == 1 and "not available" in warnings[0].getMessage()


def test_unknown_provider_name_is_reported(caplog):
    runtime._warned.clear()
    with caplog.at_level(logging.WARNING, logger="ben2_worker.runtime"):
        assert runtime.resolve_providers("quantum", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert any("unknown execution provider 'quantum'" in r.getMessage() for r in caplog.records)


def test_one_cpu_container_session_runs(ben2_path, monkeypatch):
    # A 1-CPU quota: explicit single-thread pools, no affinity pinning, and inference works.
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    model = Ben2Model(ben2_path, providers="cuda,cpu")
    import numpy as np

    out = model.predict(np.zeros((1, 3, 1024, 1024), np.float32))
    assert out.shape == (1, 1024, 1024)
    assert runtime.session_options().intra_op_num_threads == 1


def test_settings_from_env(tmp_path):
    s = Settings.from_env({"BEN2_WORKER_MODELS": str(tmp_path), "BEN2_WORKER_MAX_PIXELS": "1_000_000", "BEN2_WORKER_THREADS": "3"})
    assert s.models_dir == tmp_path and s.max_pixels == 1_000_000 and s.threads == 3
    assert Settings.from_env({}).models_dir.name == "models"
    with pytest.raises(ValueError, match="BEN2_WORKER_MAX_PIXELS"):
        Settings.from_env({"BEN2_WORKER_MAX_PIXELS": "lots"})
    with pytest.raises(ValueError, match="BEN2_WORKER_INPUT_SCALING"):
        Settings.from_env({"BEN2_WORKER_INPUT_SCALING": "zscore"})


# ------------------------------------------------------------------ session options and caches


def test_session_options_levels_arena_and_executor():
    import onnxruntime as ort

    opts = runtime.session_options(1, graph_level="basic", cpu_arena=False)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.enable_cpu_mem_arena is False and opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    par = runtime.session_options(1, inter_op_threads=2)
    assert par.execution_mode == ort.ExecutionMode.ORT_PARALLEL and par.inter_op_num_threads == 2
    with pytest.raises(ValueError, match="graph optimisation level must be one of"):
        runtime.session_options(1, graph_level="max")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_optimised_graph_is_cached_and_the_next_load_skips_the_optimiser(ben2_path, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    first = Ben2Model(ben2_path, threads=1, cache=tmp_path)
    assert not first.load.optimized_from_cache and first.load.source == ben2_path
    cached = [n for n in _files(tmp_path) if n.endswith(".optimized.onnx")]
    assert len(cached) == 1 and not [n for n in _files(tmp_path) if ".part" in n]  # moved into place whole
    second = Ben2Model(ben2_path, threads=1, cache=tmp_path)
    assert second.load.optimized_from_cache and second.load.source.name == cached[0]
    assert np.array_equal(first.predict(x), second.predict(x))
    # Another model's bytes (even under the same name and folder) are another key.
    other = tmp_path / "other" / "BEN2_Base.onnx"
    from standin_models import build_ben2_standin

    build_ben2_standin(other, output_float16=False)
    third = Ben2Model(other, threads=1, cache=tmp_path)
    assert not third.load.optimized_from_cache
    assert len([n for n in _files(tmp_path) if n.endswith(".optimized.onnx")]) == 2


def test_bad_cache_entry_is_replaced_and_an_unwritable_cache_never_stops_a_start(ben2_path, tmp_path, caplog):
    Ben2Model(ben2_path, threads=1, cache=tmp_path)
    (entry,) = [p for p in tmp_path.iterdir() if p.name.endswith(".optimized.onnx")]
    entry.write_bytes(b"half a graph")
    with caplog.at_level(logging.WARNING, logger="ben2_worker.runtime"):
        model = Ben2Model(ben2_path, threads=1, cache=tmp_path)
    assert not model.load.optimized_from_cache and any("did not load" in r.getMessage() for r in caplog.records)
    assert Ben2Model(ben2_path, threads=1, cache=tmp_path).load.optimized_from_cache  # rebuilt, valid again
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_text("x")
    assert Ben2Model(ben2_path, threads=1, cache=not_a_folder).info.input_name == "input.1"
    assert Ben2Model(ben2_path, threads=1, cache=False).load.optimized_from_cache is False


def test_model_digest_is_remembered_by_stat(tmp_path):
    import hashlib

    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    cache.mkdir()
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert runtime.model_digest(model, cache) == sha
    (stamp,) = cache.iterdir()
    stamp.write_text('{"sha256": "remembered"}')  # proves the second call reads the stamp, not the file
    assert runtime.model_digest(model, cache) == "remembered"
    model.write_bytes(b"other weights")  # new size and mtime: hashed again
    assert runtime.model_digest(model, cache) == hashlib.sha256(b"other weights").hexdigest()
    assert runtime.model_digest(model, None) == hashlib.sha256(b"other weights").hexdigest()


def _matmul_model(path):
    """A float model with a real MatMul (what dynamic quantisation rewrites)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).normal(0, 0.1, (64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w


def test_int8_variant_is_built_once_quantised_and_close(tmp_path):
    import numpy as np
    import onnx

    path, w = _matmul_model(tmp_path / "mm.onnx")
    cache = tmp_path / "cache"
    cache.mkdir()
    x = np.random.default_rng(2).normal(0, 1, (4, 64)).astype(np.float32)
    session, load = runtime.create_session(path, providers=["CPUExecutionProvider"], threads=1, cache_dir=cache,
                                           variant="int8")
    assert load.variant == "int8" and load.source.name.endswith(".int8.onnx")
    ops = {n.op_type for n in onnx.load(str(load.source)).graph.node}
    assert "MatMul" not in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops
    y = session.run(None, {"x": x})[0]
    assert np.abs(y - x @ w).max() < 0.05 * np.abs(x @ w).max()  # int8 error: small, not zero
    built = load.source.stat().st_mtime_ns
    _, again = runtime.create_session(path, providers=["CPUExecutionProvider"], threads=1, cache_dir=cache,
                                      variant="int8")
    assert again.optimized_from_cache and load.source.stat().st_mtime_ns == built  # not rebuilt
    with pytest.raises(RuntimeError, match="needs a writable cache folder"):
        runtime.create_session(path, providers=["CPUExecutionProvider"], cache_dir=None, variant="int8")


def test_ben2_int8_variant_loads_and_unknown_variant_is_refused(ben2_path, tmp_path):
    import numpy as np

    model = Ben2Model(ben2_path, threads=1, cache=tmp_path, variant="int8")
    assert model.load.variant == "int8"
    assert model.predict(np.zeros((1, 3, 1024, 1024), np.float32)).shape == (1, 1024, 1024)
    with pytest.raises(ValueError, match="BEN2 variant must be one of fp32, int8"):
        Ben2Model(ben2_path, variant="int4")


def test_the_engine_factory_builds_ben2_with_the_session_settings(models_dir, tmp_path):
    """BEN2_WORKER_ORT_CACHE / _GRAPH_LEVEL / _CPU_ARENA reach the session the factory builds."""
    from ben2_worker.config import SessionSettings
    from ben2_worker.engines import load_cutout_engine

    session = SessionSettings(cache=tmp_path / "cache", graph_level="basic", cpu_arena=False)
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1, session=session)
    first = load_cutout_engine(settings).model
    assert not first.load.optimized_from_cache
    (entry,) = [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".optimized.onnx")]
    second = load_cutout_engine(settings).model
    assert second.load.optimized_from_cache and second.load.source.name == entry
    uncached = load_cutout_engine(Settings(models_dir=models_dir, allow_custom_models=True, threads=1,
                                           session=SessionSettings(cache=False))).model
    assert not uncached.load.optimized_from_cache and uncached.load.source == first.path
