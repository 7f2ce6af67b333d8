"""``fcnx evaluate``: a Keras model on a labelled folder, whole images, inference mode.

Reports mIoU, IoU per class, pixel accuracy and Dice from one confusion matrix over
all pixels; ``--save-masks`` writes the predicted masks like the write-up's test step.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from fcnx.runtime.atomic import atomic_write_bytes
from fcnx.runtime.card import CardError, ModelCard
from fcnx.runtime.images import pad_to_multiple
from fcnx.runtime.metrics import confusion_matrix, summarize

from .data import Samples, load_samples
from .labels import ClassSpec, read_classes_file


class ModelFileError(ValueError):
    """A model file that is missing, not a .keras archive, or refused by safe mode."""


def resolve_model_path(path: str | Path) -> Path:
    """A run folder means its best.keras."""
    path = Path(path)
    return path / "best.keras" if path.is_dir() else path


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` file (or a run folder's best.keras) with ``safe_mode=True``:
    a file with a Lambda layer (arbitrary code) is refused."""
    path = resolve_model_path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras .keras file (not a zip archive; truncated or another format)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise ModelFileError(
                f"{path}: refused: it contains a Lambda layer, i.e. arbitrary Python code "
                "(fcnx loads models with safe_mode=True)"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelFileError(f"{path}: cannot load as a Keras model: {first}") from None


def find_card(model_path: str | Path) -> ModelCard | None:
    """The card.json of the run folder a model file sits in, if any."""
    card = resolve_model_path(model_path).parent / "card.json"
    return ModelCard.read(card) if card.is_file() else None


def class_spec_from_card(card: ModelCard) -> ClassSpec:
    encoding = str(card.training.get("label_encoding", "index"))
    return ClassSpec(card.classes, card.palette, encoding)


def predict_masks(
    model: keras.Model, images: list[np.ndarray], head: str, multiple: int = 32, batch_size: int = 4
) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8 at each image's own size: mirror-pad to the stride,
    batch consecutive images of equal size, predict in inference mode, crop back."""

    def to_ids(probs: np.ndarray) -> np.ndarray:
        ids = (probs[..., 0] > 0.5) if head == "sigmoid" else probs.argmax(axis=-1)
        return ids.astype(np.uint8)

    return _predict(model, images, multiple, batch_size, to_ids)


def predict_probabilities(
    model: keras.Model, images: list[np.ndarray], multiple: int = 32, batch_size: int = 4
) -> list[np.ndarray]:
    """The model's output maps (H, W, K) float32 at each image's own size, predicted
    like ``predict_masks`` (for calibration and threshold studies)."""
    return _predict(model, images, multiple, batch_size, lambda probs: probs.astype(np.float32))


def _predict(
    model: keras.Model,
    images: list[np.ndarray],
    multiple: int,
    batch_size: int,
    convert: Callable[[np.ndarray], np.ndarray],
) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []

    def flush() -> None:
        converted = convert(np.asarray(model.predict_on_batch(np.stack(batch))))
        outputs.extend(out[:h, :w] for out, (h, w) in zip(converted, sizes))
        batch.clear()
        sizes.clear()

    for image in images:
        padded = pad_to_multiple(image, multiple)
        if batch and (padded.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(padded)
        sizes.append(image.shape[:2])
    if batch:
        flush()
    return outputs


def encode_mask(mask: np.ndarray, classes: ClassSpec) -> np.ndarray:
    """Class ids -> pixels in the dataset's own label encoding (0/255, ids or colours)."""
    if classes.encoding == "binary":
        return (mask * 255).astype(np.uint8)
    if classes.encoding == "palette":
        lut = np.array(classes.palette, dtype=np.uint8)
        return cv2.cvtColor(lut[mask], cv2.COLOR_RGB2BGR)
    return mask


def write_mask(path: Path, mask: np.ndarray, classes: ClassSpec) -> None:
    ok, data = cv2.imencode(".png", encode_mask(mask, classes))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def evaluate_samples(
    model: keras.Model,
    samples: Samples,
    head: str,
    batch_size: int = 4,
    save_masks: str | Path | None = None,
) -> dict[str, Any]:
    masks = predict_masks(model, samples.images, head, batch_size=batch_size)
    n = samples.classes.num_classes
    cm = np.zeros((n, n), dtype=np.int64)
    for truth, pred in zip(samples.masks, masks):
        cm += confusion_matrix(truth, pred, n)
    if save_masks is not None:
        for pair, mask in zip(samples.pairs, masks):
            write_mask(Path(save_masks) / f"{pair.name}.png", mask, samples.classes)
    report = summarize(cm, samples.classes.names)
    report["images"] = len(samples)
    return report


def evaluate(
    model_path: str | Path,
    data: str | Path,
    classes_file: str | Path | None = None,
    batch_size: int = 4,
    save_masks: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a .keras model (or run folder) on DATA/image + DATA/label."""
    model = load_keras_model(model_path)
    try:
        card = find_card(model_path)
    except CardError:
        card = None
    if classes_file:
        classes: ClassSpec | None = read_classes_file(classes_file)
    else:
        classes = class_spec_from_card(card) if card else None
    channels = int(model.inputs[0].shape[-1])
    samples = load_samples(data, channels, classes)
    head = "sigmoid" if int(model.outputs[0].shape[-1]) == 1 else "softmax"
    if head == "softmax" and int(model.outputs[0].shape[-1]) != samples.classes.num_classes:
        raise ValueError(
            f"{model_path}: model predicts {model.outputs[0].shape[-1]} classes but {data} "
            f"has {samples.classes.num_classes}"
        )
    report = evaluate_samples(model, samples, head, batch_size, save_masks)
    report["model"] = str(resolve_model_path(model_path))
    report["data"] = str(data)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table for the terminal."""
    lines = [
        f"images {report['images']}   pixels {report['pixels']:,}",
        f"mIoU {report['miou']:.4f}   pixel accuracy {report['pixel_accuracy']:.4f}   "
        f"mean Dice {report['mean_dice']:.4f}",
        "",
        f"{'class':<20} {'IoU':>8} {'Dice':>8}",
    ]
    for name, iou in report["per_class_iou"].items():
        dice = report["per_class_dice"][name]
        fmt = lambda v: "     n/a" if v is None else f"{v:8.4f}"  # noqa: E731
        lines.append(f"{name:<20} {fmt(iou)} {fmt(dice)}")
    return "\n".join(lines)
