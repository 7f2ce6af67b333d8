"""The one base class every inference backend derives from, and its error types.

A backend takes a uint8 NHWC batch and returns the model's named outputs
(``"probs"`` float32 (N, H, W, K) and/or ``"mask"`` uint8 (N, H, W)). Everything
above it (Segmenter, the predict job, bench, parity) talks to this class only, so a
new engine is one new module and one row in ``registry.py``.

The base class owns what every backend shares: the closed state (a closed backend
refuses work with a clear error; ``close`` is idempotent), ``with backend: ...``, the
batch checks and ``infer_stream`` (one ``infer`` per batch; TensorRT overrides it with
double buffering).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from ..card import ModelCard


class BackendError(RuntimeError):
    """A backend that cannot be created or run; the message says why and what to do."""


class MissingExtra(BackendError):
    """An optional library fcnx needs here is not installed; the message has the pip line."""

    exit_code = 2


def check_batch(
    batch: np.ndarray, channels: int, input_hw: tuple[int | None, int | None], origin: str
) -> None:
    """The checks every backend makes before running: uint8, NHWC, channels and any fixed size."""
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise ValueError(f"{origin}: expected a uint8 batch (N, H, W, C), got {batch.dtype} {batch.shape}")
    want = (*input_hw, channels)
    for axis, (expected, actual) in enumerate(zip(want, batch.shape[1:]), start=1):
        if expected is not None and expected != actual:
            raise ValueError(
                f"{origin}: input axis {axis} must be {expected}, got {actual} (batch shape {batch.shape})"
            )


class Backend(ABC):
    """A loaded model on one engine. Subclasses set the attributes below in ``__init__``
    (after ``super().__init__(path)``) and implement ``_infer``; ``_release`` frees what
    they hold."""

    name: str  # the registry's name: "ort-cpu", "ort-cuda", "ort-trt", "ov-cpu", "trt", "keras", "keras-bf16"
    provider: str  # what actually runs it: "CPUExecutionProvider", "TensorRT 10.13.0", "keras 3.15.1 ..."
    card: ModelCard
    max_batch: int | None = None  # None: any batch size
    fixed_batch: bool = False  # True: every batch must have exactly max_batch images (pad the last one)
    input_hw: tuple[int | None, int | None] = (None, None)  # fixed spatial size, or None per dynamic axis
    preferred_batch: int | None = None  # the batch a Segmenter uses when none is given (a deploy's tuned one)
    output_names: list[str]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.notes: list[str] = []  # what load(backend="auto") skipped before this one, and why
        self._closed = False

    # -- what a backend implements ---------------------------------------------------------------

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one checked batch."""

    def _release(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to free)
        """Free the engine's resources (called once, by ``close``)."""

    # -- the shared behaviour ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{self.path}: this {self.name} backend is closed")

    def check(self, batch: np.ndarray) -> None:
        """Open, uint8 NHWC with the card's channels, any fixed size and batch respected."""
        self.check_open()
        check_batch(batch, self.card.input_channels, self.input_hw, str(self.path))
        if self.fixed_batch and batch.shape[0] != self.max_batch:
            raise ValueError(f"{self.path}: batch size must be {self.max_batch}, got {batch.shape[0]}")

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.check(batch)
        return self._infer(batch)

    @property
    def requests_in_flight(self) -> int:
        """Batches ``infer_stream`` keeps in flight at once (OpenVINO: its infer requests)."""
        return 1

    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Run batches in order, one ``infer`` each (TensorRT overlaps copies and compute,
        OpenVINO keeps several infer requests in flight)."""
        for batch in batches:
            yield self.infer(batch)

    def close(self) -> None:
        """Release the engine; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def native_size(backend: Backend, default: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) to feed a model when nothing else decides: its fixed input size, else the
    size its card was deployed at, else ``default`` (a fully convolutional model takes any)."""
    h, w = backend.input_hw
    if h is not None and w is not None:
        return h, w
    if backend.card.input_height and backend.card.input_width:
        return backend.card.input_height, backend.card.input_width
    return default
