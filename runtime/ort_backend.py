"""The onnxruntime backend: an ONNX file with its model card, on the CPU, CUDA or
TensorRT execution provider. Reads the card through onnxruntime's model metadata,
so it needs neither the onnx package nor TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .card import CardError, ModelCard

CARD_KEY = "fcnx.card"
PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}


class BackendError(RuntimeError):
    """A backend that cannot be created or run; the message says why and what to do."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise BackendError(
            'onnxruntime is not installed: pip install "fcnx[cpu]" (or "fcnx[gpu]" on an NVIDIA GPU machine)'
        ) from None
    return onnxruntime


def _usable_cores() -> int:
    """Cores this process may run on (containers and taskset limit them below os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OrtBackend:
    """``infer(uint8 batch (N, H, W, C)) -> {"probs": float32 (N, H, W, K), "mask": uint8 (N, H, W)}``
    (whichever outputs the file has)."""

    def __init__(self, path: str | Path, name: str = "ort-cpu", threads: int | None = None) -> None:
        if name not in PROVIDERS:
            raise BackendError(f"unknown onnxruntime backend {name!r}; one of {', '.join(PROVIDERS)}")
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: no such ONNX file")
        provider = PROVIDERS[name]
        if provider not in ort.get_available_providers():
            raise BackendError(
                f"{name} needs onnxruntime's {provider}, which this install does not have "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _usable_cores()
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"{self.path}: onnxruntime cannot load it: {str(exc).strip()[:300]}") from None
        self.name = name
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY not in meta:
            raise BackendError(
                f"{self.path}: no fcnx model card in its metadata (not exported by fcnx export onnx)"
            )
        try:
            self.card = ModelCard.from_json(meta[CARD_KEY], origin=f"{self.path} metadata")
        except CardError as exc:
            raise BackendError(str(exc)) from None
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.max_batch: int | None = self.input_shape[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.dtype != np.uint8 or batch.ndim != 4:
            raise ValueError(f"expected a uint8 batch (N, H, W, C), got {batch.dtype} {batch.shape}")
        expected = self.input_shape
        for axis, (want, have) in enumerate(zip(expected, batch.shape)):
            if want is not None and want != have:
                raise ValueError(
                    f"{self.path}: input axis {axis} must be {want}, got {have} (batch shape {batch.shape})"
                )
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self.session = None
