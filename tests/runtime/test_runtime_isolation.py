"""The runtime is what a deploy box installs: it must never import TensorFlow, Keras,
tf2onnx or onnx. Checked in a fresh interpreter that imports every runtime module and
runs a full `fcnx predict` (decode -> infer -> write) on an exported model."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

import fcnx.runtime

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common")
FORBIDDEN_FCNX = ("fcnx.export", "fcnx.train")


def test_runtime_modules_and_a_full_prediction_import_no_training_libraries(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    modules = [m.name for m in pkgutil.walk_packages(fcnx.runtime.__path__, "fcnx.runtime.")]
    assert {
        "fcnx.runtime.predict.job",
        "fcnx.runtime.predict.segmenter",
        "fcnx.runtime.backends.trt.backend",
        "fcnx.runtime.bench.run",
        "fcnx.runtime.commands.predict",
    } <= set(modules)
    (tmp_path / "in").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "in" / f"{i}.png"), np.full((64, 80), 40 * i, np.uint8))
    code = f"""
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
from fcnx.runtime.cli import main
model, images, out = {str(threshold_onnx)!r}, {str(tmp_path / "in")!r}, {str(tmp_path / "out")!r}
code = main(["predict", model, images, "-o", out, "--no-progress"])
assert code == 0, code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r} or m.startswith({FORBIDDEN_FCNX!r}))
print("LOADED:", loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED: []" in out.stdout, out.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0.png", "1.png", "2.png"]


SERVING = ("kserve", "tritonclient", "mlperf_loadgen", "fastapi", "uvicorn", "prometheus_client")


def test_predict_and_bench_load_no_serving_library(threshold_onnx: Path, tmp_path: Path) -> None:
    """The lean [cpu] runtime: fcnx predict and an in-process fcnx bench import none of the
    serve extra (KServe, its web stack, tritonclient, LoadGen)."""
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.full((64, 80), 90, np.uint8))
    code = f"""
import sys
from fcnx.runtime.cli import main
model = {str(threshold_onnx)!r}
assert main(["predict", model, {str(tmp_path / "in")!r}, "-o", {str(tmp_path / "out")!r}, "--no-progress"]) == 0
assert main(["bench", model, "--backends", "ort-cpu", "--batch", "1", "--min-seconds", "0", "--warmup", "0",
             "--no-ceiling", "--no-plots", "--out", {str(tmp_path / "bench")!r}]) == 0
print("LOADED:", sorted(m for m in sys.modules if m.split(".")[0] in {SERVING!r}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED: []" in out.stdout, out.stdout
