from __future__ import annotations

import math

import numpy as np
import pytest

from fcnx.runtime.bench.ceiling import (
    OrtMatmul,
    ceiling_model_path,
    cpu_ceiling,
    cuda_unavailable_reason,
    gpu_ceiling,
    matmul_flops,
)
from fcnx.runtime.bench.timing import best_seconds


def test_cpu_ceiling_numbers_are_positive_and_peak_is_the_better_path() -> None:
    result = cpu_ceiling(seconds=0.05, size=128)
    for key in ("numpy_gflops", "onnxruntime_gflops", "peak_gflops"):
        assert math.isfinite(result[key]) and result[key] > 0, result
    assert result["peak_gflops"] == max(result["numpy_gflops"], result["onnxruntime_gflops"])
    assert result["size"] == 128 and "onnxruntime" in result["method"] and "numpy" in result["method"]


def test_the_shipped_fp32_model_computes_a_matmul_of_any_shape() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal((48, 32), dtype=np.float32)
    matmul = OrtMatmul(a, b)
    matmul.run()
    assert matmul.provider == "CPUExecutionProvider"
    np.testing.assert_allclose(matmul.result(), a @ b, rtol=1e-5, atol=1e-5)


def test_shipped_models_exist_and_bad_operands_are_named() -> None:
    assert ceiling_model_path("fp32").is_file() and ceiling_model_path("fp16").is_file()
    with pytest.raises(FileNotFoundError, match=r"matmul_int4\.onnx.*fcnx\.export\.ceiling_models"):
        ceiling_model_path("int4")
    with pytest.raises(ValueError, match=r"\(4, 3\) float32 @ \(4, 3\) float32"):
        OrtMatmul(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="float32 or float16, got float64"):
        OrtMatmul(np.ones((2, 2)), np.ones((2, 2)))


def test_best_seconds_is_the_minimum_of_at_least_min_calls() -> None:
    calls: list[int] = []
    best = best_seconds(lambda: calls.append(1), seconds=0.0, min_calls=3)
    assert len(calls) == 4 and 0 <= best < 1  # one warm-up + three timed
    assert matmul_flops(2048) == 2 * 2048**3


def test_gpu_ceiling_is_none_without_cuda() -> None:
    reason = cuda_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has the onnxruntime CUDA provider")
    assert gpu_ceiling(seconds=0.01, size=64) is None


@pytest.mark.gpu
def test_gpu_ceiling_fp16_on_the_device() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 128), dtype=np.float32).astype(np.float16)
    b = rng.standard_normal((128, 64), dtype=np.float32).astype(np.float16)
    matmul = OrtMatmul(a, b, "cuda")
    matmul.run()
    reference = a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(matmul.result().astype(np.float32), reference, rtol=2e-2, atol=5e-2)
    result = gpu_ceiling(seconds=0.2, size=1024)
    assert result is not None and math.isfinite(result["peak_gflops"]) and result["peak_gflops"] > 0
    assert result["peak_gflops"] == result["onnxruntime_gflops"] and result["precision"] == "fp16"
