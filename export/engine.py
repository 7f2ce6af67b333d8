"""``fcnx export engine``: an fcnx ONNX file -> a TensorRT plan + its sidecar.

Written to the documented TensorRT 10/11 Python API and kept thin: everything that
can be decided without TensorRT (the card, the precision, the profile, the input
shape, the output path, the sidecar) is plain Python, tested on the CPU. Precision
is decided in the ONNX (an FP16 ONNX, or a Q/DQ INT8 one), and the network is
strongly typed: TensorRT 11 removed BuilderFlag.FP16/INT8, and 10.12+ supports this.

TensorRT cannot be installed on fcnx's CI or development machines, so ``_build_plan``
and ``gpu_identity`` have not been run by our tests; tests that need them are marked
``tensorrt`` and skip with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import atomic_write_bytes
from fcnx.runtime.backends.trt import cuda as gpu
from fcnx.runtime.backends.trt.sidecar import BatchProfile, EngineSidecar, write_sidecar
from fcnx.runtime.card import ModelCard, sha256_file
from fcnx.runtime.flags import opt

from .onnx_export import ExportError, check_output_path


class TensorRTUnavailable(ExportError):
    """No TensorRT or no GPU here (exit status 2)."""


@dataclass(frozen=True)
class EngineBuildConfig:
    onnx: str = opt("", "an ONNX file exported by fcnx (FP32, FP16 or INT8)", cli=False)
    out: str = opt("", "the engine file to write (its sidecar is OUT.json)", cli=False)
    batch: str = opt("1:8:32", "batch optimization profile MIN:OPT:MAX")
    workspace: float = opt(4.0, "builder workspace limit in GiB")
    timing_cache: str | None = opt(
        None, "timing cache file: loaded if present, saved after the build", metavar="FILE"
    )
    force: bool = opt(False, "overwrite an existing engine")


@dataclass(frozen=True)
class BuildPlan:
    """Everything the TensorRT call needs, decided and validated without TensorRT."""

    onnx_path: Path
    card: ModelCard
    input_name: str
    input_shape: tuple[int, int, int]  # H, W, C
    batch: BatchProfile
    precision: str
    outputs: tuple[str, ...]

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        h, w, c = self.input_shape
        return ((self.batch.min, h, w, c), (self.batch.opt, h, w, c), (self.batch.max, h, w, c))


def plan_build(config: EngineBuildConfig) -> BuildPlan:
    """Read the ONNX's card and input, check the profile fits them."""
    import onnx

    from .onnx_graph import read_card

    path = Path(config.onnx)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file: {str(exc)[:200]}") from None
    card = read_card(model, str(path))
    if card is None:
        raise ExportError(f"{path}: has no fcnx model card; export it with fcnx export onnx")
    calibration = card.export.get("calibration", {})
    if card.precision == "int8" and not calibration.get("tensorrt_compatible", False):
        raise ExportError(
            f"{path}: INT8 in the {calibration.get('format', '?')} format (asymmetric, for onnxruntime on CPUs); "
            "TensorRT takes symmetric Q/DQ only: re-export with --precision int8 --int8-format s8s8"
        )
    try:
        batch = BatchProfile.parse(config.batch)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if config.workspace <= 0:
        raise ExportError(f"workspace must be positive GiB, got {config.workspace}")
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(values) != 4:
        raise ExportError(f"{path}: expected an NHWC image input, got rank {len(values)}")
    n, h, w, c = values
    if n is not None and not (batch.min == batch.opt == batch.max == n):
        raise ExportError(
            f"{path}: was exported with a fixed batch of {n}; use --batch {n} or export with --batch dynamic"
        )
    h = h or card.input_height
    w = w or card.input_width
    if h is None or w is None:
        raise ExportError(
            f"{path}: has a dynamic spatial size and its card gives none; export it with --size HxW for an engine"
        )
    return BuildPlan(
        onnx_path=path,
        card=card,
        input_name=graph_input.name,
        input_shape=(h, w, c or card.input_channels),
        batch=batch,
        precision=card.precision,
        outputs=tuple(o.name for o in model.graph.output),
    )


def import_tensorrt() -> Any:
    try:
        return gpu.import_tensorrt()
    except gpu.GpuUnavailable as exc:
        raise TensorRTUnavailable(str(exc)) from None


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device 0 (fcnx.runtime.gpu)."""
    try:
        return gpu.gpu_identity()
    except gpu.GpuUnavailable as exc:
        raise TensorRTUnavailable(str(exc)) from None


def attach_timing_cache(config: Any, cache_bytes: bytes) -> tuple[Any, str]:
    """Create and attach a timing cache: the saved one when TensorRT takes it, else a fresh
    one (a cache from another GPU or TensorRT is rejected). Returns (the cache object
    attached, or None when even a fresh one could not be; a note saying what happened)."""
    note = ""
    for data in (cache_bytes, b"") if cache_bytes else (b"",):
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache, note
        note = "the saved timing cache was rejected (another GPU or TensorRT?); building with a fresh one"
    return None, "TensorRT could not create a timing cache; building without one"


def _build_plan(
    trt: Any, plan: BuildPlan, workspace_gib: float, timing_cache: Path | None
) -> tuple[bytes, Any, str]:
    """The TensorRT part: parse, profile, build. Returns the serialized plan, the timing
    cache object the build used (or None) and a note about the cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: precision comes from the ONNX. Required for this on 10.12+,
    # accepted and ignored on 11 (always strongly typed).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{plan.onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, *plan.shapes())
    config.add_optimization_profile(profile)
    cache, note = None, ""
    if timing_cache is not None:
        cache, note = attach_timing_cache(
            config, timing_cache.read_bytes() if timing_cache.is_file() else b""
        )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{plan.onnx_path}: TensorRT could not build an engine (see the log above)")
    return bytes(serialized), cache, note


def save_timing_cache(cache: Any, path: Path) -> str:
    """Write the cache the build used (after the plan is safe on disk); a failure here is a
    note, never a lost build."""
    try:
        atomic_write_bytes(path, bytes(cache.serialize()))
    except Exception as exc:  # TensorRT's own exception types; the engine is already written
        return f"the timing cache was not saved ({type(exc).__name__}: {str(exc)[:200]})"
    return ""


def build_engine(config: EngineBuildConfig) -> dict[str, Any]:
    out = Path(config.out)
    check_output_path(out, config.force)
    plan = plan_build(config)
    trt = import_tensorrt()
    gpu_name, capability = gpu_identity()
    started = time.perf_counter()
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    serialized, cache, note = _build_plan(trt, plan, config.workspace, cache_path)
    seconds = time.perf_counter() - started
    atomic_write_bytes(out, serialized)  # the plan first: minutes of building are never lost
    sidecar = EngineSidecar(
        card=plan.card,
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=capability,
        input_name=plan.input_name,
        input_shape=plan.input_shape,
        batch=plan.batch,
        precision=plan.precision,
        onnx_sha256=sha256_file(plan.onnx_path),
        onnx_file=str(plan.onnx_path),
        build_seconds=round(seconds, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        outputs=plan.outputs,
    )
    write_sidecar(out, sidecar)
    if cache is not None and cache_path is not None:
        note = "; ".join(n for n in (note, save_timing_cache(cache, cache_path)) if n)
    return {
        "path": str(out),
        "sidecar": str(out) + ".json",
        "seconds": seconds,
        "gpu": gpu_name,
        "note": note,
    }
