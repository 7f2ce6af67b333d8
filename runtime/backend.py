"""The one protocol every inference backend follows, and its error type.

A backend takes a uint8 NHWC batch and returns the model's named outputs
(``"probs"`` float32 (N, H, W, K) and/or ``"mask"`` uint8 (N, H, W)). Everything
above it (Segmenter, the folder pipeline, bench, parity) talks to this protocol
only, so a new engine is one new module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from .card import ModelCard


class BackendError(RuntimeError):
    """A backend that cannot be created or run; the message says why and what to do."""


@runtime_checkable
class Backend(Protocol):
    name: str  # "ort-cpu" | "ort-cuda" | "ort-trt" | "trt" | "keras"
    provider: (
        str  # what actually runs it: "CPUExecutionProvider", "TensorRT 10.13.0", "keras 3.15.1 (tensorflow)"
    )
    card: ModelCard
    max_batch: int | None  # None: any batch size
    fixed_batch: bool  # True: every batch must have exactly max_batch images (pad the last one)
    input_hw: tuple[int | None, int | None]  # fixed spatial size, or None per dynamic axis
    output_names: list[str]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


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


def native_size(backend: Backend, default: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) to feed a model when nothing else decides: its fixed input size, else the
    size its card was deployed at, else ``default`` (a fully convolutional model takes any)."""
    h, w = backend.input_hw
    if h is not None and w is not None:
        return h, w
    if backend.card.input_height and backend.card.input_width:
        return backend.card.input_height, backend.card.input_width
    return default


def infer_stream(backend: Backend, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Run batches in order. A backend with its own ``infer_stream`` (TensorRT's double
    buffering: the next batch's copies overlap this one's compute) is used as such;
    otherwise one ``infer`` per batch."""
    own = getattr(backend, "infer_stream", None)
    if own is not None:
        yield from own(batches)
        return
    for batch in batches:
        yield backend.infer(batch)
