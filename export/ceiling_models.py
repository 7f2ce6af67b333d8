"""The one-node MatMul models fcnx.runtime.bench.ceiling times to measure a machine's peak.

The runtime may not import onnx, so the models ship pre-serialized in
``runtime/data/`` (``matmul_fp32.onnx``, ``matmul_fp16.onnx``); this writes them.
Dimensions are symbolic (A ["M", "K"] x B ["K", "N"] -> C ["M", "N"]), so one file
serves every size. IR version, opset and producer are pinned, so the bytes depend on
nothing installed: tests/export/test_ceiling_models.py regenerates them and checks the
committed files are identical.

    python -m fcnx.export.ceiling_models runtime/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from fcnx.runtime.atomic import atomic_write_bytes

IR_VERSION = 8  # onnxruntime >= 1.10 reads it
OPSET = 17
PRECISIONS = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}


def ceiling_model(precision: str) -> onnx.ModelProto:
    """C = A @ B in ``precision`` ("fp32" or "fp16"), all dimensions symbolic."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"], name="matmul")],
        f"matmul_{precision}",
        [
            helper.make_tensor_value_info("A", dtype, ["M", "K"]),
            helper.make_tensor_value_info("B", dtype, ["K", "N"]),
        ],
        [helper.make_tensor_value_info("C", dtype, ["M", "N"])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="fcnx"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def write_ceiling_models(folder: str | Path) -> list[Path]:
    """Write ``matmul_fp32.onnx`` and ``matmul_fp16.onnx`` into ``folder``; returns their paths."""
    folder = Path(folder)
    paths = []
    for precision in PRECISIONS:
        path = folder / f"matmul_{precision}.onnx"
        atomic_write_bytes(path, ceiling_model(precision).SerializeToString())
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_ceiling_models(sys.argv[1] if len(sys.argv) > 1 else "runtime/data"):
        print(written)
