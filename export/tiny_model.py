"""The tiny threshold model: a real fcnx ONNX file of a few hundred bytes with a known answer.

``image`` uint8 (N, H, W, 1) -> ``probs`` float32 (N, H, W, 2) = softmax([-d, d]) with
d = (pixel - 127.5) / 16, and ``mask`` uint8 (N, H, W) = pixel > 127, computed in the graph
like every fcnx export (uint8 in, probabilities and class ids out, the model card in its
metadata). Any spatial size. It ships in ``runtime/data/threshold.onnx`` so runtime tests,
the lean-install check and the wheel test run real onnxruntime sessions without
TensorFlow and can assert exact masks. IR version, opset, producer and card are pinned,
so the bytes depend on nothing installed: tests/export/test_tiny_model.py regenerates the
file and checks the committed one is identical.

    python -m fcnx.export.tiny_model runtime/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from fcnx.runtime.atomic import atomic_write_bytes
from fcnx.runtime.card import ModelCard, default_palette

from .onnx_graph import set_card

IR_VERSION = 8
OPSET = 17
FILENAME = "threshold.onnx"
CENTER = 127.5  # pixels above it are class 1
SCALE = 16.0  # logit slope: probs go from ~0.5 at the threshold to ~1 a few dozen levels away

CARD = ModelCard(
    architecture="threshold",
    classes=("background", "foreground"),
    palette=default_palette(2),
    input_channels=1,
    width="tiny",
    export={"format": "onnx", "generator": "fcnx.export.tiny_model", "outputs": ["probs", "mask"]},
)


def threshold_probs(images: np.ndarray) -> np.ndarray:
    """What the model computes for uint8 (..., 1) images: float32 (..., 2) probabilities."""
    d = (images.astype(np.float32) - np.float32(CENTER)) / np.float32(SCALE)
    logits = np.concatenate([-d, d], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def tiny_model() -> onnx.ModelProto:
    constants = [
        helper.make_tensor("center", TensorProto.FLOAT, [], [CENTER]),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [SCALE]),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Sub", ["x", "center"], ["centered"], name="sub"),
        helper.make_node("Div", ["centered", "scale"], ["d"], name="div"),
        helper.make_node("Neg", ["d"], ["minus_d"], name="neg"),
        helper.make_node("Concat", ["minus_d", "d"], ["logits"], axis=-1, name="logits"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("ArgMax", ["probs"], ["ids"], axis=-1, keepdims=0, name="argmax"),
        helper.make_node(
            "Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT, name="ids_float"
        ),  # as fcnx exports
        helper.make_node("Cast", ["ids_float"], ["mask"], to=TensorProto.UINT8, name="mask"),
    ]
    graph = helper.make_graph(
        nodes,
        "threshold",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 1])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", "H", "W", 2]),
            helper.make_tensor_value_info("mask", TensorProto.UINT8, ["N", "H", "W"]),
        ],
        initializer=constants,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="fcnx"
    )
    set_card(model, CARD)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_tiny_model(folder: str | Path) -> Path:
    path = Path(folder) / FILENAME
    atomic_write_bytes(path, tiny_model().SerializeToString())
    return path


if __name__ == "__main__":
    print(write_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "runtime/data"))
