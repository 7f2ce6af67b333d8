"""The OpenVINO backend (``ov-cpu``): an fcnx IR pair (``.xml`` + ``.bin``) on OpenVINO's CPU plugin.

- The pair is checked first (ov_ir.py: the ``.bin``'s sha256 is the one the ``.xml``
  records), then the card and the inference precision come from the IR's ``rt_info``.
- ``INFERENCE_PRECISION_HINT`` is always passed, from the card (``f32`` for FP32 and for
  INT8's float parts, ``bf16`` for BF16): OpenVINO's CPU plugin would otherwise pick
  bf16 by itself on CPUs with AVX512-BF16 or AMX and silently change an FP32 artifact.
  The precision is read back from the compiled model and reported in ``provider``; a
  BF16 artifact on a CPU without BF16 is an error, never FP32 run quietly.
- Static shapes: the model is reshaped to each batch shape it runs (the IR's own fixed
  batch, else the batch shape of each call; the spatial size is the graph's or the
  card's) and compiled once per shape with the throughput hint.
- ``infer_stream`` keeps several infer requests in flight (``AsyncInferQueue``), results
  yielded in input order, so ``fcnx predict`` overlaps decode, inference and encode.
- OpenVINO's model cache (``CACHE_DIR``) lives in the user's cache folder
  (``$XDG_CACHE_HOME/fcnx/openvino``, else ``~/.cache/fcnx/openvino``), never beside a
  possibly read-only model nor in an output folder; each compile's time and whether the
  cache was cold or warm go into ``notes`` and ``compiles``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..card import CardError, ModelCard, input_contradictions
from .base import Backend, BackendError, MissingExtra
from .ort import usable_cores
from .ov_ir import CARD_KEY, INFERENCE_PRECISION, PRECISION_KEY, bin_path, verify_pair

DEVICE = "CPU"
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16"}  # OpenVINO's element type name -> fcnx's


@dataclass(frozen=True)
class OvOptions:
    threads: int | None = None  # INFERENCE_NUM_THREADS; None: OpenVINO's choice (the usable cores)
    requests: int | None = None  # infer requests in flight in infer_stream; None: OpenVINO's optimal number
    batch: int = 1  # the batch compiled at load when the IR's batch axis is dynamic
    cache_dir: str | None = None  # OpenVINO model cache; None: cache_folder()


def import_openvino() -> Any:
    try:
        import openvino
    except ModuleNotFoundError:
        raise MissingExtra('openvino is not installed: pip install "fcnx[openvino]"') from None
    return openvino


def cache_folder() -> Path:
    """fcnx's OpenVINO model cache: ``$XDG_CACHE_HOME/fcnx/openvino`` or ``~/.cache/fcnx/openvino``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fcnx" / "openvino"


def ov_options(options: Any) -> OvOptions:
    """OvOptions as given, or the thread count of another backend's options (``fcnx predict
    --threads`` passes OrtOptions to whichever backend runs)."""
    if isinstance(options, OvOptions):
        return options
    return OvOptions(threads=getattr(options, "threads", None))


def bf16_supported(core: Any) -> bool:
    return "BF16" in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


@dataclass
class _Compiled:
    """One static shape: its compiled model, a request for ``infer`` and a queue for streams."""

    compiled: Any
    request: Any
    queue: Any = None


class OvBackend(Backend):
    """``infer(uint8 batch (N, H, W, C)) -> {"probs": float32 (N, H, W, K), "mask": uint8 (N, H, W)}``
    (whichever outputs the IR has)."""

    def __init__(self, path: str | Path, name: str = "ov-cpu", options: Any = None) -> None:
        if name != "ov-cpu":
            raise BackendError(f"unknown OpenVINO backend {name!r}; ov-cpu")
        super().__init__(path)
        self._ov = import_openvino()
        self.options = ov_options(options)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such OpenVINO IR file")
        info = verify_pair(self.path)
        try:
            self.card = ModelCard.from_json(info[CARD_KEY], origin=f"{self.path} rt_info")
        except CardError as exc:
            raise BackendError(str(exc)) from None
        self.hint = info.get(PRECISION_KEY) or INFERENCE_PRECISION.get(self.card.precision, "")
        if self.hint not in PRECISION_NAMES:
            raise BackendError(
                f"{self.path}: inference precision {self.hint!r} in its rt_info; fcnx runs "
                f"{', '.join(PRECISION_NAMES)}"
            )
        self.core = self._ov.Core()
        if self.hint == "bf16" and not bf16_supported(self.core):
            capabilities = ", ".join(self.core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
            raise BackendError(
                f"{self.path}: a BF16 artifact, and this CPU has no BF16 support (OpenVINO's CPU "
                f"capabilities: {capabilities}); use the FP32 or INT8 export here"
            )
        self.cache_dir = Path(self.options.cache_dir) if self.options.cache_dir else cache_folder()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        try:
            self._model = self.core.read_model(str(self.path), str(bin_path(self.path)))
        except Exception as exc:  # OpenVINO raises its own types
            raise BackendError(f"{self.path}: OpenVINO cannot read it: {str(exc).strip()[:300]}") from None
        self._check_graph()
        self.name = name
        self.output_names = [o.get_any_name() for o in self._model.outputs]
        shape = self._model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.max_batch: int | None = dims[0]
        self.fixed_batch = dims[0] is not None
        height = dims[1] or self.card.input_height
        width = dims[2] or self.card.input_width
        self.input_hw: tuple[int | None, int | None] = (height, width)
        self.compiles: list[dict[str, Any]] = []
        self._compiled: dict[tuple[int, ...], _Compiled] = {}
        self.provider = ""
        if height is not None and width is not None:  # compile now: errors and the precision up front
            self._compiled_for((dims[0] or self.options.batch, height, width, self.card.input_channels))

    def _check_graph(self) -> None:
        """The IR is what its card says: one uint8 NHWC input, outputs probs and/or mask."""
        inputs, outputs = self._model.inputs, self._model.outputs
        problems = []
        if len(inputs) != 1:
            problems.append(f"the graph has {len(inputs)} inputs, fcnx models one")
        else:
            shape = inputs[0].get_partial_shape()
            if inputs[0].get_element_type() != self._ov.Type.u8 or shape.rank.get_length() != 4:
                problems.append(f"its input is {inputs[0].get_element_type()} {shape}, not uint8 NHWC")
            else:
                dims = [d.get_length() if d.is_static else None for d in shape]
                problems += input_contradictions(self.card, dims)
        names = [o.get_any_name() for o in outputs]
        if not names or not set(names) <= {"probs", "mask"}:
            problems.append(f"the graph's outputs are {names}, an fcnx model has probs and/or mask")
        if problems:
            raise BackendError(f"{self.path}: its fcnx card and its graph disagree: {'; '.join(problems)}")

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as a shape already compiled: a smaller batch of a compiled image size is
        padded (its last image repeated) to the nearest compiled batch, not compiled anew (the
        last, partial batch of each image or strip would otherwise compile, and keep, a model
        and its infer requests per remainder); the caller keeps the first ``len(batch)``."""
        n, rest = batch.shape[0], tuple(batch.shape[1:])
        larger = sorted(s[0] for s in self._compiled if s[1:] == rest and s[0] > n)
        if tuple(batch.shape) in self._compiled or not larger:
            return batch
        return np.concatenate([batch, np.repeat(batch[-1:], larger[0] - n, axis=0)])

    def _compiled_for(self, shape: tuple[int, ...]) -> _Compiled:
        """The compiled model for one static input shape (compiled on first use)."""
        entry = self._compiled.get(shape)
        if entry is not None:
            return entry
        self._model.reshape({self._model.inputs[0]: self._ov.PartialShape(list(shape))})
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "THROUGHPUT"}
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = self.options.threads
            if self.options.threads < usable_cores():
                # a share of the machine (Ray workers, --threads): OpenVINO pins its threads to the
                # first cores, so two 1-thread processes would share one core (measured: half speed each)
                config["ENABLE_CPU_PINNING"] = False
        before = set(self.cache_dir.iterdir())
        started = time.perf_counter()
        try:
            compiled = self.core.compile_model(self._model, DEVICE, config)
        except Exception as exc:
            raise BackendError(f"{self.path}: OpenVINO cannot compile it: {str(exc).strip()[:300]}") from None
        seconds = time.perf_counter() - started
        cache = "cold" if set(self.cache_dir.iterdir()) - before else "warm"
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if ran != self.hint:
            raise BackendError(
                f"{self.path}: asked OpenVINO for {self.hint} inference and it compiled {ran}; not running it"
            )
        streams = int(compiled.get_property("NUM_STREAMS"))
        self.precision_run = PRECISION_NAMES[ran]
        self.provider = (
            f"OpenVINO {self._ov.get_version().split('-')[0]} CPU ({ran} inference, {streams} streams)"
        )
        self.compiles.append(
            {"shape": list(shape), "seconds": round(seconds, 3), "cache": cache, "precision": ran}
        )
        self.notes.append(
            f"compiled {'x'.join(map(str, shape))} in {seconds:.2f} s (model cache {cache}: {self.cache_dir})"
        )
        entry = _Compiled(compiled, compiled.create_infer_request())
        self._compiled[shape] = entry
        return entry

    @property
    def requests_in_flight(self) -> int:
        """Infer requests ``infer_stream`` keeps in flight (OpenVINO's optimal number by default)."""
        if self.options.requests:
            return self.options.requests
        entry = next(iter(self._compiled.values()), None)
        return int(entry.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if entry else 2

    def _outputs(self, request: Any) -> dict[str, np.ndarray]:
        """The request's outputs, copied (its tensors are reused by the next inference)."""
        return {
            name: np.array(request.get_output_tensor(i).data, copy=True)
            for i, name in enumerate(self.output_names)
        }

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        batch = self._padded(batch)
        entry = self._compiled_for(tuple(batch.shape))
        entry.request.infer({0: batch})
        return {k: v[:n] for k, v in self._outputs(entry.request).items()}

    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """``infer`` for each batch, results in input order, with up to ``requests_in_flight`` batches
        in flight at once (a new batch shape first finishes the batches of the last one)."""
        self.check_open()
        done: dict[int, dict[str, np.ndarray] | BaseException] = {}
        lock = threading.Lock()
        next_out = 0
        current: _Compiled | None = None

        counts: dict[int, int] = {}  # images of each batch (before any padding)

        def finished(request: Any, index: int) -> None:
            try:
                n = counts.pop(index)
                result: dict[str, np.ndarray] | BaseException = {
                    k: v[:n] for k, v in self._outputs(request).items()
                }
            except BaseException as exc:  # handed to the consumer, in order
                result = exc
            with lock:
                done[index] = result

        def ready() -> Iterator[dict[str, np.ndarray]]:
            nonlocal next_out
            while True:
                with lock:
                    result = done.pop(next_out, None)
                if result is None:
                    return
                if isinstance(result, BaseException):
                    raise result
                next_out += 1
                yield result

        try:
            for index, batch in enumerate(batches):
                self.check(batch)
                counts[index] = len(batch)
                batch = self._padded(batch)
                entry = self._compiled_for(tuple(batch.shape))
                if entry is not current:
                    if current is not None:
                        current.queue.wait_all()
                        yield from ready()
                    if entry.queue is None:
                        entry.queue = self._ov.AsyncInferQueue(entry.compiled, self.requests_in_flight)
                    entry.queue.set_callback(finished)  # this stream's results (the queue is idle)
                    current = entry
                current.queue.start_async({0: batch}, index)
                yield from ready()
        finally:
            if current is not None:
                current.queue.wait_all()
        yield from ready()

    def _release(self) -> None:
        for entry in self._compiled.values():
            if entry.queue is not None:
                entry.queue.wait_all()
        self._compiled = {}
        self._model = None
        self.core = None
