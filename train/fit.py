"""``fcnx train``: fit an FCN on an image/label folder and write a run folder.

Run folder::

    best.keras    best validation mIoU (inference mode, whole images); loads in plain Keras
    best.json     the epoch and validation mIoU best.keras holds
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
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import keras

from fcnx.runtime.atomic import (
    atomic_path,
    atomic_write_text,
    is_temp_name,
    remove_entry,
    remove_stale_temps,
    replace_durably,
)
from fcnx.runtime.card import ModelCard, library_versions
from fcnx.runtime.intensity import NoteCounter

from .config import TrainConfig
from .data import DataError, Samples, load_samples, split_samples, training_dataset, validation_dataset
from .labels import read_classes_file
from .losses import SegmentationLoss, segmentation_metrics
from .models import build_fcn

RUN_FILES = ("best.keras", "best.json", "last.keras", "history.csv", "config.json", "card.json")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint (same monitor/mode/best logic), but it writes to a temp
    file beside the target and renames it into place: a crash mid-save never leaves a
    half-written checkpoint. With ``twin`` (an uncompiled float32 model of the same
    architecture) the twin is saved holding the weights: no optimizer, no compile state
    with fcnx's loss, so the file loads in plain Keras anywhere (best.keras; and every
    checkpoint of a mixed-precision run, which are float32 that way)."""

    def __init__(self, filepath: str | Path, twin: keras.Model | None = None, **kwargs: Any) -> None:
        super().__init__(str(filepath), **kwargs)
        self._twin = twin
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
            if self.save_best_only:  # what the file holds, for a resumed run's threshold
                value = (logs or {}).get(self.monitor)
                record = {"epoch": epoch, self.monitor: None if value is None else float(value)}
                atomic_write_text(_record_of(self._final), json.dumps(record) + "\n")


def _record_of(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")  # best.keras -> best.json


def best_so_far(checkpoint: Path, monitor: str) -> float | None:
    """The monitored value of the epoch ``checkpoint`` holds, so a resumed run does not
    replace it with a worse epoch; None without the file (the next epoch then saves it).
    Taken from the record written after the file, never from history.csv: an epoch whose
    save a kill interrupted is in the history but not in the file."""
    if not checkpoint.is_file():
        return None
    try:
        value = json.loads(_record_of(checkpoint).read_text(encoding="utf-8"))[monitor]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (resume at the epoch a run was stopped in), written so that
    no kill can leave a torn backup: each epoch's weights go to a file of their own,
    written atomically; then ``state.json`` (atomic too) names that file and the epoch;
    then the older file goes. Whenever a kill lands, state.json names a complete file.
    The run removes the backup itself, after its final card (see ``train``)."""

    STATE = "state.json"

    def __init__(self, backup_dir: str | Path) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self._folder = Path(backup_dir)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for stale in self._folder.glob(".*"):  # temps of a save a kill interrupted (fcnx's names only)
            if is_temp_name(stale.name):
                remove_entry(stale)
        state_path = self._folder / self.STATE
        if not state_path.is_file():
            return  # killed before the first epoch ended: the run starts from epoch 1
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            weights, epoch = self._folder / state["weights"], int(state["epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{state_path}: not a backup fcnx can read ({exc}); {self._way_forward()}"
            ) from None
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(weights)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DataError(
                f"{weights}: the backup of epoch {epoch} cannot be read ({first}); {self._way_forward()}"
            ) from None
        self.model._initial_epoch = epoch

    @classmethod
    def saved_epoch(cls, backup_dir: Path) -> int:
        """The epoch a resume starts at (0: from the beginning)."""
        try:
            return int(json.loads((backup_dir / cls.STATE).read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _way_forward(self) -> str:
        return f"remove {self._folder} and pass --resume again to restart this run from epoch 1"

    def _save_model(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        with atomic_path(self._folder / name, suffix=".weights.h5") as tmp:  # Keras wants that suffix
            self.model.save_weights(str(tmp), overwrite=True)
        atomic_write_text(
            self._folder / self.STATE, json.dumps({"epoch": self._current_epoch, "weights": name})
        )
        for older in self._folder.glob("epoch-*.weights.h5"):
            if older.name != name:
                older.unlink(missing_ok=True)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def training_precision(requested: str) -> str:
    """``auto`` -> mixed_bfloat16 on a CPU with AMX-BF16 (epochs run 1.44x
    faster there; docs/results/training.md), float32 elsewhere (GPUs included: TensorFlow
    already uses TF32 there, and bfloat16 support varies by GPU)."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "mixed_bfloat16" if "amx_bf16" in _cpu_flags() else "float32"


def _trim_history(history: Path, start: int) -> None:
    """Keep the rows of epochs before ``start`` (those are in the backup)."""
    if not history.is_file():
        return
    with history.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(row[header.index("epoch")]) < start]
    if len(kept) != len(body):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *kept])
        atomic_write_text(history, buffer.getvalue())


def _prepare_run_dir(out: Path, resume: bool) -> None:
    """A new run needs an empty folder; --resume needs an unfinished run: its config is
    there and its card has no final metrics yet (killed in epoch 1 -- no backup yet --,
    mid-run, or after training but before the card; the backup, if any, says where)."""
    if resume:
        card = out / "card.json"
        if not (out / "config.json").is_file() or not card.is_file():
            raise DataError(f"{out}: nothing to resume (no run was started there)")
        finished = bool(ModelCard.read(card).training.get("val_metrics")) and not (out / "backup").exists()
        if finished:
            raise DataError(f"{out}: nothing to resume (it already finished)")
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
    """The training and validation samples, 16-bit images mapped by ``--intensity`` (one
    line on stderr when the mapping warned about any image)."""
    classes = read_classes_file(config.classes) if config.classes else None
    notes = NoteCounter()
    samples = load_samples(config.data, config.channels, classes, config.intensity, notes, config.labels)
    val = None
    if config.val:
        val = load_samples(config.val, samples.images[0].shape[2], samples.classes, config.intensity, notes)
    if notes.count:
        print(notes.line(), file=sys.stderr)
    return (samples, val) if val is not None else split_samples(samples, config.val_fraction, config.seed)


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
        intensity=config.intensity,
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
    for name in RUN_FILES:  # what writes a killed run interrupted left (a SIGKILL cleans nothing)
        remove_stale_temps(out / name)
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
    plain = build_fcn(model_config)  # uncompiled float32: what checkpoints that load anywhere hold
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
    if config.resume:  # the epochs the backup has not got are redone: their rows go
        _trim_history(out / "history.csv", AtomicBackupAndRestore.saved_epoch(out / "backup"))
    all_callbacks = [
        # history first, backup second: a kill between them leaves a row the resume redoes
        # (and trims), never an epoch the backup has and the history lacks
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=config.resume),
        AtomicBackupAndRestore(out / "backup"),  # the raw weights: before the swap
        # --ema: evaluate with the averaged weights, and from here on each epoch's end sees them
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []),
        AtomicModelCheckpoint(
            out / "best.keras",
            monitor="val_miou",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best_so_far(out / "best.keras", "val_miou"),
            twin=plain,  # best.keras loads in plain Keras: no optimizer, no fcnx loss in it
        ),
        # last.keras keeps the training state (optimizer, loss); float32 either way
        AtomicModelCheckpoint(out / "last.keras", twin=plain if precision != "float32" else None),
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
    shutil.rmtree(out / "backup", ignore_errors=True)  # the run is complete: nothing left to resume
    return {"run": str(out), "val_metrics": metrics, "seconds": seconds, "precision": precision}
