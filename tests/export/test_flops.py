from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcnx.export.flops import FlopCountError, count_flops
from fcnx.export.onnx_export import OnnxExportConfig, export_onnx
from fcnx.export.onnx_graph import read_card

MULTIPLY_ADD_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # 2 FLOPs per multiply-add, bias adds included


def _tiny_graph(height: int | str = 8, width: int | str = 8) -> onnx.ModelProto:
    """x (N, 3, 8, 8) -> Conv 3x3 stride 2 + bias -> Relu -> ConvTranspose 2x2 stride 2, group 2 -> MatMul (8, 5)."""

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ones(shape, np.float32), name)

    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "w2"], ["t1"], kernel_shape=[2, 2], strides=[2, 2], group=2),
        helper.make_node("MatMul", ["t1", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("w2", 4, 1, 2, 2), weight("m", 8, 5)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_count_of_conv_relu_conv_transpose_matmul() -> None:
    conv = 2 * (1 * 4 * 4 * 4) * (3 * 3 * 3) + 1 * 4 * 4 * 4  # out (1,4,4,4), Cin*kh*kw = 27, + bias adds
    relu = 1 * 4 * 4 * 4
    transpose = 2 * (1 * 4 * 4 * 4) * (1 * 2 * 2)  # every input pixel x (Cout/group = 1) x 2x2 kernel
    matmul = 2 * (1 * 2 * 8 * 5) * 8  # out (1,2,8,5), K = 8
    count = count_flops(_tiny_graph())
    assert count.by_op == {"Conv": conv, "MatMul": matmul, "ConvTranspose": transpose, "Relu": relu}
    assert count.total == conv + relu + transpose + matmul == 5376
    assert count.input_shape == {"x": (1, 3, 8, 8)} and count.batch == 1 and count.uncounted == ()
    assert sum(count.by_op.get(op, 0) for op in MULTIPLY_ADD_OPS) == conv + transpose + matmul

    batch3 = count_flops(_tiny_graph(), {"x": [3, 3, 8, 8]})
    assert batch3.total == 3 * 5376 and batch3.per_image == 5376


def test_unknown_dimension_and_wrong_shapes_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.onnx"
    onnx.save_model(_tiny_graph("H", "W"), str(path))
    with pytest.raises(
        FlopCountError, match=r"dynamic.onnx: input 'x' dimension 2 \(H\) is dynamic.*input_shape"
    ):
        count_flops(path)
    assert count_flops(path, {"x": [1, 3, 8, 8]}).total == 5376
    with pytest.raises(
        FlopCountError, match=r"input 'x' has shape \['\?', 3, '\?', '\?'\], input_shape gives \[1, 1, 8, 8\]"
    ):
        count_flops(path, {"x": [1, 1, 8, 8]})
    with pytest.raises(FlopCountError, match="names \\['image'\\], but the graph's inputs are \\['x'\\]"):
        count_flops(path, {"image": [1, 3, 8, 8]})


def test_slim_fcn8s_at_512_is_40_7_gflop_per_image_and_the_card_says_so(tmp_path: Path) -> None:
    from fcnx.train.config import ModelConfig
    from fcnx.train.models import build_fcn

    keras_file = tmp_path / "fcn8s.keras"
    build_fcn(ModelConfig(arch="fcn8s", width="slim", in_channels=1, num_classes=2)).save(keras_file)
    out = tmp_path / "fcn8s.onnx"
    export_onnx(OnnxExportConfig(model=str(keras_file), out=str(out), size="512x512", parity_images=1))

    count = count_flops(out, {"image": [1, 512, 512, 1]})
    assert count.gflops_per_image == pytest.approx(40.7, rel=0.005)
    # 40.7 is the convolutions' and transposed convolutions' multiply-adds; the rest is ~0.1 %.
    assert sum(count.by_op.get(op, 0) for op in MULTIPLY_ADD_OPS) / 1e9 == pytest.approx(40.7, rel=0.001)
    assert set(count.by_op) <= {"Conv", "ConvTranspose", "Relu", "MaxPool", "Add", "Mul", "Softmax"}
    card = read_card(onnx.load(str(out)))
    assert card is not None
    assert card.export["gflops_per_image"] == round(count.gflops_per_image, 3)
    assert card.export["gflops_size"] == [512, 512]


def test_export_writes_gflops_into_the_card(tiny_onnx: Path, tiny_onnx_dynamic: Path) -> None:
    card = read_card(onnx.load(str(tiny_onnx)))
    assert card is not None and card.export["gflops_size"] == [64, 64]
    assert card.export["gflops_per_image"] == round(count_flops(tiny_onnx).gflops_per_image, 3) > 0
    json.dumps(card.export)  # stays plain JSON

    dynamic = read_card(onnx.load(str(tiny_onnx_dynamic)))  # any size: counted at the card's 64x64
    assert dynamic is not None and dynamic.export["gflops_size"] == [64, 64]
    assert dynamic.export["gflops_per_image"] == card.export["gflops_per_image"]
