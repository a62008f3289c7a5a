"""A short soak (bench/soak.py): jobs of both formats and both pipelines, 0.1 to 12 MP, through one
job processor over the worker's engine factory and full stand-in models; every answer the
expected one, and no file descriptor or thread left behind after the warm-up. The 1,000-job run
with its memory curve is `python bench/soak.py` (docs/reliability.md)."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402  bench/soak.py


@pytest.mark.slow
def test_60_jobs_leak_no_fds_or_threads(tmp_path):
    worker = soak.build_worker(tmp_path / "models")
    result = soak.soak(worker, 60, warmup=20, big_every=25, log_every=0)
    assert result["failures"] == 0, result["failure_examples"]
    assert {"simple", "comfy", "simple-full", "comfy-full", "bad"} <= set(result["kinds"])
    assert result["fds"]["end"] <= result["fds"]["after_warmup"], result["fds"]
    assert result["os_threads"]["end"] <= result["os_threads"]["after_warmup"], result["os_threads"]
    assert result["python_threads"]["end"] <= result["python_threads"]["after_warmup"]
