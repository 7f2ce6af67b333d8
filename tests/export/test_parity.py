from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fcnx.export.parity import ParityAccumulator, boundary_band, format_rows
from fcnx.runtime.predict.plans import mask_from_probs


def test_parity_cli_passes_on_the_export_and_fails_on_a_perturbed_copy(
    tiny_run: Path, tiny_onnx: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    model = onnx.load(str(tiny_onnx))
    for init in model.graph.initializer:
        if init.name.endswith("score_fr/convolution/ReadVariableOp:0") or "score_fr" in init.name:
            weights = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(weights * -1.0, init.name))  # flip the classifier
            break
    else:
        pytest.fail("no score_fr initializer found to perturb")
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(model, str(perturbed))
    report = tmp_path / "parity.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fcnx.runtime.cli",
            "parity",
            str(tiny_run),
            str(tiny_onnx),
            str(perturbed),
            "--data",
            str(synthetic_data),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    rows = json.loads(report.read_text())
    assert [r["passed"] for r in rows] == [True, False]
    assert rows[0]["images"] == 12  # with --data: the real images only
    assert rows[0]["miou_change"] == pytest.approx(0.0, abs=1e-9)
    assert "OVER BUDGET" in out.stdout and "model.onnx" in out.stdout


def test_accumulator_hand_example() -> None:
    keras_probs = np.zeros((1, 4, 4, 2), np.float32)
    keras_probs[..., 0] = 0.9
    keras_probs[0, :, 2:, 1] = 0.95  # right half class 1
    keras_mask = mask_from_probs(keras_probs)
    artifact_mask = keras_mask.copy()
    artifact_mask[0, 0, 0] = 1  # one flipped pixel out of 16
    truth = keras_mask.copy()
    acc = ParityAccumulator("a.onnx", "int8", 2)
    acc.add(keras_probs, artifact_mask, keras_probs + 0.01, truth)
    row = acc.result(("bg", "fg"))
    assert row.max_abs_prob == pytest.approx(0.01, abs=1e-6)
    assert row.mask_agreement == 15 / 16
    assert row.iou_vs_keras == {"bg": pytest.approx(7 / 8), "fg": pytest.approx(8 / 9)}
    assert row.miou_truth_keras == 1.0 and row.miou_change == pytest.approx((7 / 8 + 8 / 9) / 2 - 1)
    assert not row.passed and any("mask agreement" in f for f in row.failures)
    assert "OVER BUDGET" in format_rows([row])


def test_boundary_band() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 5:] = 1
    band = boundary_band(mask, radius=2)
    assert band[:, 3:7].all() and not band[:, :2].any() and not band[:, 8:].any()


def test_sigmoid_masks() -> None:
    probs = np.array([[[[0.2], [0.7]]]], np.float32)
    assert mask_from_probs(probs).tolist() == [[[0, 1]]]
