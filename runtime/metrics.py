"""Segmentation metrics from a confusion matrix (numpy only, shared by evaluate,
parity and the benchmarks)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(
    truth: np.ndarray, pred: np.ndarray, num_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """``cm[t, p]`` counts pixels of true class t predicted as p (int64)."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} pixels but prediction has {pred.size}")
    if valid is not None:
        keep = np.asarray(valid).ravel().astype(bool)
        truth, pred = truth[keep], pred[keep]
    for name, values in (("truth", truth), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1}")
    counts = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def per_class_dice(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    total = cm.sum(axis=0) + cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 2 * tp / total, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = per_class_iou(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def summarize(cm: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, object]:
    """The evaluation report: mIoU, pixel accuracy, mean Dice, per-class IoU and Dice."""
    iou, dice = per_class_iou(cm), per_class_dice(cm)
    return {
        "miou": mean_iou(cm),
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        "per_class_iou": {n: _float(v) for n, v in zip(class_names, iou)},
        "per_class_dice": {n: _float(v) for n, v in zip(class_names, dice)},
        "pixels": int(cm.sum()),
        "confusion_matrix": cm.tolist(),
    }


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
