"""Buffer planning and double buffering for the TensorRT backend, in plain Python.

Everything the TensorRT backend decides without touching the GPU lives here, so CPU
tests cover it: which engine tensors fcnx expects and with which dtype and shape,
how many bytes each needs at the profile's max batch, how many rows a batch runs
as, and the order of work that overlaps the host's copies with the GPU's compute
(two slots; while one computes, the other is filled and enqueued).
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..base import BackendError
from .sidecar import BatchProfile, EngineSidecar

SLOTS = 2
STREAMS = ("upload", "compute", "download")  # one CUDA stream each, linked by a slot's events
OUTPUT_DTYPES = {"probs": np.dtype(np.float32), "mask": np.dtype(np.uint8)}


@dataclass(frozen=True)
class EngineTensor:
    """One engine I/O tensor as TensorRT describes it: -1 on dynamic axes."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TensorPlan:
    """One tensor's buffer: its shape at the profile's max batch (no -1 left)."""

    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]

    def shape_for(self, rows: int) -> tuple[int, ...]:
        return (rows, *self.max_shape[1:])

    def nbytes_for(self, rows: int) -> int:
        return int(np.prod(self.shape_for(rows), dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.nbytes_for(self.max_shape[0])


@dataclass(frozen=True)
class BufferPlan:
    """The engine's one uint8 NHWC input and its probs/mask outputs, sized for one slot."""

    engine_path: str
    input: TensorPlan
    outputs: tuple[TensorPlan, ...]
    batch: BatchProfile

    @property
    def tensors(self) -> tuple[TensorPlan, ...]:
        return (self.input, *self.outputs)

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def rows_for(self, batch_size: int) -> int:
        """The batch size the engine runs a batch of ``batch_size`` images as: the profile
        minimum for a smaller batch (the extra rows are zeros, their outputs dropped)."""
        if batch_size > self.batch.max:
            raise ValueError(
                f"{self.engine_path}: batch of {batch_size} is over the engine's max batch {self.batch.max} "
                f"(profile {self.batch}); split it into batches of at most {self.batch.max} "
                "(Segmenter does this)"
            )
        return max(batch_size, self.batch.min)


def _resolve(dims: tuple[int, ...], want: tuple[int, ...], what: str, engine_path: str) -> tuple[int, ...]:
    """Fill each -1 in the engine's dims with the wanted size; any fixed size must match it."""
    if len(dims) != len(want):
        raise BackendError(f"{engine_path}: {what} has rank {len(dims)} {dims}, expected rank {len(want)}")
    for axis, (have, expected) in enumerate(zip(dims, want)):
        if have not in (-1, expected):
            raise BackendError(
                f"{engine_path}: {what} axis {axis} is {have}, expected {expected} (shape {dims})"
            )
    return want


def plan_buffers(specs: Iterable[EngineTensor], sidecar: EngineSidecar, engine_path: str) -> BufferPlan:
    """Check the engine's tensors are what fcnx built and size them at the profile's max batch."""
    specs = list(specs)
    inputs = [s for s in specs if s.is_input]
    outputs = [s for s in specs if not s.is_input]
    if len(inputs) != 1:
        raise BackendError(
            f"{engine_path}: expected exactly one input tensor, the engine has {[s.name for s in inputs]}"
        )
    image = inputs[0]
    if image.name != sidecar.input_name:
        raise BackendError(
            f"{engine_path}: input tensor is {image.name!r}, its sidecar says {sidecar.input_name!r}"
        )
    if image.dtype != np.uint8:
        raise BackendError(
            f"{engine_path}: input {image.name!r} must be uint8 NHWC images, got {image.dtype}"
        )
    max_batch = sidecar.batch.max
    h, w, c = sidecar.input_shape
    input_plan = TensorPlan(
        image.name,
        True,
        image.dtype,
        _resolve(image.shape, (max_batch, h, w, c), f"input {image.name!r} (N, H, W, C)", engine_path),
    )
    if not outputs:
        raise BackendError(f"{engine_path}: the engine has no output tensors")
    names = [s.name for s in outputs]
    if set(names) != set(sidecar.outputs):
        raise BackendError(f"{engine_path}: outputs are {names}, its sidecar says {list(sidecar.outputs)}")
    classes = sidecar.card.num_classes if sidecar.card.output_kind == "softmax" else 1
    output_plans = []
    for spec in outputs:
        if spec.name not in OUTPUT_DTYPES:
            raise BackendError(
                f"{engine_path}: unknown output {spec.name!r}; fcnx engines have {', '.join(OUTPUT_DTYPES)}"
            )
        if spec.dtype != OUTPUT_DTYPES[spec.name]:
            raise BackendError(
                f"{engine_path}: output {spec.name!r} must be {OUTPUT_DTYPES[spec.name]}, got {spec.dtype}"
            )
        want = (max_batch, h, w, classes) if spec.name == "probs" else (max_batch, h, w)
        label = f"output {spec.name!r} " + ("(N, H, W, K)" if spec.name == "probs" else "(N, H, W)")
        output_plans.append(
            TensorPlan(spec.name, False, spec.dtype, _resolve(spec.shape, want, label, engine_path))
        )
    return BufferPlan(engine_path, input_plan, tuple(output_plans), sidecar.batch)


def host_array(address: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A numpy view of ``shape`` elements of ``dtype`` at a raw host address (pinned memory).
    The caller keeps the memory alive for as long as the array is used."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (ctypes.c_uint8 * nbytes).from_address(address)
    return np.ctypeslib.as_array(raw).view(dtype).reshape(shape)


@dataclass
class Slot:
    """One of the two buffer sets: a pinned host array and a device pointer per tensor,
    the event recorded after its outputs are copied back, and its batch in flight."""

    index: int
    host: dict[str, np.ndarray] = field(default_factory=dict)
    host_ptr: dict[str, int] = field(default_factory=dict)
    device_ptr: dict[str, int] = field(default_factory=dict)
    uploaded: Any = None  # recorded on the upload stream after the input copy
    computed: Any = None  # recorded on the compute stream after the engine ran
    event: Any = None  # "done": recorded on the download stream after the outputs are back
    images: int = 0  # images of the batch in this slot (its outputs are sliced to this)
    rows: int = 0  # rows the engine ran (>= images: the profile minimum)


def double_buffered(
    batches: Iterable[np.ndarray],
    slots: list[Slot],
    submit: Callable[[Slot, np.ndarray], None],
    collect: Callable[[Slot], dict[str, np.ndarray]],
    drain: Callable[[], None],
) -> Generator[dict[str, np.ndarray], None, None]:
    """Results of ``batches`` in order, two in flight: batch i+1 is copied into the other
    slot and enqueued before batch i is waited for and collected.

    ``submit`` fills a slot and enqueues its work; ``collect`` waits for that slot's work
    and returns copies of its outputs; ``drain`` waits for all work. It runs when the
    stream ends early (the consumer stopped, a batch or a call failed), so no work is
    left writing into a slot that a later call fills again.
    """
    if len(slots) != SLOTS:
        raise ValueError(f"double buffering needs {SLOTS} slots, got {len(slots)}")
    in_flight: deque[Slot] = deque()
    finished = False
    try:
        for i, batch in enumerate(batches):
            slot = slots[i % SLOTS]
            submit(slot, batch)
            in_flight.append(slot)
            if len(in_flight) == SLOTS:
                yield collect(in_flight.popleft())
        while in_flight:
            yield collect(in_flight.popleft())
        finished = True
    finally:
        if not finished:
            drain()
