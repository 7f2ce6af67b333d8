"""The onnxruntime backend: an ONNX file with its model card, on the CPU, CUDA or
TensorRT execution provider. Reads the card through onnxruntime's model metadata,
so it needs neither the onnx package nor TensorFlow.

Per provider, the settings that matter for a conv net:

- CPU: all graph optimizations, one intra-op thread per usable core, sequential
  execution (this graph is a chain, inter-op parallelism only adds overhead).
- CUDA: cuDNN exhaustive conv algorithm search with the max workspace, outputs bound
  to the GPU through I/O binding so only the uint8 image goes up and the uint8 mask
  comes down; optional CUDA graphs (fixed batch only).
- TensorRT EP: engine and timing caches in a folder, one batch profile, FP16 on when
  the ONNX is the FP16 export (the precision is decided in the ONNX).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..card import CardError, ModelCard, input_contradictions
from .base import Backend, BackendError, MissingExtra
from .registry import backend_spec, backends_for
from .trt.sidecar import BatchProfile

CARD_KEY = "fcnx.card"
TRT_EP_BATCH = BatchProfile(1, 8, 32)  # frozen, so a safe shared default


@dataclass(frozen=True)
class OrtOptions:
    """Knobs a user may want to turn; the defaults are what fcnx measured best."""

    threads: int | None = None  # CPU intra-op threads; None = usable cores
    spin: bool = True  # CPU worker threads spin between runs (faster back-to-back runs)
    cuda_graph: bool = False  # CUDA EP: capture the graph once (needs a fixed batch size)
    trt_cache: str | None = None  # TensorRT EP engine + timing cache folder; None = next to the ONNX
    trt_batch: BatchProfile = TRT_EP_BATCH  # TensorRT EP profile over the batch axis
    device_id: int = 0


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise MissingExtra(
            'onnxruntime is not installed: pip install "fcnx[cpu]" (or "fcnx[gpu]" on an NVIDIA GPU machine)'
        ) from None
    return onnxruntime


def usable_cores() -> int:
    """Cores this process may run on (containers and taskset limit them below os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def session_options(ort: Any, options: OrtOptions) -> Any:
    """fcnx's onnxruntime session settings (also used by the bench ceiling's MatMul)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = options.threads or usable_cores()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only; a provider falling back is reported by us
    if not options.spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


@dataclass(frozen=True)
class TrtEpShape:
    """What the TensorRT EP's profile lets a session run: the profile options (empty for an
    all-static input) and the limits Segmenter must keep to."""

    options: dict[str, str]
    max_batch: int | None
    fixed_batch: bool
    input_hw: tuple[int, int]


def trt_ep_shape(
    input_name: str, shape: tuple[int | None, ...], card: ModelCard, batch: BatchProfile, path: Path
) -> TrtEpShape:
    """The TensorRT EP profile for an NHWC input whose dims are ints or None (dynamic):
    profiles only for the dynamic axes (the batch over ``batch``; a dynamic H x W pinned to
    the card's size), and the limits that follow from it."""
    n, h, w, c = shape
    height, width = h or card.input_height, w or card.input_width
    if height is None or width is None:
        raise BackendError(
            f"{path}: ort-trt needs a spatial size for its TensorRT profile, and this file's input is dynamic "
            "with none in its card; re-export with fcnx export onnx --size HxW"
        )
    if n is not None and h is not None and w is not None:
        return TrtEpShape({}, n, True, (height, width))  # static: TensorRT needs no profile
    lo, opt, hi = (n, n, n) if n is not None else (batch.min, batch.opt, batch.max)
    channels = c or card.input_channels
    options = {
        f"trt_profile_{kind}_shapes": f"{input_name}:{b}x{height}x{width}x{channels}"
        for kind, b in (("min", lo), ("opt", opt), ("max", hi))
    }
    return TrtEpShape(options, hi, n is not None, (height, width))


def cuda_graph_output_shapes(
    input_shape: tuple[int, int, int, int], card: ModelCard, outputs: list[str]
) -> dict[str, tuple[int, ...]]:
    """Output buffer shapes for a CUDA graph, from the fixed input shape (tf2onnx may leave
    an output's dims symbolic, like ``unk__215``, even when the input is fixed)."""
    n, h, w, _ = input_shape
    classes = card.num_classes if card.output_kind == "softmax" else 1
    known = {"probs": (n, h, w, classes), "mask": (n, h, w)}
    return {name: known[name] for name in outputs}


def _provider_options(
    name: str, path: Path, card: ModelCard | None, trt_shape: TrtEpShape | None, options: OrtOptions
) -> list[tuple[str, dict[str, str]]]:
    """The provider list for one backend name, most specific first (CPU always last so
    nodes a GPU provider declines still run)."""
    cuda = {
        "device_id": str(options.device_id),
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
    }
    if options.cuda_graph:
        cuda["enable_cuda_graph"] = "1"
    providers: list[tuple[str, dict[str, str]]] = []
    if name == "ort-trt":
        cache = Path(options.trt_cache) if options.trt_cache else path.parent / ".trt-cache"
        trt = {
            "device_id": str(options.device_id),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": "1" if card is not None and card.precision == "fp16" else "0",
            **(trt_shape.options if trt_shape is not None else {}),
        }
        providers.append(("TensorrtExecutionProvider", trt))
    if name in ("ort-trt", "ort-cuda"):
        providers.append(("CUDAExecutionProvider", cuda))
    providers.append(("CPUExecutionProvider", {}))
    return providers


def _card_of(session: Any, path: Path) -> ModelCard:
    meta = session.get_modelmeta().custom_metadata_map
    if CARD_KEY not in meta:
        raise BackendError(f"{path}: no fcnx model card in its metadata (not exported by fcnx export onnx)")
    try:
        return ModelCard.from_json(meta[CARD_KEY], origin=f"{path} metadata")
    except CardError as exc:
        raise BackendError(str(exc)) from None


def check_graph(session: Any, card: ModelCard, path: Path) -> None:
    """The graph is what its card says: one uint8 NHWC image input with the card's channels,
    outputs ``probs`` (K = the card's classes, 1 for a sigmoid) and/or ``mask``. A file
    whose card and graph disagree would give wrong masks or tracebacks later."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if len(inputs) != 1:
        problems.append(
            f"the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), fcnx models one"
        )
    else:
        shape, kind = list(inputs[0].shape), inputs[0].type
        if kind != "tensor(uint8)" or len(shape) != 4:
            problems.append(f"its input {inputs[0].name!r} is {kind} of rank {len(shape)}, not uint8 NHWC")
        else:
            problems += input_contradictions(card, [d if isinstance(d, int) else None for d in shape])
    names = [o.name for o in outputs]
    if not names or not set(names) <= {"probs", "mask"}:
        problems.append(f"the graph's outputs are {names}, an fcnx model has probs and/or mask")
    for o in outputs:
        if o.name == "probs":
            classes = card.num_classes if card.output_kind == "softmax" else 1
            last = o.shape[-1] if o.shape else None
            if isinstance(last, int) and last != classes:
                problems.append(
                    f"the card says {classes} probability channels ({card.output_kind}), the graph has {last}"
                )
    if problems:
        raise BackendError(f"{path}: its fcnx card and its graph disagree: {'; '.join(problems)}")


def _peek(ort: Any, path: Path, batch: BatchProfile) -> tuple[ModelCard, TrtEpShape]:
    """Card and TensorRT EP profile from a plain CPU session, before the TensorRT EP session
    that needs them."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    card, image = _card_of(session, path), session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else None for d in image.shape)
    return card, trt_ep_shape(image.name, shape, card, batch, path)


class OrtBackend(Backend):
    """``infer(uint8 batch (N, H, W, C)) -> {"probs": float32 (N, H, W, K), "mask": uint8 (N, H, W)}``
    (whichever outputs the file has)."""

    def __init__(self, path: str | Path, name: str = "ort-cpu", options: OrtOptions | None = None) -> None:
        names = [s.name for s in backends_for("onnx")]
        if name not in names:
            raise BackendError(f"unknown onnxruntime backend {name!r}; one of {', '.join(names)}")
        super().__init__(path)
        ort = import_onnxruntime()
        self.options = options or OrtOptions()
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such ONNX file")
        provider = backend_spec(name).provider
        available = ort.get_available_providers()
        if provider not in available:
            raise BackendError(
                f"{name} needs onnxruntime's {provider}, which this install does not have "
                f"(available: {', '.join(available)})"
            )
        try:
            card, trt_shape = (
                _peek(ort, self.path, self.options.trt_batch) if name == "ort-trt" else (None, None)
            )
            providers = _provider_options(name, self.path, card, trt_shape, self.options)
            if name == "ort-trt":
                Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            self.session = ort.InferenceSession(
                str(self.path), session_options(ort, self.options), providers=providers
            )
        except BackendError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"{self.path}: onnxruntime cannot load it: {str(exc).strip()[:300]}") from None
        actual = self.session.get_providers()[0]
        if actual != provider:
            # onnxruntime drops a provider it cannot initialise (no GPU, missing TensorRT
            # libraries) and carries on with the next one: asked-for means asked-for.
            raise BackendError(
                f"{name}: onnxruntime could not start {provider} on this machine and would have run on "
                f"{actual} instead (check the GPU driver / CUDA / TensorRT libraries)"
            )
        self.name = name
        self.provider = actual
        self.card = _card_of(self.session, self.path)
        check_graph(self.session, self.card, self.path)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.max_batch: int | None = self.input_shape[0]
        self.fixed_batch = self.max_batch is not None
        self.input_hw: tuple[int | None, int | None] = (self.input_shape[1], self.input_shape[2])
        if trt_shape is not None:  # the TensorRT EP runs what its profile covers, nothing else
            self.max_batch, self.fixed_batch, self.input_hw = (
                trt_shape.max_batch,
                trt_shape.fixed_batch,
                trt_shape.input_hw,
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._on_gpu = name != "ort-cpu"
        self._graph_binding: tuple[Any, Any, list[Any]] | None = None
        if self.options.cuda_graph:
            self._graph_binding = self._bind_for_cuda_graph(ort)

    def _bind_for_cuda_graph(self, ort: Any) -> tuple[Any, Any, list[Any]]:
        """CUDA graphs replay fixed device addresses: input and outputs live in GPU
        buffers allocated once and bound once; each run only refills the input."""
        if self.name != "ort-cuda":
            raise BackendError("CUDA graphs are an ort-cuda option")
        if None in self.input_shape:
            raise BackendError(
                f"{self.path}: CUDA graphs need fixed shapes; export with --batch N (this file's input is "
                f"{self.input_shape})"
            )
        n, h, w, c = (int(d or 0) for d in self.input_shape)
        device = ("cuda", self.options.device_id)
        image = ort.OrtValue.ortvalue_from_numpy(np.zeros((n, h, w, c), np.uint8), *device)
        outputs = []
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, image)
        shapes = cuda_graph_output_shapes((n, h, w, c), self.card, self.output_names)
        for out in self.session.get_outputs():
            dtype = np.uint8 if out.type == "tensor(uint8)" else np.float32
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shapes[out.name]), dtype, *device)
            binding.bind_ortvalue_output(out.name, value)
            outputs.append(value)
        return binding, image, outputs

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._graph_binding is not None:
            binding, image, outputs = self._graph_binding
            image.update_inplace(np.ascontiguousarray(batch))
            self.session.run_with_iobinding(binding)
            return {name: value.numpy() for name, value in zip(self.output_names, outputs)}
        if not self._on_gpu:
            outputs = self.session.run(self.output_names, {self.input_name: batch})
            return dict(zip(self.output_names, outputs))
        # I/O binding: the uint8 batch is copied up once, outputs are allocated on the GPU
        # by onnxruntime and copied down once (1 byte per pixel for the mask).
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.options.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def _release(self) -> None:
        self.session = None
        self._graph_binding = None
