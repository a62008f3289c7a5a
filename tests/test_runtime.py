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
