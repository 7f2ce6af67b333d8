"""What a Triton repository serves, read from the model file: ``read_served_model`` tells an
ONNX file from a TensorRT engine by the runtime's one table of model kinds
(``fcnx.runtime.backends.registry.model_kind``) and reads its inputs, outputs and card,
from the ONNX graph or from the engine's sidecar (the plan itself is opaque without
TensorRT). Data types go ONNX element type -> numpy (``onnx.helper``) -> Triton
(``tritonclient.utils``); both libraries are imported only when a model is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.backends.base import BackendError
from fcnx.runtime.backends.registry import MODEL_KINDS, model_kind
from fcnx.runtime.backends.trt.sidecar import EngineSidecar, read_sidecar, sidecar_path
from fcnx.runtime.card import CardError, ModelCard

from ..onnx_export import ExportError

PLATFORMS = {"onnx": "onnxruntime_onnx", "engine": "tensorrt_plan"}  # keyed by model kind
MODEL_FILES = {"onnx": "model.onnx", "engine": "model.plan"}
TRITONCLIENT_MISSING = (
    "tritonclient is not installed (its model_config protobuf writes config.pbtxt): "
    'pip install "fcnx[triton]"'
)


class TritonClientUnavailable(ExportError):
    """tritonclient (its model_config protobuf) is not installed (exit status 2)."""


def triton_data_type(dtype: Any) -> str | None:
    """Triton's DataType name ("TYPE_UINT8") for a numpy dtype or dtype name, or None where
    Triton has none (strings included: fcnx serves images and masks only)."""
    try:
        from tritonclient.utils import np_to_triton_dtype  # imports ml_dtypes: np.dtype("bfloat16")
    except ImportError:
        raise TritonClientUnavailable(TRITONCLIENT_MISSING) from None
    try:
        name = np_to_triton_dtype(np.dtype(dtype))
    except TypeError:  # not a dtype name numpy knows
        return None
    return None if name in (None, "BYTES") else f"TYPE_{name}"


@dataclass(frozen=True)
class TritonTensor:
    """One input or output as Triton sees it: dims without the batch axis, -1 = any."""

    name: str
    data_type: str  # Triton's DataType name: "TYPE_UINT8", "TYPE_FP32"
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ServedModel:
    """What the repository serves, read from the model file and its card (or sidecar)."""

    path: Path
    format: str  # the model kind: "onnx" | "engine"
    card: ModelCard
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    sidecar: EngineSidecar | None = None

    @property
    def platform(self) -> str:
        return PLATFORMS[self.format]

    @property
    def filename(self) -> str:
        return MODEL_FILES[self.format]

    @property
    def image(self) -> TritonTensor:
        return self.inputs[0]


def read_served_model(path: str | Path) -> ServedModel:
    """An ONNX file or a TensorRT engine (with its sidecar), told apart by the file's suffix."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"{path}: no such model file (an fcnx .onnx, or a TensorRT engine with its sidecar)"
        )
    try:
        kind = model_kind(path)
    except BackendError:
        suffixes = [s for k in MODEL_KINDS if k.name in PLATFORMS for s in k.suffixes]
        raise ExportError(
            f"{path}: expected an fcnx ONNX file or a TensorRT engine with its sidecar, named "
            f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
        ) from None
    if kind == "onnx":
        return read_onnx_model(path)
    if kind == "engine":
        return read_engine_model(path)
    raise ExportError(
        f"{path}: a Keras model; Triton serves its ONNX export or a TensorRT engine built from that: "
        f"fcnx export onnx {path} -o model.onnx first"
    )


def _onnx_data_type(elem_type: int, origin: str) -> str:
    from onnx import TensorProto, helper

    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    except KeyError:  # UNDEFINED, or a number onnx does not know
        np_dtype = None
    # the round trip refuses a lossy mapping (onnx without ml_dtypes read bfloat16 as float32)
    if np_dtype is not None and helper.np_dtype_to_tensor_dtype(np_dtype) == elem_type:
        data_type = triton_data_type(np_dtype)
        if data_type is not None:
            return data_type
    name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else "?"
    raise ExportError(f"{origin}: element type {name} has no Triton data type")


def _onnx_dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def read_onnx_model(path: Path) -> ServedModel:
    import onnx

    from ..onnx_graph import read_card

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file: {str(exc)[:200]}") from None
    try:
        card = read_card(model, str(path))
    except CardError as exc:
        raise ExportError(str(exc)) from None
    if card is None:
        raise ExportError(f"{path}: has no fcnx model card; export it with fcnx export onnx")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ExportError(
            f"{path}: keeps its weights in external data files; fcnx copies one model.onnx only"
        )
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise ExportError(f"{path}: expected one image input, got {[i.name for i in graph_inputs]}")
    image = graph_inputs[0]
    dims = _onnx_dims(image)
    if len(dims) != 4:
        raise ExportError(
            f"{path}: expected an NHWC image input of rank 4, got rank {len(dims)} ({image.name!r})"
        )
    if dims[0] is not None:
        raise ExportError(
            f"{path}: was exported with a fixed batch of {dims[0]}; Triton forms batches itself and needs a "
            f"dynamic batch axis: re-export with fcnx export onnx MODEL -o {path.name} --batch dynamic"
        )
    data_type = _onnx_data_type(image.type.tensor_type.elem_type, f"{path}: input {image.name!r}")
    inputs = (TritonTensor(image.name, data_type, tuple(-1 if d is None else d for d in dims[1:])),)
    outputs = []
    for out in model.graph.output:
        out_dims = _onnx_dims(out)
        if not out_dims or out_dims[0] is not None:
            raise ExportError(
                f"{path}: output {out.name!r} has no dynamic batch axis, its shape is {out_dims}"
            )
        data_type = _onnx_data_type(out.type.tensor_type.elem_type, f"{path}: output {out.name!r}")
        outputs.append(TritonTensor(out.name, data_type, tuple(-1 if d is None else d for d in out_dims[1:])))
    return ServedModel(path=path, format="onnx", card=card, inputs=inputs, outputs=tuple(outputs))


def read_engine_model(path: Path) -> ServedModel:
    """Inputs and outputs from the sidecar: the plan itself is opaque without TensorRT."""
    try:
        sidecar = read_sidecar(path)
    except CardError as exc:
        raise ExportError(f"{exc} (fcnx serves only engines whose sidecar checks out)") from None
    if path.stat().st_size == 0:
        raise ExportError(
            f"{path}: an empty file, not a TensorRT plan; rebuild with {sidecar.rebuild_command(path)}"
        )
    card = sidecar.card
    where = sidecar_path(path)
    if sidecar.batch.min != 1:
        raise ExportError(
            f"{where}: the engine's batch profile {sidecar.batch} starts at {sidecar.batch.min}, but Triton "
            f"sends any batch from 1 up: rebuild with fcnx export engine {sidecar.onnx_file} -o {path} "
            f"--batch 1:{sidecar.batch.opt}:{sidecar.batch.max} --force"
        )
    h, w, c = sidecar.input_shape
    input_type = triton_data_type(card.input_dtype)
    if input_type is None:
        raise ExportError(f"{where}: input dtype {card.input_dtype!r} has no Triton data type")
    inputs = (TritonTensor(sidecar.input_name, input_type, (h, w, c)),)
    known = {
        # FP32 I/O even for FP16 and INT8 engines (fcnx keeps the ONNX's I/O types)
        "probs": TritonTensor(
            "probs", "TYPE_FP32", (h, w, card.num_classes if card.output_kind == "softmax" else 1)
        ),
        "mask": TritonTensor("mask", "TYPE_UINT8", (h, w)),
    }
    unknown = [o for o in sidecar.outputs if o not in known]
    if unknown or not sidecar.outputs:
        raise ExportError(f"{where}: outputs must be probs and/or mask, got {list(sidecar.outputs)}")
    outputs = tuple(known[o] for o in sidecar.outputs)
    return ServedModel(path=path, format="engine", card=card, inputs=inputs, outputs=outputs, sidecar=sidecar)
