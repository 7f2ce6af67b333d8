"""FLOPs of an ONNX graph, counted from its shapes, so speeds can be quoted as a fraction
of what the machine could do.

Convention (one multiply-add = 2 FLOPs):

- ``Conv``: 2 * N * Cout * Hout * Wout * (Cin / group) * kh * kw (from the inferred output
  shape and the weight's shape, so pads, strides, dilations, auto_pad and group are already
  in them), plus N * Cout * Hout * Wout for a bias.
- ``ConvTranspose``: 2 * N * Cin * Hin * Win * (Cout / group) * kh * kw (every input pixel
  scatters one kernel per output channel; output_shape / output_padding only crop), plus
  one add per output element for a bias.
- ``MatMul``: 2 * M * N * K per (broadcast) batch; ``Gemm``: 2 * M * N * K, plus M * N for C.
- Elementwise, per output element: 1 for Add, Sub, Mul, Div, Relu, Max, Min and the other
  one-step ops in ``PER_ELEMENT``; 2 for BatchNormalization (scale and shift); 3 for
  Sigmoid, Softmax and Tanh (exponent, sum or add, divide).
- Pooling: kernel area - 1 comparisons or adds per output element (+1 divide for average).
- Data movement is free: Transpose, Reshape, Cast, Pad, Concat, Slice, ArgMax, Resize, ...
  (``MOVEMENT``). Any other op is counted as 0 and listed in ``FlopCount.uncounted``.

Shapes come from onnx shape inference with the dynamic input dimensions fixed (default
batch 1 and the model card's height and width); the shape arithmetic a dynamic-size
graph does (``Shape`` -> Max, Neg, Div -> the crops of its transposed convolutions) is
folded into constants first, so it is not counted and a dynamic graph counts the same as
a fixed one.

For the FCN family almost everything is multiply-adds: the slim FCN-8s at 512x512 is
40.7 GFLOP per image, 40.697 of them in Conv and ConvTranspose and 0.050 (0.12 %) in the
elementwise ops (ReLU 0.036, max pooling 0.012, softmax, the skip adds, normalization).

Only the main graph is counted; control flow (If, Loop, Scan) is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_graph import read_card

PER_ELEMENT: dict[str, int] = {
    **dict.fromkeys(
        (
            "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Relu", "LeakyRelu", "PRelu", "Clip",
            "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Pow", "Erf", "Greater", "Less", "Equal",
            "GreaterOrEqual", "LessOrEqual", "Where",
        ),
        1,
    ),
    "BatchNormalization": 2,
    "Sigmoid": 3,
    "Tanh": 3,
    "Softmax": 3,
    "LogSoftmax": 3,
}  # fmt: skip
MOVEMENT = frozenset(
    (
        "Transpose", "Reshape", "Cast", "CastLike", "Pad", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze",
        "Flatten", "Identity", "Shape", "Size", "Gather", "GatherElements", "GatherND", "Expand", "Tile",
        "ArgMax", "ArgMin", "Constant", "ConstantOfShape", "Dropout", "Resize", "DepthToSpace", "SpaceToDepth",
        "QuantizeLinear", "DequantizeLinear", "Range", "NonZero", "TopK",
    )
)  # fmt: skip
POOLING = ("MaxPool", "AveragePool")
CONTROL_FLOW = ("If", "Loop", "Scan")
FOLD_LIMIT = 4096  # elements: constant tensors up to this size are folded (shape arithmetic)
NEVER_FOLD = frozenset(
    ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")
)


class FlopCountError(ValueError):
    """A graph whose FLOPs cannot be counted: an unknown dimension or unsupported control flow."""


@dataclass(frozen=True)
class FlopCount:
    total: int  # FLOPs of one run at input_shape (the whole batch)
    by_op: dict[str, int]  # op type -> FLOPs, largest first
    input_shape: dict[str, tuple[int, ...]]  # the shapes counted at
    batch: int = 1  # dimension 0 of the first input
    uncounted: tuple[str, ...] = field(default=())  # op types neither counted nor known data movement

    @property
    def per_image(self) -> float:
        return self.total / self.batch

    @property
    def gflops_per_image(self) -> float:
        return self.per_image / 1e9


def count_flops(
    model: onnx.ModelProto | str | Path, input_shape: Mapping[str, Sequence[int]] | None = None
) -> FlopCount:
    """FLOPs of one run of ``model`` at ``input_shape`` (graph input name -> full shape).

    Inputs not given keep their fixed dimensions; dynamic ones default to batch 1 for
    dimension 0 and, for a 4-D (NHWC) input, the height and width of the fcnx model card
    in the file. A dimension still unknown is an error that says what to pass.
    """
    origin = str(model) if isinstance(model, (str, Path)) else "model"
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    shapes = _fixed_input_shapes(proto, input_shape or {}, origin)
    graph, known = _infer_shapes(_with_input_shapes(proto, shapes))
    by_op: dict[str, int] = {}
    uncounted: set[str] = set()
    for node in graph.node:
        if node.op_type in CONTROL_FLOW:
            raise FlopCountError(
                f"{origin}: node {node.name!r} is {node.op_type}; control flow is not counted"
            )
        if node.domain not in ("", "ai.onnx"):
            uncounted.add(f"{node.domain}.{node.op_type}")
            continue
        flops = _node_flops(node, known, origin)
        if flops is None:
            uncounted.add(node.op_type)
        elif flops:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    first = next(iter(shapes.values()), (1,))
    return FlopCount(
        total=sum(by_op.values()),
        by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        input_shape=shapes,
        batch=first[0] if first else 1,
        uncounted=tuple(sorted(uncounted)),
    )


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    weights = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in weights]


def _fixed_input_shapes(
    proto: onnx.ModelProto, given: Mapping[str, Sequence[int]], origin: str
) -> dict[str, tuple[int, ...]]:
    inputs = _graph_inputs(proto.graph)
    names = [i.name for i in inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise FlopCountError(f"{origin}: input_shape names {unknown}, but the graph's inputs are {names}")
    card = read_card(proto, origin)
    shapes: dict[str, tuple[int, ...]] = {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if value.name in given:
            shape = tuple(int(d) for d in given[value.name])
            fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            if len(shape) != len(fixed) or any(f is not None and f != s for f, s in zip(fixed, shape)):
                raise FlopCountError(
                    f"{origin}: input {value.name!r} has shape {_show(fixed)}, input_shape gives {list(shape)}"
                )
            shapes[value.name] = shape
            continue
        defaults: dict[int, int | None] = {0: 1}  # batch 1; NHWC height and width from the card
        if len(dims) == 4 and card is not None:
            defaults.update({1: card.input_height, 2: card.input_width})
        shape_list: list[int] = []
        for axis, d in enumerate(dims):
            size = d.dim_value if d.HasField("dim_value") else defaults.get(axis)
            if not size:
                raise FlopCountError(
                    f"{origin}: input {value.name!r} dimension {axis} ({d.dim_param or '?'}) is dynamic and "
                    f"the model card gives no size for it; pass input_shape={{{value.name!r}: [...]}}"
                )
            shape_list.append(int(size))
        shapes[value.name] = tuple(shape_list)
    return shapes


def _show(dims: Sequence[int | None]) -> list[int | str]:
    return [d if d is not None else "?" for d in dims]


def _with_input_shapes(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``proto`` whose inputs have ``shapes``, with stale inner shapes dropped."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for value in copy.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims, shapes[value.name]):
                d.Clear()
                d.dim_value = size
    del copy.graph.value_info[:]  # recomputed for the fixed shapes
    return copy


def _infer_shapes(proto: onnx.ModelProto) -> tuple[onnx.GraphProto, dict[str, tuple[int, ...] | None]]:
    """onnx shape inference, repeated after folding the small constant computations it
    cannot see through (a dynamic-size tf2onnx graph computes its transposed convolutions'
    crops from ``Shape`` with Max, Neg and Div). Returns the folded graph and its shapes;
    the folded nodes are shape arithmetic, not work the model does per image."""
    model = proto
    while True:
        graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
        known = _known_shapes(graph)
        if all(known.get(name) is not None for node in graph.node for name in node.output if name):
            return graph, known
        folded = _fold_constants(model, graph, known)
        if not folded:
            return graph, known
        model = _with_folded(model, folded)


def _fold_constants(
    model: onnx.ModelProto, graph: onnx.GraphProto, known: Mapping[str, tuple[int, ...] | None]
) -> dict[str, np.ndarray]:
    """Values of the small tensors computable without the inputs: Shape of a known shape,
    then every node whose inputs are all such values (evaluated by onnx's reference runtime)."""
    from onnx.reference import ReferenceEvaluator

    opsets = {o.domain: o.version for o in model.opset_import}
    values = {w.name: numpy_helper.to_array(w) for w in graph.initializer if math.prod(w.dims) <= FOLD_LIMIT}
    outputs = {o.name for o in graph.output}
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        names = [n for n in node.output if n]
        if (
            node.domain not in ("", "ai.onnx")
            or not names
            or outputs & set(names)
            or node.op_type in NEVER_FOLD
        ):
            continue
        if node.op_type == "Shape":
            shape = known.get(node.input[0])
            if shape is None:
                continue
            start, end = _attribute(node, "start", 0), _attribute(node, "end", None)
            assert isinstance(start, int) and (end is None or isinstance(end, int))
            result: list[Any] = [np.array(shape[start:end], dtype=np.int64)]
        elif all(i in values for i in node.input if i):
            feeds = {i: values[i] for i in node.input if i}
            result = list(ReferenceEvaluator(node, opsets=opsets).run(None, feeds))
            if any(np.asarray(r).size > FOLD_LIMIT for r in result):
                continue
        else:
            continue
        for name, value in zip(names, result):
            values[name] = folded[name] = np.asarray(value)
    return folded


def _with_folded(model: onnx.ModelProto, folded: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with the folded tensors as initializers instead of their nodes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [n for n in copy.graph.node if not any(o in folded for o in n.output if o)]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    copy.graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items())
    del copy.graph.value_info[:]
    return copy


def _known_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...] | None]:
    """Tensor name -> shape, or None where shape inference left a dimension unknown."""
    shapes: dict[str, tuple[int, ...] | None] = {w.name: tuple(w.dims) for w in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        known = all(d.HasField("dim_value") for d in dims)
        shapes[value.name] = tuple(d.dim_value for d in dims) if known else None
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _shape(
    name: str, node: onnx.NodeProto, known: Mapping[str, tuple[int, ...] | None], origin: str
) -> tuple[int, ...]:
    shape = known.get(name)
    if shape is None:
        raise FlopCountError(
            f"{origin}: shape of {name!r} ({node.op_type} node {node.name!r}) is unknown after shape inference; "
            "fix the dynamic input dimensions with input_shape"
        )
    return shape


def _has_input(node: onnx.NodeProto, index: int) -> bool:
    return len(node.input) > index and bool(node.input[index])


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _node_flops(node: onnx.NodeProto, known: Mapping[str, tuple[int, ...] | None], origin: str) -> int | None:
    """FLOPs of one node, 0 for data movement, None for an op type the convention does not know."""
    op = node.op_type
    if op in MOVEMENT:
        return 0

    def shape(name: str) -> tuple[int, ...]:
        return _shape(name, node, known, origin)

    if op == "Conv":
        out = math.prod(shape(node.output[0]))
        per_output = math.prod(shape(node.input[1])[1:])  # (Cin / group) * kh * kw
        return 2 * out * per_output + (out if _has_input(node, 2) else 0)
    if op == "ConvTranspose":
        weight = shape(node.input[1])  # (Cin, Cout / group, kh, kw)
        flops = 2 * math.prod(shape(node.input[0])) * math.prod(weight[1:])
        return flops + (math.prod(shape(node.output[0])) if _has_input(node, 2) else 0)
    if op == "MatMul":
        a = shape(node.input[0])
        return 2 * math.prod(shape(node.output[0])) * (a[-1] if a else 1)
    if op == "Gemm":
        a = shape(node.input[0])
        k = a[0] if _attribute(node, "transA", 0) else a[-1]
        out = math.prod(shape(node.output[0]))
        return 2 * out * k + (out if _has_input(node, 2) else 0)
    if op in POOLING:
        kernel = _attribute(node, "kernel_shape", [])
        assert isinstance(kernel, list)
        per_output = math.prod(kernel) - 1 + (1 if op == "AveragePool" else 0)
        return per_output * math.prod(shape(node.output[0]))
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
        return math.prod(shape(node.input[0]))
    if op in PER_ELEMENT:
        return PER_ELEMENT[op] * math.prod(shape(node.output[0]))
    return None
