"""Stand-in models with the real models' interfaces, built offline by the tests and the benchmark.

A stand-in is a TEST FIXTURE: the product never falls back to one. Its output is a known
function of its input, so tests can say exactly where a cut-out must be opaque or clear.

BEN2 stand-in (mirrors the published ``BEN2_Base.onnx`` as measured by third parties: opset 15,
input ``input.1`` float32 [1,3,1024,1024], output ``17728`` float16 [1,1,1024,1024], already a
sigmoid): matte = sigmoid(40 * (R - 0.5)) where R is the red channel of the model input, so a
red subject (R = 255) on a dark background is opaque and everything with R < 128 is clear.

Usage: ``python tests/standin_models.py DIR`` writes ``DIR/ben2_onnx/BEN2_Base.onnx``.
"""

from __future__ import annotations

import sys
from pathlib import Path

BEN2_INPUT = "input.1"
BEN2_OUTPUT = "17728"
STEEPNESS = 40.0


def build_ben2_standin(
    path: str | Path, *, dynamic_batch: bool = False, output_float16: bool = True, size: int = 1024
) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch = "batch" if dynamic_batch else 1
    out_type = TensorProto.FLOAT16 if output_float16 else TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([1], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(STEEPNESS, np.float32), "steepness"),
    ]
    nodes = [
        helper.make_node("Slice", [BEN2_INPUT, "starts", "ends", "axes"], ["red"]),
        helper.make_node("Sub", ["red", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "steepness"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["matte"]),
        helper.make_node("Cast", ["matte"], [BEN2_OUTPUT], to=out_type),
    ]
    graph = helper.make_graph(
        nodes,
        "ben2_standin",
        [helper.make_tensor_value_info(BEN2_INPUT, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(BEN2_OUTPUT, out_type, [batch, 1, size, size])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="ben2-worker-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def standin_matte(rgb) -> "np.ndarray":  # noqa: F821
    """What the stand-in answers for an image, in 0..1 (before the engine's normalisation)."""
    import numpy as np

    r = rgb[..., 0].astype(np.float32) / 255.0
    return 1.0 / (1.0 + np.exp(-STEEPNESS * (r - 0.5)))


def build_models_dir(root: str | Path, **kwargs) -> Path:
    """A models folder in the product's layout holding the BEN2 stand-in."""
    root = Path(root)
    build_ben2_standin(root / "ben2_onnx" / "BEN2_Base.onnx", **kwargs)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/standin_models.py MODELS_DIR")
    out = build_models_dir(sys.argv[1])
    print(f"wrote BEN2 stand-in (test fixture, not a real model) to {out / 'ben2_onnx' / 'BEN2_Base.onnx'}")
