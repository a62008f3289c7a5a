"""bench/gpu.sh on a machine without a GPU: the CPU-only path still writes its one table, and the
table says plainly that no GPU runtime was measured and that the model is a random-weight stand-in.

The GPU branches themselves need an NVIDIA machine (none here); they are the same calls the
worker makes (``Ben2Model(providers="cuda"/"tensorrt")``) or the torch proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.mark.slow
def test_gpu_script_cpu_only_path_writes_a_labelled_table(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "BEN2_WORKER_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), str(tmp_path / "out"), "--tiny", "--budget-s", "200"],
                          env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "gpu-table.md").read_text()
    assert "NO GPU RUNTIME MEASURED" in table
    assert "random weights" in table and "TINY toy size" in table
    assert "| onnxruntime CPU, " in table and "MEASURED on this host's CPU" in table
    assert "| 0.3 MP | decode" in table
    report = json.loads((tmp_path / "out" / "gpu-bench.json").read_text())
    assert report["gpu_measured"] is False and report["facts"]["ort_providers"]
    assert list((tmp_path / "cache").glob("ben2_realistic_*_256_*.onnx"))  # built there, not downloaded
