"""Shared fixtures and the gpu / tensorrt / slow markers.

Marked tests skip with the exact reason when their hardware or library is missing;
``--require-gpu`` turns those skips into failures (for a GPU box), ``--run-slow`` runs
the slow ones.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
MEMBRANE = Path(os.environ.get("FCNX_MEMBRANE", ROOT.parent / "shared" / "data" / "membrane"))


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test's "user cache folder" (OpenVINO's model cache) is a temp folder, never the real one."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-gpu", action="store_true", help="fail, not skip, gpu/tensorrt tests")
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def _cuda_provider_missing() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "onnxruntime CUDA provider not available"
    return None


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return (
            'TensorRT is not installed (pip install "fcnx[gpu,tensorrt]" --extra-index-url https://pypi.nvidia.com '
            "on an NVIDIA GPU machine)"
        )
    return _cuda_provider_missing() and "no NVIDIA GPU visible to onnxruntime"


_REASONS: dict[str, str | None] = {}
_CHECKS = {"gpu": _cuda_provider_missing, "tensorrt": _tensorrt_missing}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in _CHECKS.items():
        if marker in item.keywords:
            if marker not in _REASONS:
                _REASONS[marker] = check()
            reason = _REASONS[marker]
            if reason and item.config.getoption("--require-gpu"):
                pytest.fail(f"--require-gpu: {reason}")
            if reason:
                pytest.skip(reason)
    if "slow" in item.keywords and not item.config.getoption("--run-slow"):
        pytest.skip("slow test: run with --run-slow")


@pytest.fixture(scope="session")
def membrane() -> Path:
    if not (MEMBRANE / "image").is_dir():
        pytest.skip(f"membrane dataset not found at {MEMBRANE}")
    return MEMBRANE


@pytest.fixture(scope="session")
def threshold_onnx() -> Path:
    """The shipped threshold model (mask = pixel > 127): a real fcnx ONNX with a known answer."""
    from .fakes import THRESHOLD_ONNX

    return THRESHOLD_ONNX


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 64x64 EM-like pairs."""
    from fcnx.train.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", count=12, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_run(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny FCN-8s trained once per session on the synthetic data: a run folder."""
    from fcnx.train.config import TrainConfig
    from fcnx.train.fit import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig(data=str(synthetic_data), out=str(out), epochs=4, steps_per_epoch=8, crop=64, seed=0)
    train(config, verbose=0)
    return out


def _export(run: Path, out: Path, **options: str) -> Path:
    from fcnx.export.onnx_export import OnnxExportConfig, export_onnx

    export_onnx(OnnxExportConfig(model=str(run), out=str(out), **options))
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported once: FP32, dynamic batch, 64x64 (the card's size), probs and mask."""
    return _export(tiny_run, tmp_path_factory.mktemp("onnx") / "model.onnx", data=str(synthetic_data))


@pytest.fixture(scope="session")
def tiny_onnx_fixed(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed batch of 3, mask output only: what a fixed-shape deployment looks like."""
    return _export(tiny_run, tmp_path_factory.mktemp("onnx") / "fixed.onnx", batch="3", output="mask")


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Any spatial size (multiples of 32): images run at their own resolution."""
    return _export(tiny_run, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", size="dynamic")
