"""Model files that ship inside fcnx (package data), written by fcnx.export generators:
``matmul_fp32.onnx`` / ``matmul_fp16.onnx`` (bench/ceiling.py times them) and
``threshold.onnx`` (fcnx.export.tiny_model: a real fcnx ONNX with a known answer)."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def data_file(name: str, regenerate: str) -> Path:
    """The shipped file ``name``; a missing one is an error that says how to write it."""
    path = FOLDER / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the fcnx install; regenerate it with: {regenerate}")
    return path
