"""The runtime is what a deploy box installs: it must never import TensorFlow, Keras,
tf2onnx or onnx. Checked in a fresh interpreter that imports every runtime module and
runs a real inference on an exported model."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import fcnx.runtime

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common")


def test_runtime_modules_and_inference_import_no_training_libraries(tiny_onnx: Path) -> None:
    modules = [m.name for m in pkgutil.iter_modules(fcnx.runtime.__path__, "fcnx.runtime.")]
    assert "fcnx.runtime.ort_backend" in modules and "fcnx.runtime.cli" in modules
    code = f"""
import importlib, sys
import numpy as np
for name in {modules!r}:
    importlib.import_module(name)
from fcnx.runtime.ort_backend import OrtBackend
backend = OrtBackend({str(tiny_onnx)!r})
out = backend.infer(np.zeros((2, 64, 64, 1), np.uint8))
assert out["mask"].shape == (2, 64, 64), out["mask"].shape
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print("LOADED:", loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED: []" in out.stdout, out.stdout
