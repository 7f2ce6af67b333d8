"""``fcnx export triton``: an fcnx ONNX file or TensorRT engine -> a Triton model repository.

Writes ``REPO/NAME/config.pbtxt``, ``REPO/NAME/1/model.onnx`` (platform
``onnxruntime_onnx``) or ``REPO/NAME/1/model.plan`` (``tensorrt_plan``), and the
model card as ``REPO/NAME/fcnx-card.json`` (engines: their sidecar too, as
``fcnx-engine.json``; Triton ignores files that are not version folders).

Everything in the config comes from the model itself: the input and output names,
data types and dims from the ONNX graph or the engine's sidecar, ``max_batch_size``
from the engine's batch profile. The config is a real ``ModelConfig`` protobuf from
tritonclient, written with ``text_format``, so a field Triton does not know cannot be
written. The model folder is built in a temp folder inside REPO and renamed into
place: Triton never sees half of one.

Not run here: the Triton server itself (no docker or GPU on fcnx's machines). The
tests parse the config back and run the repository's ONNX with onnxruntime.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnx.runtime.backends.trt.sidecar import EngineSidecar, read_sidecar, sidecar_path
from fcnx.runtime.card import CardError, ModelCard
from fcnx.runtime.flags import opt

from .onnx_export import ExportError

PLATFORMS = {"onnx": "onnxruntime_onnx", "engine": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "engine": "model.plan"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CARD_FILE = "fcnx-card.json"
SIDECAR_FILE = "fcnx-engine.json"
DEFAULT_ONNX_MAX_BATCH = 32
TRT_PRECISIONS = ("auto", "fp16", "fp32", "int8")

# numpy / ONNX element type names -> Triton's DataType names
NUMPY_TO_TRITON = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}
ONNX_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FLOAT16": "float16",
    "FLOAT": "float32",
    "DOUBLE": "float64",
    "BFLOAT16": "bfloat16",
}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class TritonClientUnavailable(ExportError):
    """tritonclient (its model_config protobuf) is not installed (exit status 2)."""


@dataclass(frozen=True)
class TritonRepoConfig:
    model: str = opt("", "an fcnx ONNX file, or a TensorRT engine with its sidecar ENGINE.json", cli=False)
    repo: str = opt("", "the model repository folder (created if missing)", cli=False)
    name: str = opt("", "the model's name in Triton: the folder REPO/NAME", cli=False)
    max_batch: int | None = opt(
        None,
        "max_batch_size: the largest batch Triton forms (default: 32 for ONNX; an engine's "
        "batch profile max, which it cannot exceed)",
    )
    preferred_batch: str | None = opt(
        None,
        "dynamic batching: preferred batch sizes, comma-separated like 8,16 (default: none, Triton "
        "batches up to max_batch_size)",
        metavar="N,N",
    )
    max_queue_delay_us: int = opt(
        100, "dynamic batching: microseconds a request may wait for others to fill a batch"
    )
    instances: int = opt(1, "model instances (per GPU with --kind gpu, in all with --kind cpu)")
    kind: str = opt(
        "gpu", "instance kind: gpu, or cpu (ONNX only) for a CPU-only Triton", choices=("gpu", "cpu")
    )
    trt_accelerator: bool = opt(
        True, "ONNX on GPU instances: onnxruntime's TensorRT execution accelerator (off: CUDA only)"
    )
    trt_precision: str = opt(
        "auto",
        "TensorRT accelerator precision_mode: auto (INT8 for a Q/DQ INT8 ONNX, else FP16), fp16, fp32, int8",
        choices=TRT_PRECISIONS,
    )
    trt_workspace: float = opt(4.0, "TensorRT accelerator workspace limit in GiB (max_workspace_size_bytes)")
    trt_cache: str | None = opt(
        None,
        "TensorRT accelerator: engine and timing cache folder inside the Triton container (default: "
        "none, the engine is rebuilt at every model load)",
        metavar="DIR",
    )
    force: bool = opt(False, "replace an existing REPO/NAME")

    def __post_init__(self) -> None:
        if self.name and not _MODEL_NAME.match(self.name):
            raise ExportError(
                f"model name {self.name!r}: use letters, digits, '_', '-' and '.', not starting with '.' or '-'"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise ExportError(f"--max-batch must be 1 or more, got {self.max_batch}")
        if self.instances < 1:
            raise ExportError(f"--instances must be 1 or more, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise ExportError(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
        if self.trt_workspace <= 0:
            raise ExportError(f"--trt-workspace must be positive GiB, got {self.trt_workspace}")
        if self.kind not in ("gpu", "cpu"):
            raise ExportError(f"--kind must be gpu or cpu, got {self.kind!r}")
        if self.trt_precision not in TRT_PRECISIONS:
            raise ExportError(
                f"--trt-precision must be one of {', '.join(TRT_PRECISIONS)}, got {self.trt_precision!r}"
            )
        self.preferred_sizes()

    def preferred_sizes(self) -> tuple[int, ...]:
        """``--preferred-batch 8,16`` -> (8, 16), sorted, each at least 1."""
        if self.preferred_batch is None or not self.preferred_batch.strip():
            return ()
        parts = [p.strip() for p in self.preferred_batch.split(",")]
        if not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise ExportError(
                f"--preferred-batch must be positive integers separated by commas like 8,16, "
                f"got {self.preferred_batch!r}"
            )
        return tuple(sorted({int(p) for p in parts}))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: dims without the batch axis, -1 = any."""

    name: str
    dtype: str  # numpy name: "uint8", "float32"
    dims: tuple[int, ...]

    @property
    def data_type(self) -> str:
        return NUMPY_TO_TRITON[self.dtype]


@dataclass(frozen=True)
class ServedModel:
    """What the repository serves, read from the model file and its card (or sidecar)."""

    path: Path
    format: str  # "onnx" | "engine"
    card: ModelCard
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sidecar: EngineSidecar | None = None

    @property
    def platform(self) -> str:
        return PLATFORMS[self.format]

    @property
    def filename(self) -> str:
        return MODEL_FILES[self.format]

    @property
    def image(self) -> TensorSpec:
        return self.inputs[0]


def read_served_model(path: str | Path) -> ServedModel:
    """An ONNX file (by its suffix) or a TensorRT engine (a plan file with a sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"{path}: no such model file (an fcnx .onnx, or a TensorRT engine with its sidecar)"
        )
    if path.suffix.lower() == ".onnx":
        return read_onnx_model(path)
    if path.suffix.lower() in ENGINE_SUFFIXES or sidecar_path(path).is_file():
        return read_engine_model(path)
    raise ExportError(
        f"{path}: expected an fcnx ONNX file (.onnx) or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}) "
        "with its sidecar"
    )


def _onnx_dtype(elem_type: int, origin: str) -> str:
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else "?"
    if name not in ONNX_TO_NUMPY:
        raise ExportError(f"{origin}: element type {name} has no Triton data type")
    return ONNX_TO_NUMPY[name]


def _onnx_dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def read_onnx_model(path: Path) -> ServedModel:
    import onnx

    from .onnx_graph import read_card

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
    dtype = _onnx_dtype(image.type.tensor_type.elem_type, f"{path}: input {image.name!r}")
    inputs = (TensorSpec(image.name, dtype, tuple(-1 if d is None else d for d in dims[1:])),)
    outputs = []
    for out in model.graph.output:
        out_dims = _onnx_dims(out)
        if not out_dims or out_dims[0] is not None:
            raise ExportError(
                f"{path}: output {out.name!r} has no dynamic batch axis, its shape is {out_dims}"
            )
        dtype = _onnx_dtype(out.type.tensor_type.elem_type, f"{path}: output {out.name!r}")
        outputs.append(TensorSpec(out.name, dtype, tuple(-1 if d is None else d for d in out_dims[1:])))
    return ServedModel(path=path, format="onnx", card=card, inputs=inputs, outputs=tuple(outputs))


def read_engine_model(path: Path) -> ServedModel:
    """Inputs and outputs from the sidecar: the plan itself is opaque without TensorRT."""
    try:
        sidecar = read_sidecar(path)
    except CardError as exc:
        raise ExportError(str(exc)) from None
    card = sidecar.card
    where = sidecar_path(path)
    if sidecar.batch.min != 1:
        raise ExportError(
            f"{where}: the engine's batch profile {sidecar.batch} starts at {sidecar.batch.min}, but Triton "
            f"sends any batch from 1 up: rebuild with fcnx export engine {sidecar.onnx_file} -o {path} "
            f"--batch 1:{sidecar.batch.opt}:{sidecar.batch.max} --force"
        )
    h, w, c = sidecar.input_shape
    if card.input_dtype not in NUMPY_TO_TRITON:
        raise ExportError(f"{where}: input dtype {card.input_dtype!r} has no Triton data type")
    inputs = (TensorSpec(sidecar.input_name, card.input_dtype, (h, w, c)),)
    known = {
        # FP32 I/O even for FP16 and INT8 engines (fcnx keeps the ONNX's I/O types)
        "probs": TensorSpec(
            "probs", "float32", (h, w, card.num_classes if card.output_kind == "softmax" else 1)
        ),
        "mask": TensorSpec("mask", "uint8", (h, w)),
    }
    unknown = [o for o in sidecar.outputs if o not in known]
    if unknown or not sidecar.outputs:
        raise ExportError(f"{where}: outputs must be probs and/or mask, got {list(sidecar.outputs)}")
    outputs = tuple(known[o] for o in sidecar.outputs)
    return ServedModel(path=path, format="engine", card=card, inputs=inputs, outputs=outputs, sidecar=sidecar)


def max_batch_size(served: ServedModel, config: TritonRepoConfig) -> int:
    """--max-batch, or the default: an engine's profile max (which it cannot exceed), 32 for ONNX."""
    if served.sidecar is None:
        return config.max_batch or DEFAULT_ONNX_MAX_BATCH
    profile_max = served.sidecar.batch.max
    if config.max_batch is not None and config.max_batch > profile_max:
        raise ExportError(
            f"--max-batch {config.max_batch} is larger than {served.path}'s batch profile max {profile_max} "
            f"(profile {served.sidecar.batch}): use --max-batch {profile_max} or less, or rebuild the engine "
            f"with --batch 1:{served.sidecar.batch.opt}:{config.max_batch}"
        )
    return config.max_batch or profile_max


def tensorrt_accelerator(
    served: ServedModel, config: TritonRepoConfig, max_batch: int
) -> tuple[dict[str, str] | None, str | None]:
    """onnxruntime's TensorRT execution accelerator parameters for an ONNX on GPU
    instances, or None, with a note saying why it was left out when it was."""
    if served.format != "onnx" or not config.trt_accelerator:
        return None, None
    if config.kind == "cpu":
        return None, "--kind cpu: no TensorRT accelerator (it applies to GPU instances only)"
    card = served.card
    is_int8 = card.precision == "int8"
    calibration = card.export.get("calibration", {})
    if is_int8 and not calibration.get("tensorrt_compatible", False):
        return None, (
            f"{served.path}: INT8 in the {calibration.get('format', '?')} format (asymmetric, for onnxruntime "
            "on CPUs); TensorRT takes symmetric Q/DQ only, so no TensorRT accelerator (onnxruntime's CUDA "
            "provider runs it): for TensorRT, re-export with --precision int8 --int8-format s8s8"
        )
    precision = config.trt_precision
    if precision == "auto":
        precision = "int8" if is_int8 else "fp16"
    if precision == "int8" and not is_int8:
        raise ExportError(
            f"{served.path}: --trt-precision int8 needs an INT8 (Q/DQ) ONNX, this one is {card.precision}: "
            "export one with fcnx export onnx --precision int8 --calib DIR"
        )
    if is_int8 and precision != "int8":
        raise ExportError(
            f"{served.path}: is an INT8 Q/DQ ONNX; TensorRT builds it only with INT8 enabled: use "
            "--trt-precision int8 (or auto)"
        )
    params = {
        "precision_mode": precision.upper(),
        "max_workspace_size_bytes": str(int(config.trt_workspace * (1 << 30))),
    }
    h, w, c = served.image.dims
    if min(h, w, c) > 0:  # a fixed size: one profile over the batch axis, no engine rebuilds per batch
        preferred = config.preferred_sizes()
        opt_batch = max(preferred) if preferred else max_batch
        name = served.image.name
        params["trt_profile_min_shapes"] = f"{name}:1x{h}x{w}x{c}"
        params["trt_profile_opt_shapes"] = f"{name}:{opt_batch}x{h}x{w}x{c}"
        params["trt_profile_max_shapes"] = f"{name}:{max_batch}x{h}x{w}x{c}"
    if config.trt_cache:
        params["trt_engine_cache_enable"] = "1"
        params["trt_engine_cache_path"] = config.trt_cache
        params["trt_timing_cache_enable"] = "1"
        params["trt_timing_cache_path"] = config.trt_cache
    return params, None


def model_config_pb2() -> Any:
    """tritonclient's ModelConfig protobuf module, imported only when needed."""
    try:
        from tritonclient.grpc import model_config_pb2 as module
    except ImportError:
        raise TritonClientUnavailable(
            'tritonclient is not installed (its model_config protobuf writes config.pbtxt): pip install "fcnx[triton]"'
        ) from None
    return module


def build_model_config(served: ServedModel, config: TritonRepoConfig) -> Any:
    """The ``ModelConfig`` message for ``served`` under ``config``'s batching and instances."""
    pb = model_config_pb2()
    if served.format == "engine" and config.kind != "gpu":
        raise ExportError(f"{served.path}: a TensorRT plan runs on GPU instances only; leave out --kind cpu")
    max_batch = max_batch_size(served, config)
    preferred = config.preferred_sizes()
    too_large = [p for p in preferred if p > max_batch]
    if too_large:
        raise ExportError(
            f"--preferred-batch {','.join(map(str, too_large))} is larger than max_batch_size {max_batch}"
        )
    message = pb.ModelConfig(name=config.name, platform=served.platform, max_batch_size=max_batch)
    for spec in served.inputs:
        message.input.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=list(spec.dims))
    for spec in served.outputs:
        message.output.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=list(spec.dims))
    message.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
    message.dynamic_batching.preferred_batch_size.extend(preferred)
    kind = pb.ModelInstanceGroup.Kind.Value("KIND_GPU" if config.kind == "gpu" else "KIND_CPU")
    message.instance_group.add(count=config.instances, kind=kind)
    params, _ = tensorrt_accelerator(served, config, max_batch)
    if params is not None:
        accelerator = message.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        for key, value in params.items():
            accelerator.parameters[key] = value
    return message


def describe(message: Any) -> list[str]:
    """A few lines saying what a ModelConfig serves and how, for the command's output."""
    pb = model_config_pb2()

    def tensors(specs: Any) -> str:
        return ", ".join(f"{s.name} {pb.DataType.Name(s.data_type)} {list(s.dims)}" for s in specs)

    batching = message.dynamic_batching
    preferred = ",".join(map(str, batching.preferred_batch_size)) or "none"
    groups = ", ".join(
        f"{g.count} x {pb.ModelInstanceGroup.Kind.Name(g.kind)}" for g in message.instance_group
    )
    lines = [
        f"  {message.platform}: inputs {tensors(message.input)}; outputs {tensors(message.output)}",
        f"  max_batch_size {message.max_batch_size}, preferred batch sizes {preferred}, "
        f"max queue delay {batching.max_queue_delay_microseconds} us, instances {groups}",
    ]
    for accelerator in message.optimization.execution_accelerators.gpu_execution_accelerator:
        params = dict(accelerator.parameters)
        lines.append(f"  {accelerator.name} accelerator: {params.get('precision_mode', 'FP32')}")
    return lines


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_synced(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def write_repository(config: TritonRepoConfig) -> dict[str, Any]:
    """Write REPO/NAME (config, version 1's model file, card; engines: sidecar) atomically."""
    from google.protobuf import text_format

    if not config.name:
        raise ExportError("a Triton model needs a name: --name NAME")
    repo = Path(config.repo)
    target = repo / config.name
    if repo.exists() and not repo.is_dir():
        raise ExportError(f"{repo}: is a file, not a model repository folder")
    if target.exists() and not config.force:
        raise ExportError(f"{target}: already exists; pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: is a file, not a model folder")
    served = read_served_model(config.model)
    message = build_model_config(served, config)
    _, note = tensorrt_accelerator(served, config, message.max_batch_size)
    text = text_format.MessageToString(message)

    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".tmp", dir=repo))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; Triton's container user must read it
        (tmp / "1").mkdir()
        _copy_synced(served.path, tmp / "1" / served.filename)
        _write_synced(tmp / "config.pbtxt", text.encode("utf-8"))
        _write_synced(tmp / CARD_FILE, (served.card.to_json() + "\n").encode("utf-8"))
        if served.sidecar is not None:
            _copy_synced(sidecar_path(served.path), tmp / SIDECAR_FILE)
        _swap_into_place(tmp, target, config.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [target / "config.pbtxt", target / "1" / served.filename, target / CARD_FILE]
    if served.sidecar is not None:
        files.append(target / SIDECAR_FILE)
    return {
        "path": str(target),
        "files": [str(f) for f in files],
        "platform": served.platform,
        "max_batch_size": message.max_batch_size,
        "config": text,
        "summary": describe(message),
        "note": note,
        "tensorrt_version": served.sidecar.tensorrt_version if served.sidecar else None,
        "compute_capability": served.sidecar.compute_capability if served.sidecar else None,
        "gpu_name": served.sidecar.gpu_name if served.sidecar else None,
    }


def _swap_into_place(tmp: Path, target: Path, force: bool) -> None:
    """Rename the finished folder to ``target``; an existing one (with --force) is moved
    aside first and removed after, or put back if the rename fails."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not force:
        raise ExportError(f"{target}: already exists; pass --force to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
