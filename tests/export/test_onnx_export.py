from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest

from fcnx.export.onnx_export import ExportError, OnnxExportConfig, ParityError, export_onnx
from fcnx.export.parity import BUDGETS, ParityAccumulator
from fcnx.runtime.backends.ort import OrtBackend
from fcnx.runtime.card import ModelCard
from fcnx.train.model_file import ModelFileError, load_keras_model


def test_exported_file_has_stable_names_uint8_io_and_the_card(tiny_onnx: Path, tiny_run: Path) -> None:
    backend = OrtBackend(tiny_onnx)
    assert backend.input_name == "image" and backend.input_shape == (None, 64, 64, 1)
    assert backend.output_names == ["probs", "mask"]
    run_card = ModelCard.read(tiny_run / "card.json")
    assert backend.card.classes == run_card.classes and backend.card.training == run_card.training
    assert backend.card.precision == "fp32"
    assert (
        backend.card.export["outputs"] == ["probs", "mask"] and len(backend.card.export["keras_sha256"]) == 64
    )
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fp32_parity_within_budget_at_several_batch_sizes(
    tiny_onnx: Path, tiny_run: Path, batch: int
) -> None:
    keras_model = load_keras_model(tiny_run)
    backend = OrtBackend(tiny_onnx)
    x = np.random.default_rng(batch).integers(0, 256, (batch, 64, 64, 1), np.uint8)
    out = backend.infer(x)
    reference = np.asarray(keras_model.predict_on_batch(x))
    acc = ParityAccumulator("model.onnx", "fp32", 2)
    acc.add(reference, out["mask"], out["probs"])
    row = acc.result(("background", "foreground"))
    assert row.max_abs_prob is not None and row.max_abs_prob <= BUDGETS["fp32"].max_abs_prob
    assert row.passed, row.failures


def test_mask_output_is_the_argmax_of_probs(tiny_onnx: Path) -> None:
    out = OrtBackend(tiny_onnx).infer(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1), np.uint8))
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == (4, 64, 64)
    assert np.array_equal(out["mask"], out["probs"].argmax(-1))


def test_fp16_runs_on_cpu_within_budget_mask_only_fixed_batch(
    tiny_run: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.fp16.onnx"
    result = export_onnx(
        OnnxExportConfig(
            model=str(tiny_run),
            out=str(out),
            precision="fp16",
            output="mask",
            batch="2",
            data=str(synthetic_data),
        )
    )
    assert result["parity"][0].passed and result["parity"][0].precision == "fp16"
    backend = OrtBackend(out)
    assert backend.output_names == ["mask"] and backend.max_batch == 2 and backend.card.precision == "fp16"
    model = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    # fp16 weights: ~half of fp32 (best.keras holds the float32 weights and no optimizer)
    assert out.stat().st_size < 0.6 * (tiny_run / "best.keras").stat().st_size


def test_existing_output_needs_force(tiny_run: Path, tiny_onnx: Path) -> None:
    before = tiny_onnx.read_bytes()
    with pytest.raises(ExportError, match=r"already exists; pass --force"):
        export_onnx(OnnxExportConfig(model=str(tiny_run), out=str(tiny_onnx)))
    assert tiny_onnx.read_bytes() == before


def test_parity_failure_writes_nothing(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tighten the FP32 budget beyond what float arithmetic can meet: the export must
    refuse and leave no file, not even a temp one."""
    from fcnx.export import parity

    monkeypatch.setitem(
        parity.BUDGETS, "fp32", parity.Budget(max_abs_prob=0.0, mask_agreement=1.0, miou_change=None)
    )
    with pytest.raises(ParityError, match="not written, parity over budget"):
        export_onnx(OnnxExportConfig(model=str(tiny_run), out=str(tmp_path / "model.onnx")))
    assert os.listdir(tmp_path) == []


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match=r"missing.keras: no such model file"):
        export_onnx(OnnxExportConfig(model=str(tmp_path / "missing.keras"), out=out))
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(ModelFileError, match=r"truncated.keras: not a Keras .keras file"):
        export_onnx(OnnxExportConfig(model=str(truncated), out=out))
    not_keras = tmp_path / "weights.keras"
    with zipfile.ZipFile(not_keras, "w") as z:
        z.writestr("hello.txt", "not a model")
    with pytest.raises(ModelFileError, match=r"weights.keras: cannot load as a Keras model"):
        export_onnx(OnnxExportConfig(model=str(not_keras), out=out))
    inputs = keras.Input((8, 8, 1))
    lambda_model = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda x: x + 1)(inputs)).save(lambda_model)
    with pytest.raises(ModelFileError, match=r"lambda.keras: refused: it contains a Lambda layer"):
        export_onnx(OnnxExportConfig(model=str(lambda_model), out=out))
    assert not (tmp_path / "m.onnx").exists()


def test_unwritable_output_and_old_opset(tiny_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"a_file: is a file, not a folder"):
        export_onnx(OnnxExportConfig(model=str(tiny_run), out=str(blocker / "model.onnx")))
    with pytest.raises(ExportError, match=r"/proc: output folder is not writable"):
        export_onnx(OnnxExportConfig(model=str(tiny_run), out="/proc/fcnx-test/model.onnx"))
    with pytest.raises(ExportError, match=r"opset 11 is not supported: this graph needs opset 13"):
        OnnxExportConfig(model=str(tiny_run), out=str(tmp_path / "m.onnx"), opset=11)
    with pytest.raises(ExportError, match="batch must be"):
        OnnxExportConfig(batch="zero")
    with pytest.raises(ExportError, match="size must be"):
        OnnxExportConfig(size="big")


def test_softmax_runs_over_the_last_axis(tiny_onnx: Path) -> None:
    """tf2onnx's Softmax(axis=1) on NCHW then Transpose is swapped to Transpose then
    Softmax(axis=-1): onnxruntime's CPU softmax over a non-last axis is ~10x slower."""
    import onnx

    graph = onnx.load(str(tiny_onnx)).graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    assert len(softmax) == 1
    assert [a.i for a in softmax[0].attribute if a.name == "axis"] == [-1]
    assert softmax[0].output[0] == "probs"
    producer = {o: n for n in graph.node for o in n.output}[softmax[0].input[0]]
    assert producer.op_type == "Transpose"


def test_a_sigmoid_head_exports_with_its_in_graph_threshold_and_runs_through_segmenter(
    tmp_path: Path,
) -> None:
    from fcnx.runtime import Segmenter, load
    from fcnx.train.config import ModelConfig
    from fcnx.train.models import build_fcn

    keras.utils.set_random_seed(0)
    model = build_fcn(ModelConfig(head="sigmoid"))
    model.save(tmp_path / "sigmoid.keras")
    summary = export_onnx(
        OnnxExportConfig(model=str(tmp_path / "sigmoid.keras"), out=str(tmp_path / "s.onnx"))
    )
    assert all(row.passed for row in summary["parity"]), summary["parity"]
    with load(tmp_path / "s.onnx", "ort-cpu") as backend:
        assert backend.card.output_kind == "sigmoid" and backend.card.classes == ("class0", "class1")
        images = list(np.random.default_rng(1).integers(0, 256, (3, 64, 96, 1), np.uint8))
        segmenter = Segmenter(backend)
        probs = segmenter.predict(images, probs=True)
        masks = segmenter.predict(images)  # the graph's own mask: probs > 0.5
    assert probs[0].shape == (64, 96, 1)
    for p, m in zip(probs, masks):
        np.testing.assert_array_equal(m, (p[..., 0] > 0.5).astype(np.uint8))
    reference = model.predict_on_batch(np.stack(images))
    np.testing.assert_allclose(np.stack(probs), reference, atol=BUDGETS["fp32"].max_abs_prob)


def test_a_probs_only_export_gets_its_masks_from_the_probabilities(tiny_run: Path, tmp_path: Path) -> None:
    from fcnx.runtime import Segmenter, load

    export_onnx(OnnxExportConfig(model=str(tiny_run), out=str(tmp_path / "p.onnx"), output="probs"))
    images = list(np.random.default_rng(2).integers(0, 256, (5, 64, 64), np.uint8))
    with load(tmp_path / "p.onnx", "ort-cpu") as probs_only, load(tiny_run) as keras_backend:
        assert probs_only.output_names == ["probs"]
        masks = Segmenter(probs_only).predict(images)
        probs = Segmenter(probs_only).predict(images, probs=True)
        reference = Segmenter(keras_backend).predict(images)
    for m, p, r in zip(masks, probs, reference):
        np.testing.assert_array_equal(m, p.argmax(-1))
        assert (m == r).mean() >= BUDGETS["fp32"].mask_agreement
