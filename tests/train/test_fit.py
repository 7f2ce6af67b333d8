from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from fcnx.runtime.card import ModelCard
from fcnx.train.config import TrainConfig
from fcnx.train.data import DataError
from fcnx.train.evaluate import evaluate
from fcnx.train.fit import train
from fcnx.train.model_file import ModelFileError, load_keras_model


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_tiny_training_lowers_the_loss_and_writes_every_artifact(tiny_run: Path) -> None:
    for name in ("best.keras", "last.keras", "history.csv", "config.json", "card.json"):
        assert (tiny_run / name).is_file(), name
    assert not (tiny_run / "backup").exists()  # removed once a run finishes
    assert list((tiny_run / "logs").rglob("events.out.tfevents.*"))
    assert not list(tiny_run.glob(".*partial*"))
    rows = _history(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    card = ModelCard.read(tiny_run / "card.json")
    assert card.architecture == "fcn8s" and card.classes == ("background", "foreground")
    assert (card.input_height, card.input_width, card.input_channels) == (64, 64, 1)
    metrics = card.training["val_metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["images"] == 2
    assert card.source["data_sha256"] and card.versions["tensorflow"]
    config = TrainConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    assert config.model.arch == "fcn8s" and config.crop == 64


def test_best_checkpoint_is_the_best_validation_miou(tiny_run: Path, synthetic_data: Path) -> None:
    best = max(float(r["val_miou"]) for r in _history(tiny_run))
    card = ModelCard.read(tiny_run / "card.json")
    # Keras's streaming mIoU (float32 counts) and the numpy confusion matrix agree.
    assert card.training["val_metrics"]["miou"] == pytest.approx(best, abs=1e-4)


def test_best_keras_loads_in_plain_keras_in_a_process_that_never_imports_fcnx(tiny_run: Path) -> None:
    """Only standard Keras layers, no optimizer and no compile state with fcnx's loss: the
    plain default load_model (compile=True) works where fcnx is not installed."""
    code = (
        "import sys; sys.modules['fcnx'] = None; import keras, numpy as np; "
        f"m = keras.saving.load_model(r'{tiny_run / 'best.keras'}', safe_mode=True); "
        "assert getattr(m, 'optimizer', None) is None and not m.compiled; "
        "print(m.predict_on_batch(np.zeros((1, 64, 64, 1), np.uint8)).shape)"
    )
    assert (tiny_run / "best.keras").stat().st_size < (tiny_run / "last.keras").stat().st_size / 2
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(1, 64, 64, 2)" in out.stdout


def test_existing_run_folder_is_not_overwritten(tiny_run: Path, synthetic_data: Path) -> None:
    with pytest.raises(DataError, match="not empty; pass --resume"):
        train(TrainConfig(data=str(synthetic_data), out=str(tiny_run), crop=64))
    with pytest.raises(DataError, match=r"nothing to resume \(it already finished"):
        train(TrainConfig(data=str(synthetic_data), out=str(tiny_run), crop=64, resume=True))


class _Crash(keras.callbacks.Callback):
    """Stands in for a killed process: dies at the end of an epoch, after fcnx's
    callbacks (backup, checkpoints, CSV) have run."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


def test_resume_continues_at_the_right_epoch(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(
        data=str(synthetic_data), out=str(tmp_path / "run"), epochs=4, steps_per_epoch=2, crop=32
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, verbose=0, callbacks=[_Crash(at_epoch=1)])
    assert (tmp_path / "run" / "backup").is_dir()
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [0, 1]

    from dataclasses import replace

    seen: list[int] = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    forgetful = replace(config, resume=True, epochs=99, model=replace(config.model, arch="fcn2s"))
    train(forgetful, verbose=0, callbacks=[recorder])  # the saved config wins: fcn8s, 4 epochs
    assert seen == [2, 3]  # epochs 0 and 1 were not redone
    err = capsys.readouterr().err
    assert "ignoring: arch='fcn2s' (the run has 'fcn8s'), epochs=99 (the run has 4)" in err
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [0, 1, 2, 3]
    assert not (tmp_path / "run" / "backup").exists()
    assert (tmp_path / "run" / "best.keras").is_file()


def test_evaluate_reports_and_saves_masks(tiny_run: Path, synthetic_data: Path, tmp_path: Path) -> None:
    report = evaluate(tiny_run, synthetic_data, save_masks=tmp_path / "masks")
    assert report["images"] == 12 and report["pixels"] == 12 * 64 * 64
    assert set(report["per_class_iou"]) == {"background", "foreground"}
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(masks) == 12
    import cv2

    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}  # encoded like the labels


def test_lambda_layer_model_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match=r"lambda.keras: refused: it contains a Lambda layer"):
        load_keras_model(path)


def test_bad_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"missing.keras: no such model file"):
        load_keras_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"junk.keras: not a Keras .keras file"):
        load_keras_model(junk)
    empty_zip = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    with pytest.raises(ModelFileError, match=r"empty.keras: cannot load as a Keras model"):
        load_keras_model(empty_zip)


def test_separate_validation_folder(synthetic_data: Path, tmp_path: Path) -> None:
    from fcnx.train.fit import load_training_data
    from fcnx.train.synthetic import write_synthetic_dataset

    val_folder = write_synthetic_dataset(tmp_path / "val", count=3, size=64, seed=9)
    train_set, val_set = load_training_data(
        TrainConfig(data=str(synthetic_data), out="unused", val=str(val_folder))
    )
    assert len(train_set) == 12 and len(val_set) == 3
    assert val_set.classes == train_set.classes


def test_predict_masks_and_probabilities_batch_mixed_sizes_and_crop_back(tiny_run: Path) -> None:
    from fcnx.train.evaluate import predict_masks, predict_probabilities

    model = load_keras_model(tiny_run)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, shape, np.uint8)
        for shape in [(64, 64, 1), (64, 64, 1), (50, 70, 1), (64, 64, 1)]
    ]
    masks = predict_masks(model, images, batch_size=2)
    assert [m.shape for m in masks] == [(64, 64), (64, 64), (50, 70), (64, 64)]
    alone = predict_masks(model, [images[2]])[0]
    assert np.array_equal(masks[2], alone)  # batching does not change a result
    probs = predict_probabilities(model, images, batch_size=2)
    assert [p.shape for p in probs] == [(64, 64, 2), (64, 64, 2), (50, 70, 2), (64, 64, 2)]
    assert all(p.dtype == np.float32 and np.allclose(p.sum(axis=-1), 1.0, atol=1e-5) for p in probs)
    assert all(np.array_equal(p.argmax(axis=-1), m) for p, m in zip(probs, masks))


def test_mixed_bfloat16_training_saves_float32_models(synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    config = TrainConfig(
        data=str(synthetic_data),
        out=str(out),
        epochs=2,
        steps_per_epoch=4,
        crop=64,
        precision="mixed_bfloat16",
    )
    summary = train(config, verbose=0)
    assert summary["precision"] == "mixed_bfloat16"
    assert ModelCard.read(out / "card.json").training["precision"] == "mixed_bfloat16"
    assert json.loads((out / "config.json").read_text())["precision"] == "mixed_bfloat16"
    for name in ("best.keras", "last.keras"):
        model = load_keras_model(out / name)
        assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {"float32"}, name
    # the float32 twin holds the trained state: batch-norm statistics moved off their
    # initial zeros, and whole-image metrics close to the mixed model's during training
    bn = load_keras_model(out / "last.keras").get_layer("block1_conv1_bn")
    assert np.abs(bn.moving_mean.numpy()).max() > 0
    best_val = max(float(r["val_miou"]) for r in _history(out))
    assert abs(ModelCard.read(out / "card.json").training["val_metrics"]["miou"] - best_val) < 0.02


def test_ema_checkpoints_hold_the_averaged_weights(synthetic_data: Path, tmp_path: Path) -> None:
    def numpy(variables: list) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in variables]

    epochs: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

    class Capture(keras.callbacks.Callback):  # runs after fcnx's callbacks, the EMA swap included
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            # swapped: the model holds the average, the optimizer's EMA slots the raw weights
            averaged = numpy(self.model.trainable_weights)
            epochs.append((averaged, numpy(self.model.optimizer._model_variables_moving_average)))

    out = tmp_path / "ema"
    config = TrainConfig(
        data=str(synthetic_data), out=str(out), epochs=2, steps_per_epoch=4, crop=64, ema=0.9
    )
    train(config, verbose=0, callbacks=[Capture()])
    averaged, raw = epochs[0]
    assert any(not np.allclose(a, b) for a, b in zip(averaged, raw))  # the swap happened
    saved = numpy(load_keras_model(out / "last.keras").trainable_weights)
    assert all(np.array_equal(a, b) for a, b in zip(saved, epochs[-1][0]))
    assert not (out / "backup").exists()
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)


def test_auto_precision_is_bfloat16_only_on_cpus_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from fcnx.train import fit

    assert fit.training_precision("float32") == "float32"
    assert fit.training_precision("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(fit, "_cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert fit.training_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(fit, "_cpu_flags", lambda: {"avx2", "fma"})
    assert fit.training_precision("auto") == "float32"
