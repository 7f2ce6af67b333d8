"""Edits fcnx makes to a converted ONNX graph: the in-graph mask output, the chosen
outputs, FP16 weights and the model card in ``metadata_props``."""

from __future__ import annotations

import warnings

import onnx
from onnx import TensorProto, helper

from fcnx.runtime.backends.ort import CARD_KEY
from fcnx.runtime.card import ModelCard

OUTPUT_CHOICES = ("both", "probs", "mask")


def add_mask_output(model: onnx.ModelProto, output_kind: str) -> None:
    """Append ``mask`` (uint8 (N, H, W) class ids) computed from ``probs`` inside the
    graph: ArgMax over classes for softmax, probs > 0.5 for a sigmoid head (ArgMax of
    [1 - p, p]), cast to uint8
    through float (TensorRT-safe). A deployed model then returns 1 byte per pixel."""
    graph = model.graph
    probs = graph.output[0]
    if probs.name != "probs":
        raise ValueError(f"expected the converted graph's output to be 'probs', got {probs.name!r}")
    dims = probs.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims[:3]]
    scores = "probs"
    if output_kind == "sigmoid":
        # [1 - p, p] and the same ArgMax as softmax: 1 exactly where p > 0.5 (a tie at 0.5 takes
        # index 0), with shape inference from attributes only (a Squeeze's axes input is not
        # always seen as a constant by onnx's checker)
        graph.initializer.append(helper.make_tensor("fcnx_one", TensorProto.FLOAT, [], [1.0]))
        graph.node.extend(
            [
                helper.make_node("Sub", ["fcnx_one", "probs"], ["fcnx_background"], name="fcnx_background"),
                helper.make_node(
                    "Concat",
                    ["fcnx_background", "probs"],
                    ["fcnx_two_classes"],
                    name="fcnx_two_classes",
                    axis=3,
                ),
            ]
        )
        scores = "fcnx_two_classes"
    graph.node.append(
        helper.make_node("ArgMax", [scores], ["fcnx_ids"], name="fcnx_argmax", axis=3, keepdims=0)
    )
    # ids -> FLOAT -> UINT8, not INT64 -> UINT8: TensorRT's ONNX parser turns ArgMax into
    # TopK + INT64, and NVIDIA's docs disagree on whether an integer -> UINT8 cast is
    # supported (NvInferRuntimeBase.h: UINT8 converts from FLOAT/HALF only); FLOAT -> UINT8
    # is supported in every reading, and class ids are exact in float32.
    graph.node.extend(
        [
            helper.make_node(
                "Cast", ["fcnx_ids"], ["fcnx_ids_float"], name="fcnx_ids_float", to=TensorProto.FLOAT
            ),
            helper.make_node(
                "Cast", ["fcnx_ids_float"], ["mask"], name="fcnx_mask_uint8", to=TensorProto.UINT8
            ),
        ]
    )
    graph.output.append(helper.make_tensor_value_info("mask", TensorProto.UINT8, shape))


def select_outputs(model: onnx.ModelProto, output: str) -> None:
    """Keep ``probs``, ``mask`` or both as graph outputs (the others stay internal)."""
    if output not in OUTPUT_CHOICES:
        raise ValueError(f"output must be one of {OUTPUT_CHOICES}, got {output!r}")
    keep = ("probs", "mask") if output == "both" else (output,)
    chosen = [o for o in model.graph.output if o.name in keep]
    del model.graph.output[:]
    model.graph.output.extend(chosen)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute, FP32/uint8 I/O kept (what TensorRT's strongly typed
    builder wants). ``Cast`` stays FP32 because onnxconverter-common retypes a Cast's
    output without changing its ``to`` attribute, which onnxruntime rejects."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # One warning per weight below FP16's smallest normal (it is truncated): expected, not actionable.
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        return float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"],
            disable_shape_infer=False,
        )


def set_card(model: onnx.ModelProto, card: ModelCard) -> None:
    for prop in list(model.metadata_props):
        if prop.key == CARD_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = CARD_KEY
    entry.value = card.to_json()


def read_card(model: onnx.ModelProto, origin: str = "model") -> ModelCard | None:
    for prop in model.metadata_props:
        if prop.key == CARD_KEY:
            return ModelCard.from_json(prop.value, origin=f"{origin} metadata")
    return None


def softmax_on_last_axis(model: onnx.ModelProto) -> bool:
    """``Softmax(axis=1) -> Transpose(0, 2, 3, 1)`` becomes ``Transpose -> Softmax(axis=-1)``.

    tf2onnx keeps Keras's channels-last softmax on the NCHW tensor (axis 1) and transposes
    afterwards; onnxruntime's CPU Softmax over a non-last axis transposes internally and
    costs ~10 % of the whole FCN-8s forward pass at 512x512, while over the last axis it
    is ~10x cheaper. Same arithmetic per pixel, so the outputs are unchanged. Returns
    whether the pattern was found."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for i, softmax in enumerate(nodes):
        if softmax.op_type != "Softmax":
            continue
        axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), -1)
        users = consumers.get(softmax.output[0], [])
        if axis != 1 or len(users) != 1 or users[0].op_type != "Transpose":
            continue
        transpose = users[0]
        perm = next(
            (list(helper.get_attribute_value(a)) for a in transpose.attribute if a.name == "perm"), []
        )
        if perm != [0, 2, 3, 1] or any(o.name == softmax.output[0] for o in model.graph.output):
            continue
        moved = softmax.output[0] + "_nhwc"
        new_transpose = helper.make_node(
            "Transpose", [softmax.input[0]], [moved], name=transpose.name, perm=[0, 2, 3, 1]
        )
        new_softmax = helper.make_node("Softmax", [moved], [transpose.output[0]], name=softmax.name, axis=-1)
        rest = [n for n in nodes[i + 1 :] if n is not transpose]
        del model.graph.node[:]
        model.graph.node.extend([*nodes[:i], new_transpose, new_softmax, *rest])
        return True
    return False
