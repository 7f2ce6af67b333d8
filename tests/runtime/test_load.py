"""load(): the backend by file type and what is installed; named backends never fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnx.runtime.backends.base import Backend, BackendError
from fcnx.runtime.backends.registry import load, offered_backends


def test_auto_picks_the_first_provider_that_runs_and_says_what_it_skipped(tiny_onnx: Path) -> None:
    offered = offered_backends("onnx")
    with load(tiny_onnx) as backend:
        assert isinstance(backend, Backend)
        assert backend.name in offered and offered[-1] == "ort-cpu"
        for name in ("ort-trt", "ort-cuda"):
            if name not in offered:  # not offered here: auto says so
                assert any(note.startswith(f"{name}: this onnxruntime has no") for note in backend.notes)
        assert backend.provider.endswith("ExecutionProvider")
        assert backend.card.input_height == 64 and backend.input_hw == (64, 64)
        assert backend.max_batch is None and not backend.fixed_batch
    with pytest.raises(BackendError, match=r"model\.onnx: this ort-\w+ backend is closed"):
        backend.infer(np.zeros((1, 64, 64, 1), np.uint8))


def test_auto_falls_back_when_a_provider_is_offered_but_cannot_start(
    threshold_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a box whose onnxruntime-gpu has the CUDA provider but no usable GPU: the
    provider list says CUDA, onnxruntime cannot start it, auto notes why and runs on the CPU.
    (Only the provider list is faked, as CUDA cannot exist here; the sessions are real.)"""
    from fcnx.runtime.backends import registry

    if "CUDAExecutionProvider" in registry.onnxruntime_providers():
        pytest.skip("this machine really has the CUDA provider")
    monkeypatch.setattr(
        registry, "onnxruntime_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with load(threshold_onnx) as backend:
        assert backend.name == "ort-cpu"
    assert backend.notes[0] == "ort-trt: this onnxruntime has no TensorrtExecutionProvider"
    assert backend.notes[1].startswith("ort-cuda: ort-cuda needs onnxruntime's CUDAExecutionProvider")
    with pytest.raises(BackendError, match="ort-cuda needs onnxruntime's CUDAExecutionProvider"):
        load(threshold_onnx, "ort-cuda")  # named: that backend or an error, never the CPU


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
    with pytest.raises(BackendError, match="neither a training run"):
        load(tmp_path)
    with pytest.raises(BackendError, match="a keras model runs on keras / keras-bf16, not ort-cpu"):
        load(tiny_run, "ort-cpu")
    (tmp_path / "broken.onnx").write_bytes(b"not protobuf")
    with pytest.raises(BackendError, match=r"broken\.onnx: onnxruntime cannot load it"):
        load(tmp_path / "broken.onnx")
