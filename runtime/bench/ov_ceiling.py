"""The machine's matmul peaks per precision through OpenVINO's CPU plugin: FP32, BF16
(AVX512-BF16 / AMX) and INT8 (VNNI / AMX), the ceilings ov-cpu's and keras-bf16's rows
are a fraction of (an FP32 peak would flatter a BF16 row by the ratio of the two).

Each is one ``size`` x ``size`` product built with OpenVINO's own operations (the runtime
writes no ONNX): ``A @ W`` with A a parameter and W constant weights; INT8 puts A
through a 256-level FakeQuantize and W as int8 constants with a dequantizing scale, the
pattern OpenVINO's low-precision transformations run as an integer matmul. The precision
each one really ran is read back from the compiled model's execution graph
(``runtimePrecision`` of its FullyConnected node) and reported; a BF16 peak on a CPU
without BF16 is left out with the reason. Timing: the fastest of repeated calls
(``best_seconds``), as for the FP32 ceiling. One product is 2 * size**3 operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .timing import best_seconds

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INT8's float parts run f32


def matmul_model(ov: Any, size: int, precision: str) -> Any:
    """``A @ W`` as an OpenVINO model; INT8: quantized activations and int8 weights."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], ov.Type.f32, name="A")
    if precision == "int8":
        low, high = ops.constant(np.float32(0.0)), ops.constant(np.float32(1.0))
        x = ops.fake_quantize(a, low, high, low, high, 256)
        weights = ops.constant(rng.integers(-127, 128, (size, size), dtype=np.int8))
        w = ops.multiply(ops.convert(weights, "f32"), ops.constant(np.float32(0.01)))
    else:
        x, w = a, ops.constant(rng.standard_normal((size, size), dtype=np.float32))
    return ov.Model([ops.matmul(x, w, False, False)], [a], f"matmul_{precision}")


def runtime_precision(compiled: Any) -> str:
    """What the matmul ran in: its FullyConnected / MatMul node's ``runtimePrecision``."""
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            return str(info["runtimePrecision"].astype(str))
    return "?"


def openvino_ceilings(seconds: float = 2.0, size: int = 2048) -> dict[str, Any]:
    """{precision: {"peak_gflops", "runtime_precision"} or {"reason"}} for fp32, bf16, int8."""
    import openvino as ov

    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    rng = np.random.default_rng(1)
    a = ov.Tensor(rng.random((size, size), dtype=np.float32))
    peaks: dict[str, Any] = {}
    for precision, hint in HINTS.items():
        if precision == "bf16" and "BF16" not in capabilities:
            peaks[precision] = {
                "reason": f"this CPU has no BF16 (OpenVINO capabilities: {', '.join(capabilities)})"
            }
            continue
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(matmul_model(ov, size, precision), "CPU", config)
        request = compiled.create_infer_request()
        request.set_input_tensor(a)
        best = best_seconds(request.infer, seconds)
        peaks[precision] = {
            "peak_gflops": round(2 * size**3 / best / 1e9, 1),
            "runtime_precision": runtime_precision(compiled),
        }
    return {
        "peaks": peaks,
        "size": size,
        "method": (
            f"best time of repeated {size}x{size} matmuls (2*size^3 operations), {seconds:g} s each, OpenVINO "
            f"{ov.get_version().split('-')[0]} CPU (latency hint): FP32, BF16 (INFERENCE_PRECISION_HINT bf16), "
            "INT8 (FakeQuantize u8 activations x int8 weights)"
        ),
    }
