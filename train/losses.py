"""Segmentation loss and metrics, built from Keras's own pieces."""

from __future__ import annotations

import re
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fcnx")
class SegmentationLoss(keras.losses.Loss):
    """Per-pixel cross-entropy (binary for a sigmoid head, sparse categorical for
    softmax), optionally class-weighted, plus ``dice_weight`` x soft Dice loss (mean
    over classes, per image). Returns a per-pixel map so Keras applies sample weights."""

    def __init__(
        self,
        head: str = "softmax",
        num_classes: int = 2,
        dice_weight: float = 0.0,
        class_weights: list[float] | None = None,
        name: str = "segmentation_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights needs {num_classes} values, got {len(class_weights)}")
        self.head = head
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.class_weights = list(class_weights) if class_weights is not None else None

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(ops.squeeze(y_true, axis=-1), "int32")  # (B, H, W)
        if self.head == "sigmoid":
            p = ops.clip(y_pred[..., 0], 1e-7, 1.0 - 1e-7)
            t = ops.cast(labels, p.dtype)
            ce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
            probs = ops.stack([1.0 - p, p], axis=-1)
        else:
            ce = keras.losses.sparse_categorical_crossentropy(labels, y_pred)
            probs = y_pred
        if self.class_weights is not None:
            ce = ce * ops.take(ops.convert_to_tensor(self.class_weights, ce.dtype), labels)
        if not self.dice_weight:
            return ce
        onehot = ops.one_hot(labels, self.num_classes, dtype=probs.dtype)
        inter = ops.sum(probs * onehot, axis=(1, 2))
        total = ops.sum(probs + onehot, axis=(1, 2))
        dice = 1.0 - ops.mean((2.0 * inter + 1.0) / (total + 1.0), axis=-1)  # (B,)
        return ce + self.dice_weight * dice[:, None, None]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "head": self.head,
            "num_classes": self.num_classes,
            "dice_weight": self.dice_weight,
            "class_weights": self.class_weights,
        }


def metric_name(class_name: str) -> str:
    return "iou_" + re.sub(r"[^0-9A-Za-z_]+", "_", class_name)


def segmentation_metrics(head: str, class_names: tuple[str, ...]) -> list[keras.metrics.Metric]:
    """mIoU (named ``miou``, what best.keras is chosen by), IoU per class, pixel accuracy.
    All accumulate a confusion matrix over the epoch: a dataset mIoU, not a batch mean."""
    n = len(class_names)
    if head == "sigmoid":
        metrics: list[keras.metrics.Metric] = [
            keras.metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.5, name="miou")
        ]
        metrics += [
            keras.metrics.BinaryIoU(target_class_ids=[k], threshold=0.5, name=metric_name(c))
            for k, c in enumerate(class_names)
        ]
        metrics.append(keras.metrics.BinaryAccuracy(name="pixel_accuracy"))
        return metrics
    metrics = [keras.metrics.MeanIoU(num_classes=n, sparse_y_pred=False, name="miou")]
    metrics += [
        keras.metrics.IoU(num_classes=n, target_class_ids=[k], sparse_y_pred=False, name=metric_name(c))
        for k, c in enumerate(class_names)
    ]
    metrics.append(keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"))
    return metrics
