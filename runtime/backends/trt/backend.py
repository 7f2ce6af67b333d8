"""The native TensorRT backend (``trt``): a ``model.engine`` run with TensorRT's named-tensor
API, pinned host buffers, double buffering, and separate upload / compute / download CUDA
streams linked by events (so batch i+1's upload overlaps batch i's compute).

Written to the documented TensorRT 10/11 Python API and cuda-python's runtime module,
and kept thin: the sidecar check, the tensor checks and sizes, the batch rows and the
order of the double-buffered work are plain functions (sidecar.py, buffers.py)
that CPU tests cover. TensorRT cannot be installed on fcnx's CI or development
machines, so the calls here run against a recording stand-in there, and against the
real library only in the ``tensorrt``-marked test.

Order of loading: the sidecar first, then this machine's TensorRT version and GPU
are checked against it; only a compatible engine is deserialized (a plan built for
another TensorRT or GPU kind fails to load with little explanation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...card import CardError, ModelCard
from ..base import Backend, BackendError
from .buffers import SLOTS, STREAMS, BufferPlan, EngineTensor, Slot, double_buffered, host_array, plan_buffers
from .cuda import check_cuda, gpu_identity, import_cudart, import_tensorrt, stream_handle
from .sidecar import EngineMismatch, EngineSidecar, check_compatible, read_sidecar


def load_sidecar(engine_path: Path) -> EngineSidecar:
    """The engine's sidecar; without a readable one the engine cannot be checked, so it is not loaded."""
    try:
        return read_sidecar(engine_path)
    except CardError as exc:
        raise EngineMismatch(str(exc)) from None


def engine_tensors(trt: Any, engine: Any) -> list[EngineTensor]:
    """The engine's I/O tensors as plain descriptions (name, input?, numpy dtype, shape with -1)."""
    specs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype))
        except TypeError:
            raise BackendError(
                f"tensor {name!r} has type {trt_dtype}, which has no numpy equivalent"
            ) from None
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        specs.append(EngineTensor(name, is_input, dtype, shape))
    return specs


class TrtBackend(Backend):
    """``infer(uint8 batch (N, H, W, C)) -> {"probs": float32 (N, H, W, K), "mask": uint8 (N, H, W)}``
    (whichever outputs the engine has), for N up to the engine profile's max batch."""

    name = "trt"
    plan: BufferPlan  # set once the engine is deserialized

    def __init__(self, path: str | Path, name: str = "trt", options: Any = None) -> None:
        super().__init__(path)
        self._streaming = False
        self._slots: list[Slot] = []
        self._streams: dict[str, Any] = {}  # STREAMS: upload, compute, download
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._logger: Any = None
        self.output_names: list[str] = []
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such engine file")
        self.sidecar = load_sidecar(self.path)
        trt = import_tensorrt()
        self._cuda = import_cudart()
        gpu_name, capability = gpu_identity(self._cuda)
        self.warnings: list[str] = check_compatible(
            self.sidecar, self.path, str(trt.__version__), capability, gpu_name
        )
        h, w, _ = self.sidecar.input_shape
        self.card: ModelCard = self.sidecar.card
        self.provider = f"TensorRT {trt.__version__}"
        self.max_batch: int | None = self.sidecar.batch.max
        self.fixed_batch = False  # any batch up to max_batch: one under the profile minimum is padded here
        self.input_hw: tuple[int | None, int | None] = (h, w)

        try:
            self._load(trt)
        except BaseException:
            with contextlib.suppress(BackendError):
                self.close()
            raise

    def _load(self, trt: Any) -> None:
        """Deserialize, check the engine's tensors against the sidecar, allocate the buffers."""
        # TensorRT's logger must outlive every object created through the runtime
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"{self.path}: TensorRT {trt.__version__} could not deserialize it (see its log above). "
                f"Rebuild with: {self.sidecar.rebuild_command(self.path)}"
            )
        try:
            specs = engine_tensors(trt, self._engine)
        except BackendError as exc:
            raise BackendError(f"{self.path}: {exc}") from None
        self.plan = plan_buffers(specs, self.sidecar, str(self.path))
        self.output_names = self.plan.output_names
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(
                f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)"
            )
        self._allocate()

    # -- the CUDA calls, each checked -------------------------------------------------

    def _call(self, function: str, *args: Any) -> Any:
        return check_cuda(getattr(self._cuda, function)(*args), f"{self.path}: {function}")

    def _allocate(self) -> None:
        """Three non-blocking streams (upload, compute, download, linked by events, as
        trtexec does: batch i+1's upload overlaps batch i's compute and download); per slot a
        pinned host and a device buffer per tensor (sized at the profile's max batch) and its
        three events: uploaded, computed, done."""
        for role in STREAMS:
            self._streams[role] = self._call("cudaStreamCreateWithFlags", self._cuda.cudaStreamNonBlocking)
        for index in range(SLOTS):
            slot = Slot(index)
            self._slots.append(slot)
            for tensor in self.plan.tensors:
                slot.host_ptr[tensor.name] = self._call("cudaMallocHost", tensor.nbytes)
                slot.host[tensor.name] = host_array(
                    slot.host_ptr[tensor.name], tensor.dtype, tensor.max_shape
                )
                slot.device_ptr[tensor.name] = self._call("cudaMalloc", tensor.nbytes)
            slot.uploaded = self._call("cudaEventCreate")
            slot.computed = self._call("cudaEventCreate")
            slot.event = self._call("cudaEventCreate")

    def _submit(self, slot: Slot, batch: np.ndarray) -> None:
        """Copy the batch into the slot's pinned input and enqueue: upload, execute, download, event."""
        self.check(batch)
        images = batch.shape[0]
        rows = self.plan.rows_for(images) if images else 0
        slot.images, slot.rows = images, rows
        if not images:
            return
        source = self.plan.input
        host_input = slot.host[source.name]
        host_input[:images] = batch
        if rows > images:
            host_input[images:rows] = 0
        if not self._context.set_input_shape(source.name, source.shape_for(rows)):
            raise BackendError(f"{self.path}: TensorRT refused input shape {source.shape_for(rows)}")
        for tensor in self.plan.tensors:
            if not self._context.set_tensor_address(tensor.name, slot.device_ptr[tensor.name]):
                raise BackendError(f"{self.path}: TensorRT refused the buffer address for {tensor.name!r}")
        kinds, upload, compute, download = self._cuda.cudaMemcpyKind, *(self._streams[r] for r in STREAMS)
        self._copy(slot.device_ptr[source.name], slot.host_ptr[source.name], source.nbytes_for(rows),
                   kinds.cudaMemcpyHostToDevice, upload)  # fmt: skip
        self._call("cudaEventRecord", slot.uploaded, upload)
        self._call("cudaStreamWaitEvent", compute, slot.uploaded, 0)
        if not self._context.execute_async_v3(stream_handle(compute)):
            raise BackendError(
                f"{self.path}: TensorRT could not enqueue a batch of {rows} (see its log above)"
            )
        self._call("cudaEventRecord", slot.computed, compute)
        self._call("cudaStreamWaitEvent", download, slot.computed, 0)
        for tensor in self.plan.outputs:
            self._copy(slot.host_ptr[tensor.name], slot.device_ptr[tensor.name], tensor.nbytes_for(rows),
                       kinds.cudaMemcpyDeviceToHost, download)  # fmt: skip
        self._call("cudaEventRecord", slot.event, download)

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any, stream: Any) -> None:
        """One asynchronous copy (pinned host <-> device) on ``stream``."""
        self._call("cudaMemcpyAsync", dst, src, nbytes, kind, stream)

    def _collect(self, slot: Slot) -> dict[str, np.ndarray]:
        """Wait for the slot's batch; copies of its outputs (the pinned buffers are reused)."""
        self.check_open()
        if slot.images:
            self._call("cudaEventSynchronize", slot.event)
        return {t.name: slot.host[t.name][: slot.images].copy() for t in self.plan.outputs}

    def _drain(self) -> None:
        """Wait for all work after a failure or an early stop; the error that got us here is
        the one to report, so a failure to wait is not raised over it."""
        for stream in self._streams.values():
            with contextlib.suppress(BackendError):
                self._call("cudaStreamSynchronize", stream)

    # -- the Backend protocol ----------------------------------------------------------

    def _check_usable(self) -> None:
        self.check_open()
        if self._streaming:
            raise BackendError(
                f"{self.path}: an infer_stream() is running on this backend; finish or close it first"
            )

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One batch through slot 0 (the checks are ``_submit``'s, before any copy)."""
        self._check_usable()
        return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        slot = self._slots[0]
        try:
            self._submit(slot, batch)
            return self._collect(slot)
        except BaseException:
            self._drain()
            raise

    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """``infer`` for each batch, in order, with batch i+1's copy and enqueue
        overlapping batch i's compute."""
        self._check_usable()
        self._streaming = True
        try:
            yield from double_buffered(batches, self._slots, self._submit, self._collect, self._drain)
        finally:
            self._streaming = False

    def _release(self) -> None:
        """Wait for the GPU, then free every buffer, event and the stream once."""
        failures: list[str] = []

        def release(function: str, *args: Any) -> None:
            try:
                self._call(function, *args)
            except BackendError as exc:
                failures.append(str(exc))

        for stream in self._streams.values():
            release("cudaStreamSynchronize", stream)
        self._context = None  # TensorRT objects go context, engine, runtime, logger
        self._engine = None
        self._runtime = None
        self._logger = None
        for slot in self._slots:
            slot.host.clear()  # views of the pinned memory freed next
            for pointer in slot.host_ptr.values():
                release("cudaFreeHost", pointer)
            for pointer in slot.device_ptr.values():
                release("cudaFree", pointer)
            for event in (slot.uploaded, slot.computed, slot.event):
                if event is not None:
                    release("cudaEventDestroy", event)
        self._slots = []
        for stream in self._streams.values():
            release("cudaStreamDestroy", stream)
        self._streams = {}
        if failures:
            raise BackendError(f"{self.path}: closing the TensorRT backend: {'; '.join(failures)}")
