"""``fcnx train``: fit an FCN on an image/label folder and write a run folder.

Run folder::

    best.keras    best validation mIoU (inference mode, whole images)
    last.keras    the latest epoch
    history.csv   one row per epoch (loss, mIoU, IoU per class, pixel accuracy, lr)
    logs/         TensorBoard
    config.json   the TrainConfig, to reproduce the run
    card.json     the ModelCard, with best.keras's whole-image validation metrics
    backup/       only while a run is unfinished: what --resume continues from
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import keras

from fcnx.runtime.atomic import atomic_write_text, replace_durably
from fcnx.runtime.card import ModelCard, library_versions

from .config import TrainConfig
from .data import DataError, Samples, load_samples, split_samples, training_dataset, validation_dataset
from .labels import read_classes_file
from .losses import SegmentationLoss, segmentation_metrics
from .models import build_fcn

RUN_FILES = ("best.keras", "last.keras", "history.csv", "config.json", "card.json")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint (same monitor/mode/best logic), but it writes to a temp
    file beside the target and renames it into place: a crash mid-save never leaves a
    half-written checkpoint."""

    def __init__(self, filepath: str | Path, float32_twin: keras.Model | None = None, **kwargs: Any) -> None:
        super().__init__(str(filepath), **kwargs)
        self._twin = float32_twin  # mixed-precision training: what gets saved is this float32 copy
        self._final = Path(filepath)
        self._partial = self._final.with_name(f".{self._final.stem}.partial.keras")
        self._partial.unlink(missing_ok=True)  # left by a killed run

    def _get_file_path(self, epoch: int, batch: int | None, logs: dict[str, Any] | None) -> str:
        return str(self._partial)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self._partial.exists():
            if self._twin is not None:
                self._twin.set_weights(self.model.get_weights())
                self._twin.save(self._partial, overwrite=True)
            replace_durably(self._partial, self._final)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def training_precision(requested: str) -> str:
    """``auto`` -> mixed_bfloat16 on a CPU with AMX-BF16 (bfloat16 convolutions run ~1.6x
    faster there; measured in the README), float32 elsewhere (GPUs included: TensorFlow
    already uses TF32 there, and bfloat16 support varies by GPU)."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "mixed_bfloat16" if "amx_bf16" in _cpu_flags() else "float32"


def _best_so_far(history: Path, monitor: str) -> float | None:
    """The best monitored value in an interrupted run's history, so a resumed run does
    not overwrite best.keras with a worse epoch."""
    if not history.exists():
        return None
    with history.open(newline="") as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    return max(values) if values else None


def _prepare_run_dir(out: Path, resume: bool) -> None:
    backup = out / "backup"
    if resume:
        if not backup.is_dir():
            done = (out / "history.csv").exists() and (out / "last.keras").exists()
            reason = "it already finished" if done else "no interrupted run is there"
            raise DataError(f"{out}: nothing to resume ({reason})")
        return
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: run folder is not empty; pass --resume to continue it or choose another -o")
    out.mkdir(parents=True, exist_ok=True)


def _saved_config(out: Path, given: TrainConfig) -> TrainConfig:
    """A resumed run continues exactly as configured in its config.json; settings given
    now that differ are ignored, and said so."""
    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    saved = dataclasses.replace(saved, resume=True, out=str(out))
    old, new = flatten_config(saved.to_dict()), flatten_config(given.to_dict())
    ignored = [
        f"{key}={new[key]!r} (the run has {old[key]!r})"
        for key in sorted(old)
        if key in new and new[key] != old[key] and key not in ("resume", "in_channels", "num_classes")
    ]
    if ignored:
        print(
            f"--resume continues {out} as saved in its config.json; ignoring: " + ", ".join(ignored),
            file=sys.stderr,
        )
    return saved


def flatten_config(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict with the nested model/augment sections merged in (one key per flag)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = list(value) if isinstance(value, tuple) else value
    return flat


def load_training_data(config: TrainConfig) -> tuple[Samples, Samples]:
    classes = read_classes_file(config.classes) if config.classes else None
    samples = load_samples(config.data, config.channels, classes)
    if config.val:
        val = load_samples(config.val, samples.images[0].shape[2], samples.classes)
        return samples, val
    return split_samples(samples, config.val_fraction, config.seed)


def make_card(
    config: TrainConfig, train: Samples, val: Samples, metrics: dict[str, Any], precision: str = ""
) -> ModelCard:
    m = config.model
    sizes = train.sizes | val.sizes
    stride = m.output_stride
    height = width = None
    if len(sizes) == 1:  # a dataset of one size is deployed at that size (rounded up to the stride)
        ((h, w),) = sizes
        height, width = h + (-h % stride), w + (-w % stride)
    return ModelCard(
        architecture=m.arch,
        width=m.width,
        classes=train.classes.names,
        palette=train.classes.palette,
        input_channels=m.in_channels,
        input_height=height,
        input_width=width,
        input_multiple=stride,
        norm_mean=m.norm_mean,
        norm_std=m.norm_std,
        output_kind=m.head,
        training={
            "data": str(Path(config.data).resolve()),
            "label_encoding": train.classes.encoding,
            "train_images": [p.name for p in train.pairs],
            "val_images": [p.name for p in val.pairs],
            "val_metrics": metrics,
            "precision": precision or config.precision,
        },
        source={"data_sha256": train.fingerprint},
        versions=library_versions("fcnx", "tensorflow", "keras", "numpy", "opencv-python-headless"),
        model_config=m.to_dict(),
    )


def train(
    config: TrainConfig, verbose: str | int = "auto", callbacks: list[keras.callbacks.Callback] | None = None
) -> dict[str, Any]:
    """Run training; returns a summary (run folder, best metrics, seconds). ``callbacks``
    are extra Keras callbacks, run after fcnx's own (backup, checkpoints, CSV, TensorBoard)."""
    out = Path(config.out)
    _prepare_run_dir(out, config.resume)
    if config.resume:
        config = _saved_config(out, config)
    train_set, val_set = load_training_data(config)
    model_config = dataclasses.replace(
        config.model, in_channels=train_set.images[0].shape[2], num_classes=train_set.classes.num_classes
    )
    config = dataclasses.replace(config, model=model_config)
    if not config.resume:
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        make_card(config, train_set, val_set, {}).write(out / "card.json")

    keras.utils.set_random_seed(config.seed)
    precision = training_precision(config.precision)
    model = build_fcn(model_config, precision)
    twin = build_fcn(model_config) if precision != "float32" else None
    total_steps = config.epochs * config.steps_per_epoch
    lr: Any = config.lr
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, total_steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(lr, use_ema=config.ema > 0, ema_momentum=config.ema or 0.99),
        loss=SegmentationLoss(
            model_config.head,
            model_config.num_classes,
            config.dice_weight,
            list(config.class_weights) if config.class_weights else None,
            config.lovasz_weight,
        ),
        metrics=segmentation_metrics(model_config.head, train_set.classes.names),
    )
    all_callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),  # the raw weights: before the swap
        # --ema: evaluate with the averaged weights, and from here on each epoch's end sees them
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []),
        AtomicModelCheckpoint(
            out / "best.keras",
            monitor="val_miou",
            mode="max",
            save_best_only=True,
            initial_value_threshold=_best_so_far(out / "history.csv", "val_miou"),
            float32_twin=twin,
        ),
        AtomicModelCheckpoint(out / "last.keras", float32_twin=twin),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=config.resume),
        keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False, profile_batch=0),
        *(callbacks or []),
    ]
    if verbose == "auto":  # a progress bar on a terminal, one line per epoch in a log
        verbose = 1 if sys.stdout.isatty() else 2
    started = time.perf_counter()
    model.fit(
        training_dataset(train_set, config.crop, config.batch_size, config.augment, config.seed),
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_dataset(val_set, model_config.output_stride),
        validation_steps=len(val_set),
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        callbacks=all_callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - started

    from .evaluate import evaluate_samples
    from .model_file import load_keras_model

    best = load_keras_model(out / "best.keras")
    metrics = evaluate_samples(best, val_set)
    metrics["train_seconds"] = round(seconds, 1)
    metrics["epochs"] = config.epochs
    make_card(config, train_set, val_set, metrics, precision).write(out / "card.json")
    return {"run": str(out), "val_metrics": metrics, "seconds": seconds, "precision": precision}
