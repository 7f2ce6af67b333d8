"""The Triton ``ModelConfig`` for a served model: ``TritonRepoConfig`` holds the command's
options (batching, instances, onnxruntime's TensorRT accelerator), ``build_model_config``
turns a ``ServedModel`` and those options into tritonclient's ``ModelConfig`` protobuf
(imported only when needed), together with the note saying why the TensorRT accelerator
was left out when it was, and ``summarize_config`` describes the result in a few lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fcnx.runtime.flags import opt

from ..onnx_export import ExportError
from .model import TRITONCLIENT_MISSING, ServedModel, TritonClientUnavailable

DEFAULT_ONNX_MAX_BATCH = 32
TRT_PRECISIONS = ("auto", "fp16", "fp32", "int8")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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
        raise TritonClientUnavailable(TRITONCLIENT_MISSING) from None
    return module


def build_model_config(served: ServedModel, config: TritonRepoConfig) -> tuple[Any, str | None]:
    """The ``ModelConfig`` message for ``served`` under ``config``'s batching and instances, and
    the note saying why the TensorRT accelerator was left out (None when it was not)."""
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
    params, note = tensorrt_accelerator(served, config, max_batch)
    if params is not None:
        accelerator = message.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        for key, value in params.items():
            accelerator.parameters[key] = value
    return message, note


def summarize_config(message: Any) -> list[str]:
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
