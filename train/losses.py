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
    over classes, per image) plus ``lovasz_weight`` x Lovasz-softmax loss (per image).
    Returns a per-pixel map so Keras applies sample weights."""

    def __init__(
        self,
        head: str = "softmax",
        num_classes: int = 2,
        dice_weight: float = 0.0,
        class_weights: list[float] | None = None,
        lovasz_weight: float = 0.0,
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
        self.lovasz_weight = lovasz_weight

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
        if not (self.dice_weight or self.lovasz_weight):
            return ce
        onehot = ops.one_hot(labels, self.num_classes, dtype=probs.dtype)
        region = ops.zeros_like(ce[:, 0, 0])  # (B,)
        if self.dice_weight:
            inter = ops.sum(probs * onehot, axis=(1, 2))
            total = ops.sum(probs + onehot, axis=(1, 2))
            region += self.dice_weight * (1.0 - ops.mean((2.0 * inter + 1.0) / (total + 1.0), axis=-1))
        if self.lovasz_weight:
            region += self.lovasz_weight * lovasz_softmax(probs, onehot)
        return ce + region[:, None, None]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "head": self.head,
            "num_classes": self.num_classes,
            "dice_weight": self.dice_weight,
            "class_weights": self.class_weights,
            "lovasz_weight": self.lovasz_weight,
        }


def lovasz_softmax(probs: Any, onehot: Any) -> Any:
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018) per image: the
    Lovasz extension of the Jaccard loss ``1 - IoU`` of each class, averaged over the
    classes present in the image. It is exact at hard predictions (there it equals
    ``1 - IoU``) and a convex surrogate between them, so it optimizes the metric we
    select models by. ``probs`` and ``onehot``: (B, H, W, C); returns (B,)."""
    shape = ops.shape(probs)
    errors = ops.abs(onehot - probs)
    # (B, C, N): one sorted list of pixel errors per image and class
    errors = ops.transpose(ops.reshape(errors, (shape[0], -1, shape[-1])), (0, 2, 1))
    fg = ops.transpose(ops.reshape(onehot, (shape[0], -1, shape[-1])), (0, 2, 1))
    order = ops.flip(ops.argsort(errors, axis=-1), axis=-1)  # largest error first
    errors = ops.take_along_axis(errors, order, axis=-1)
    fg = ops.take_along_axis(fg, order, axis=-1)
    # Jaccard loss of the k largest errors as a set, for every k, and its increments
    total = ops.sum(fg, axis=-1, keepdims=True)
    intersection = total - ops.cumsum(fg, axis=-1)
    union = total + ops.cumsum(1.0 - fg, axis=-1)  # >= 1: never divides by zero
    jaccard = 1.0 - intersection / union
    increments = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
    per_class = ops.sum(errors * ops.stop_gradient(increments), axis=-1)  # (B, C)
    present = ops.cast(total[..., 0] > 0, per_class.dtype)
    return ops.sum(per_class * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)


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
