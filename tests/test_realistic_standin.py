"""The realistic BEN2 stand-in (bench/realistic_standin.py, a benchmark fixture): BEN2's I/O
contract, ~90 M parameters at full size, and the product's loading code runs it. Slow (torch
export), so never in the default suite; the benchmarks build the full-size file themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

pytest.importorskip("torch")
pytest.importorskip("onnx")

pytestmark = pytest.mark.slow


def test_full_size_network_is_ben2_sized():
    import realistic_standin

    count = realistic_standin.parameter_count(realistic_standin.build_network())
    assert 85e6 < count < 100e6  # BEN2: 94.6 M


@pytest.mark.parametrize("dynamic", [False, True])
def test_toy_build_has_ben2s_contract_and_runs_through_the_engine(tmp_path, monkeypatch, dynamic):
    import onnxruntime as ort

    import realistic_standin
    from ben2_worker.ben2 import Ben2Model
    from ben2_worker.cutout import CutoutEngine

    monkeypatch.setenv("BEN2_WORKER_BENCH_CACHE", str(tmp_path))
    path = realistic_standin.ensure_standin(size=256, depths=(1, 1, 1, 1), width=16, dynamic_batch=dynamic, quiet=True)
    assert path.parent == tmp_path and path.name.startswith("ben2_realistic_")
    again = realistic_standin.ensure_standin(size=256, depths=(1, 1, 1, 1), width=16, dynamic_batch=dynamic, quiet=True)
    assert again == path  # cached: not rebuilt
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert inp.name == "input.1" and inp.type == "tensor(float)"
    assert inp.shape == (["batch", 3, 256, 256] if dynamic else [1, 3, 256, 256])
    assert out.type == ("tensor(float)" if dynamic else "tensor(float16)") and out.shape[1:] == [1, 256, 256]
    model = Ben2Model(path, threads=1, cache=tmp_path / "ort")
    assert model.info.batch == (None if dynamic else 1)
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    result = CutoutEngine(model).cut_out([rgb, rgb])
    assert [r.alpha.shape for r in result] == [(300, 400)] * 2
    raw = model.predict(np.random.default_rng(1).random((2, 3, 256, 256), dtype=np.float32))
    assert raw.shape == (2, 256, 256) and 0.0 <= raw.min() and raw.max() <= 1.0  # a sigmoid
