"""``fcnx evaluate``: a Keras model on a labelled folder, full resolution, inference mode.

Predicts through the runtime's ``Segmenter`` over the Keras backend, exactly like
``fcnx predict`` and the parity check (each image at its own resolution: whole, padded
to the stride, or as overlapping tiles when larger than the model's size), and reports
mIoU, IoU per class, pixel accuracy and Dice from one confusion matrix over all pixels;
``--save-masks`` writes the predicted masks like the write-up's test step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from fcnx.runtime.atomic import atomic_write_bytes
from fcnx.runtime.card import CardError, ModelCard
from fcnx.runtime.intensity import NoteCounter, parse_intensity
from fcnx.runtime.metrics import confusion_matrix, summarize
from fcnx.runtime.predict.segmenter import Segmenter

from .data import Samples, load_samples
from .keras_backend import KerasBackend
from .labels import ClassSpec, class_spec_from_card, read_classes_file
from .model_file import find_card, load_keras_model, resolve_model_path


def keras_segmenter(
    model: keras.Model,
    card: ModelCard | None = None,
    batch_size: int = 4,
    tile: str = "auto",
    overlap: int | None = None,
) -> Segmenter:
    """The one prediction path, over an in-memory Keras model (tiled as ``fcnx predict``)."""
    return Segmenter(KerasBackend(model=model, card=card), batch_size=batch_size, tile=tile, overlap=overlap)


def predict_masks(
    model: keras.Model,
    images: list[np.ndarray],
    batch_size: int = 4,
    tile: str = "auto",
    overlap: int | None = None,
    card: ModelCard | None = None,
) -> list[np.ndarray]:
    """Class-id masks (H, W) uint8 at each image's own size."""
    return keras_segmenter(model, card, batch_size, tile, overlap).predict(images)


def predict_probabilities(
    model: keras.Model, images: list[np.ndarray], batch_size: int = 4
) -> list[np.ndarray]:
    """The model's output maps (H, W, K) float32 at each image's own size (for
    calibration and threshold studies)."""
    return keras_segmenter(model, batch_size=batch_size).predict(images, probs=True)


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
    batch_size: int = 4,
    save_masks: str | Path | None = None,
    tile: str = "auto",
    overlap: int | None = None,
    card: ModelCard | None = None,
) -> dict[str, Any]:
    masks = predict_masks(model, samples.images, batch_size, tile, overlap, card)
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
    tile: str = "auto",
    overlap: int | None = None,
    intensity: str | None = None,
    labels: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a .keras model (or run folder) on DATA/image + DATA/label (or on the image
    stack DATA and its label stack ``labels``, page by page), tiled like
    ``fcnx predict`` (images larger than the model's size run as overlapping tiles), 16-bit
    images mapped by ``intensity``, else by the run's card (full for a bare .keras file)."""
    if intensity:
        parse_intensity(intensity, "--intensity")  # a malformed spec fails before anything loads
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
    mapping = intensity or (card.intensity if card else "full")
    notes = NoteCounter()
    samples = load_samples(data, channels, classes, mapping, notes, labels)
    if notes.count:
        print(notes.line(), file=sys.stderr)
    head = "sigmoid" if int(model.outputs[0].shape[-1]) == 1 else "softmax"
    if head == "softmax" and int(model.outputs[0].shape[-1]) != samples.classes.num_classes:
        raise ValueError(
            f"{model_path}: model predicts {model.outputs[0].shape[-1]} classes but {data} "
            f"has {samples.classes.num_classes}"
        )
    report = evaluate_samples(model, samples, batch_size, save_masks, tile, overlap, card)
    report["model"] = str(resolve_model_path(model_path))
    report["data"] = str(data)
    report["intensity"] = mapping
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
