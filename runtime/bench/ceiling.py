"""The machine's measured peak: the best GFLOP/s of one large matrix multiply, the
ceiling a model's achieved GFLOP/s is a fraction of.

CPU: an FP32 ``size`` x ``size`` matmul through numpy (its BLAS) and through
onnxruntime's own MatMul kernel; the peak is the better of the two. GPU: an FP16
matmul through onnxruntime's CUDA provider (tensor cores), operands and result bound
on the device so no copy is timed. Each path is called repeatedly for ``seconds`` after
one warm-up call and its best (minimum) time is kept: the best run is the one the
machine's noise disturbed least. One matmul is 2 * size**3 FLOPs.

The runtime never imports onnx, so the one-node MatMul models ship pre-serialized in
``data/`` (written by fcnx.export.ceiling_models, dimensions symbolic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import BackendError
from ..backends.ort import OrtOptions, import_onnxruntime, session_options, usable_cores
from ..data import data_file
from .timing import best_seconds


def ceiling_model_path(precision: str) -> Path:
    """``data/matmul_fp32.onnx`` or ``data/matmul_fp16.onnx``: C = A @ B, any sizes."""
    return data_file(f"matmul_{precision}.onnx", "python -m fcnx.export.ceiling_models runtime/data")


def matmul_flops(size: int) -> int:
    """FLOPs of one (size x size) @ (size x size) product: a multiply-add is 2."""
    return 2 * size**3


class OrtMatmul:
    """C = A @ B on one onnxruntime provider, A, B and C bound once through I/O binding
    (on the device for CUDA), so ``run`` times the MatMul kernel and nothing else."""

    def __init__(self, a: np.ndarray, b: np.ndarray, device: str = "cpu", device_id: int = 0) -> None:
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
            raise ValueError(
                f"need (M, K) @ (K, N) of one dtype, got {a.shape} {a.dtype} @ {b.shape} {b.dtype}"
            )
        precision = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16"}.get(a.dtype)
        if precision is None:
            raise ValueError(f"the ceiling models are float32 or float16, got {a.dtype}")
        ort = import_onnxruntime()
        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
        options = session_options(ort, OrtOptions())
        provider_options = {"device_id": str(device_id)} if device == "cuda" else {}
        self.path = ceiling_model_path(precision)
        self.session = ort.InferenceSession(str(self.path), options, providers=[(provider, provider_options)])
        actual = self.session.get_providers()[0]
        if actual != provider:
            raise BackendError(f"{self.path}: onnxruntime ran it on {actual}, not the asked-for {provider}")
        self.provider = actual
        self._values = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, device_id) for x in (a, b)
        ]
        self._c = ort.OrtValue.ortvalue_from_shape_and_type(
            [a.shape[0], b.shape[1]], a.dtype, device, device_id
        )
        self._binding = self.session.io_binding()
        self._binding.bind_ortvalue_input("A", self._values[0])
        self._binding.bind_ortvalue_input("B", self._values[1])
        self._binding.bind_ortvalue_output("C", self._c)

    def run(self) -> None:
        """One product; returns when it is done (onnxruntime synchronizes the provider after a run)."""
        self.session.run_with_iobinding(self._binding)

    def result(self) -> np.ndarray:
        """C, copied to the host."""
        return np.asarray(self._c.numpy())


def _operands(size: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Seeded N(0, 1) operands: in FP16 a row times a column stays far below its 65504 limit."""
    rng = np.random.default_rng(0)
    a: np.ndarray = rng.standard_normal((size, size), dtype=np.float32).astype(dtype)
    b: np.ndarray = rng.standard_normal((size, size), dtype=np.float32).astype(dtype)
    return a, b


def _gflops(size: int, seconds: float) -> float:
    return matmul_flops(size) / seconds / 1e9


def cpu_ceiling(seconds: float = 3.0, size: int = 2048) -> dict[str, Any]:
    """Best FP32 GFLOP/s of a ``size`` x ``size`` matmul through numpy and through
    onnxruntime's CPU MatMul, each timed for ``seconds``; ``peak_gflops`` is the better."""
    a, b = _operands(size, np.float32)
    out = np.empty((size, size), np.float32)
    numpy_gflops = _gflops(size, best_seconds(lambda: np.matmul(a, b, out=out), seconds))
    ort_matmul = OrtMatmul(a, b, "cpu")
    ort_gflops = _gflops(size, best_seconds(ort_matmul.run, seconds))
    return {
        "numpy_gflops": round(numpy_gflops, 1),
        "onnxruntime_gflops": round(ort_gflops, 1),
        "peak_gflops": round(max(numpy_gflops, ort_gflops), 1),
        "method": (
            f"best time of repeated {size}x{size} FP32 matmuls (2*size^3 FLOPs), {seconds:g} s per path: "
            f"numpy.matmul (its BLAS) and onnxruntime CPUExecutionProvider MatMul "
            f"({usable_cores()} intra-op threads, I/O bound); peak = the better"
        ),
        "size": size,
        "precision": "fp32",
        "threads": usable_cores(),
    }


def cuda_unavailable_reason(device_id: int = 0) -> str | None:
    """Why gpu_ceiling cannot run here (no onnxruntime, no CUDA provider, no GPU), or None."""
    try:
        ort = import_onnxruntime()
    except BackendError as exc:
        return str(exc)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime CUDA provider not available"
    try:
        tiny = np.ones((8, 8), np.float16)
        OrtMatmul(tiny, tiny, "cuda", device_id).run()
    except Exception as exc:  # onnxruntime raises its own types; a missing driver is one of them
        return f"onnxruntime CUDA provider cannot run here: {str(exc).strip()[:300]}"
    return None


def gpu_ceiling(seconds: float = 3.0, size: int = 8192, device_id: int = 0) -> dict[str, Any] | None:
    """Best FP16 GFLOP/s of a ``size`` x ``size`` matmul on the GPU through onnxruntime's
    CUDA provider (cuBLAS, tensor cores), operands and result on the device. None when
    the CUDA provider cannot run here; ``cuda_unavailable_reason()`` says why."""
    if cuda_unavailable_reason(device_id) is not None:
        return None
    a, b = _operands(size, np.float16)
    ort_matmul = OrtMatmul(a, b, "cuda", device_id)
    ort_gflops = _gflops(size, best_seconds(ort_matmul.run, seconds))
    return {
        "onnxruntime_gflops": round(ort_gflops, 1),
        "peak_gflops": round(ort_gflops, 1),
        "method": (
            f"best time of repeated {size}x{size} FP16 matmuls (2*size^3 FLOPs) for {seconds:g} s: "
            f"onnxruntime CUDAExecutionProvider MatMul, A, B and C bound on cuda:{device_id}"
        ),
        "size": size,
        "precision": "fp16",
        "device_id": device_id,
    }
