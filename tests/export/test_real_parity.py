"""Parity judged where it means something: the membrane-trained FCN-8s of ../shared/models
on the 24 real membrane images (an untrained net's ~0.5 probabilities make argmax
agreement meaningless). FP32 and FP16 exports, each within its budget; and evaluate,
parity and predict agree because they share one path (the Segmenter). Slow: run with
--run-slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnx.export.onnx_export import OnnxExportConfig, export_onnx
from fcnx.export.parity_check import check_against_keras
from fcnx.runtime import Segmenter, load
from fcnx.runtime.images import dataset_images, read_image
from fcnx.train.evaluate import keras_segmenter
from fcnx.train.keras_backend import card_for
from fcnx.train.model_file import find_card, load_keras_model

from ..conftest import ROOT

pytestmark = pytest.mark.slow
MODELS = ROOT.parent / "shared" / "models"


@pytest.fixture(scope="module")
def trained() -> Path:
    run = MODELS / "membrane-fcn8s"
    if not (run / "best.keras").is_file():
        pytest.skip(f"the trained membrane models are not at {MODELS}")
    return run


def test_fp32_and_fp16_exports_of_a_trained_model_are_within_budget_on_real_images(
    trained: Path, membrane: Path, tmp_path: Path
) -> None:
    outputs = {}
    for precision in ("fp32", "fp16"):
        outputs[precision] = tmp_path / f"model.{precision}.onnx"
        export_onnx(OnnxExportConfig(model=str(trained), out=str(outputs[precision]), precision=precision))
    model = load_keras_model(trained)
    card = card_for(model, find_card(trained))
    rows = check_against_keras(model, list(outputs.values()), card, data=membrane, random_images=0)
    for row in rows:
        assert row.passed, (row.artifact, row.failures)
        assert row.images == 24 and row.miou_change is not None  # judged against the real labels too
    assert rows[0].max_abs_prob is not None and rows[0].max_abs_prob <= 1e-4

    # evaluate's path (Segmenter over Keras) and predict's (Segmenter over ONNX) on full images
    images = [read_image(p, 1) for p in dataset_images(membrane, "membrane images")[:6]]
    keras_masks = keras_segmenter(model, card).predict(images)
    with load(outputs["fp32"], "ort-cpu") as backend:
        onnx_masks = Segmenter(backend).predict(images)
    agreement = np.mean([(a == b).mean() for a, b in zip(keras_masks, onnx_masks)])
    assert agreement >= 0.9999
