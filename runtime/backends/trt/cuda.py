"""The NVIDIA libraries the runtime touches, imported lazily, and which GPU this is.

TensorRT and cuda-python are optional (the ``tensorrt`` extra) and only work on a
machine with an NVIDIA GPU. Both the engine builder (fcnx.export) and the TensorRT
backend import them through here, so a missing library is always the same one-line
error with the pip command, and the runtime never needs fcnx.export for it.
"""

from __future__ import annotations

from typing import Any

from ..base import BackendError

INSTALL_HINT = (
    'pip install "fcnx[gpu,tensorrt]" --extra-index-url https://pypi.nvidia.com on a machine with an NVIDIA GPU '
    '(CUDA 12 drivers: "fcnx[gpu-cu12,tensorrt-cu12]")'
)
TENSORRT_MISSING = f"TensorRT is not installed: {INSTALL_HINT}"
CUDA_PYTHON_MISSING = f"cuda-python is not installed: {INSTALL_HINT}"


class GpuUnavailable(BackendError):
    """No TensorRT, no cuda-python or no usable NVIDIA GPU here."""


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise GpuUnavailable(TENSORRT_MISSING) from None
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's CUDA runtime module: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise GpuUnavailable(CUDA_PYTHON_MISSING) from None
    return cudart


def stream_handle(stream: Any) -> int:
    """A CUDA stream's native handle for TensorRT's ``execute_async_v3``:
    ``cuda.bindings.utils.get_cuda_native_handle`` (cuda-bindings >= 12.9), else ``int()``
    (older cuda-python, where int() of a stream is its address)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    return int(get_cuda_native_handle(stream))


def cuda_error_code(err: Any) -> int:
    """The integer value of a cudaError_t (an enum member, or a plain int in stand-ins)."""
    return int(getattr(err, "value", err))


def cuda_error_name(err: Any) -> str:
    return str(getattr(err, "name", f"error {cuda_error_code(err)}"))


def check_cuda(result: Any, call: str) -> Any:
    """Unpack a cuda-python call's ``(err, *values)``: raise on an error, else return
    None, the one value, or the tuple of values."""
    parts = result if isinstance(result, tuple) else (result,)
    err, values = parts[0], parts[1:]
    if cuda_error_code(err) != 0:
        raise BackendError(f"{call} failed: {cuda_error_name(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"  # 12040 -> "12.4"


def gpu_identity(cudart: Any | None = None) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device 0, via cuda-python. A driver
    too old for this cuda-python's CUDA says so, with the two ways forward."""
    cudart = cudart if cudart is not None else import_cudart()
    err, props = cudart.cudaGetDeviceProperties(0)
    if cuda_error_code(err) != 0:
        name = cuda_error_name(err)
        if name == "cudaErrorInsufficientDriver":
            driver = check_cuda(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
            runtime = check_cuda(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
            raise GpuUnavailable(
                f"the NVIDIA driver is too old: it supports CUDA {_cuda_version(int(driver))}, this cuda-python is "
                f"CUDA {_cuda_version(int(runtime))}; update the driver (CUDA 13 needs >= 580.65) or install the "
                'CUDA 12 set: pip install "fcnx[gpu-cu12,tensorrt-cu12]"'
            )
        raise GpuUnavailable(f"no usable NVIDIA GPU (cudaGetDeviceProperties: {name})")
    gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return gpu.strip("\x00 "), f"{props.major}.{props.minor}"
