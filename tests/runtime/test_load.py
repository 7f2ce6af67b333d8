"""load(): the backend by file type and what is installed; named backends never fall back."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnx.runtime.backends.base import Backend, BackendError
from fcnx.runtime.backends.registry import load, offered_backends


def test_auto_picks_the_first_provider_that_runs_and_says_what_it_skipped(tiny_onnx: Path) -> None:
    backend = load(tiny_onnx)
    assert isinstance(backend, Backend)
    assert backend.name == offered_backends("onnx")[-1] == "ort-cpu"  # this CI machine has no GPU
    assert backend.provider == "CPUExecutionProvider"
    assert any("ort-cuda" in note for note in backend.notes)  # type: ignore[attr-defined]
    assert backend.card.input_height == 64 and backend.input_hw == (64, 64)
    assert backend.max_batch is None and not backend.fixed_batch


def test_asking_for_an_unavailable_backend_is_an_error(tiny_onnx: Path) -> None:
    if "ort-cuda" in offered_backends("onnx"):
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(BackendError, match=r"CUDAExecutionProvider.*not have"):
        load(tiny_onnx, "ort-cuda")
    with pytest.raises(BackendError, match="runs on ort-trt / ort-cuda / ort-cpu, not trt"):
        load(tiny_onnx, "trt")
    with pytest.raises(BackendError, match="unknown backend"):
        load(tiny_onnx, "tpu")


def test_file_types(tmp_path: Path, tiny_run: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(BackendError, match=r"unknown model file type '\.pt'"):
        load(tmp_path / "model.pt")
    with pytest.raises(BackendError, match="no such model"):
        load(tmp_path / "gone.onnx")
    with pytest.raises(BackendError, match="not a training run"):
        load(tmp_path)
    with pytest.raises(BackendError, match="a keras model runs on keras, not ort-cpu"):
        load(tiny_run, "ort-cpu")
    (tmp_path / "broken.onnx").write_bytes(b"not protobuf")
    with pytest.raises(BackendError, match=r"broken\.onnx: onnxruntime cannot load it"):
        load(tmp_path / "broken.onnx")
