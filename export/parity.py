"""Segmentation-aware parity: does an exported artifact compute what Keras computes?

Tensor comparisons (max/mean absolute probability error) are not enough for
segmentation: what users see is the mask. So each artifact is also judged by mask
agreement with Keras, agreement near class boundaries (where reduced precision flips
pixels first), IoU of its masks against the Keras masks, and, with ground truth, the
change in mIoU. Budgets come from one table keyed by precision, ``BUDGETS`` below
(docs/reference/budgets.md is generated from it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from fcnx.runtime.metrics import confusion_matrix, mean_iou, per_class_iou
from fcnx.runtime.predict.plans import mask_from_probs


@dataclass(frozen=True)
class Budget:
    max_abs_prob: float | None  # None: not judged by probabilities
    mask_agreement: float  # fraction of pixels, at least
    miou_change: float | None  # absolute change in mIoU against ground truth, at most (fraction)


HALF_PRECISION = Budget(max_abs_prob=None, mask_agreement=0.999, miou_change=0.001)
BUDGETS: dict[str, Budget] = {
    "fp32": Budget(max_abs_prob=1e-4, mask_agreement=0.9999, miou_change=None),
    "fp16": HALF_PRECISION,
    "bf16": HALF_PRECISION,  # OpenVINO's bfloat16 inference: judged as FP16
    "int8": Budget(max_abs_prob=None, mask_agreement=0.99, miou_change=0.005),
}

BOUNDARY_RADIUS = 2  # pixels


def boundary_band(mask: np.ndarray, radius: int = BOUNDARY_RADIUS) -> np.ndarray:
    """Pixels within ``radius`` of a class boundary of ``mask`` (H, W)."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


@dataclass
class ParityRow:
    """One artifact compared with the Keras reference over a set of images."""

    artifact: str
    precision: str
    images: int = 0
    max_abs_prob: float | None = None
    mean_abs_prob: float | None = None
    mask_agreement: float = float("nan")
    boundary_agreement: float = float("nan")
    iou_vs_keras: dict[str, float | None] = field(default_factory=dict)
    miou_vs_keras: float = float("nan")
    miou_truth_keras: float | None = None
    miou_truth_artifact: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def miou_change(self) -> float | None:
        if self.miou_truth_keras is None or self.miou_truth_artifact is None:
            return None
        return self.miou_truth_artifact - self.miou_truth_keras

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["miou_change"] = self.miou_change
        data["passed"] = self.passed
        return data


class ParityAccumulator:
    """Feed batches of (reference, artifact) outputs; get a judged ParityRow."""

    def __init__(self, artifact: str, precision: str, num_classes: int) -> None:
        if precision not in BUDGETS:
            raise ValueError(f"no parity budget for precision {precision!r}; one of {sorted(BUDGETS)}")
        self.row = ParityRow(artifact, precision)
        self.num_classes = num_classes
        self._max_abs = 0.0
        self._sum_abs = 0.0
        self._count_abs = 0
        self._has_probs = False
        self._agree = self._pixels = self._band_agree = self._band_pixels = 0
        n = num_classes
        self._cm_vs_keras = np.zeros((n, n), np.int64)
        self._cm_truth_keras = np.zeros((n, n), np.int64)
        self._cm_truth_artifact = np.zeros((n, n), np.int64)
        self._has_truth = False

    def add(
        self,
        keras_probs: np.ndarray,
        artifact_mask: np.ndarray,
        artifact_probs: np.ndarray | None = None,
        truth: np.ndarray | None = None,
    ) -> None:
        keras_mask = mask_from_probs(keras_probs)
        if artifact_mask.shape != keras_mask.shape:
            raise ValueError(
                f"artifact mask shape {artifact_mask.shape} != Keras mask shape {keras_mask.shape}"
            )
        if artifact_probs is not None:
            if artifact_probs.shape != keras_probs.shape:
                raise ValueError(f"artifact probs {artifact_probs.shape} != Keras probs {keras_probs.shape}")
            diff = np.abs(artifact_probs.astype(np.float64) - keras_probs.astype(np.float64))
            self._max_abs = max(self._max_abs, float(diff.max()))
            self._sum_abs += float(diff.sum())
            self._count_abs += diff.size
            self._has_probs = True
        same = artifact_mask == keras_mask
        self._agree += int(same.sum())
        self._pixels += same.size
        for k_mask, s in zip(keras_mask, same):
            band = boundary_band(k_mask)
            self._band_agree += int(s[band].sum())
            self._band_pixels += int(band.sum())
        self._cm_vs_keras += confusion_matrix(keras_mask, artifact_mask, self.num_classes)
        if truth is not None:
            self._has_truth = True
            self._cm_truth_keras += confusion_matrix(truth, keras_mask, self.num_classes)
            self._cm_truth_artifact += confusion_matrix(truth, artifact_mask, self.num_classes)
        self.row.images += len(keras_mask)

    def result(self, class_names: tuple[str, ...] | list[str]) -> ParityRow:
        row = self.row
        if self._has_probs:
            row.max_abs_prob = self._max_abs
            row.mean_abs_prob = self._sum_abs / self._count_abs
        row.mask_agreement = self._agree / self._pixels if self._pixels else float("nan")
        row.boundary_agreement = self._band_agree / self._band_pixels if self._band_pixels else 1.0
        row.iou_vs_keras = {
            n: (None if math.isnan(v) else float(v))
            for n, v in zip(class_names, per_class_iou(self._cm_vs_keras))
        }
        row.miou_vs_keras = mean_iou(self._cm_vs_keras)
        if self._has_truth:
            row.miou_truth_keras = mean_iou(self._cm_truth_keras)
            row.miou_truth_artifact = mean_iou(self._cm_truth_artifact)
        row.failures = judge(row)
        return row


def judge(row: ParityRow) -> list[str]:
    """What is over budget, in words; empty when the row passes."""
    budget = BUDGETS[row.precision]
    failures = []
    if (
        budget.max_abs_prob is not None
        and row.max_abs_prob is not None
        and row.max_abs_prob > budget.max_abs_prob
    ):
        failures.append(f"max abs prob error {row.max_abs_prob:.2e} > {budget.max_abs_prob:.0e}")
    if not row.mask_agreement >= budget.mask_agreement:
        failures.append(f"mask agreement {row.mask_agreement:.4%} < {budget.mask_agreement:.2%}")
    change = row.miou_change
    if budget.miou_change is not None and change is not None and abs(change) > budget.miou_change:
        failures.append(f"mIoU change {change * 100:+.2f} pt exceeds ±{budget.miou_change * 100:.1f} pt")
    return failures


def format_rows(rows: list[ParityRow]) -> str:
    """The parity table for the terminal: one row per artifact, budget verdict last."""
    width = max([8, *(len(r.artifact) for r in rows)])
    header = (
        f"{'artifact':<{width}} {'prec':<5} {'imgs':>4} {'max|Δp|':>9} {'mean|Δp|':>9} "
        f"{'mask agree':>10} {'edge agree':>10} {'mIoU/Keras':>10} {'ΔmIoU(GT)':>10}  verdict"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        fmt_e = lambda v: f"{v:9.2e}" if v is not None else f"{'-':>9}"  # noqa: E731
        change = r.miou_change
        lines.append(
            f"{r.artifact:<{width}} {r.precision:<5} {r.images:>4} {fmt_e(r.max_abs_prob)} "
            f"{fmt_e(r.mean_abs_prob)} {r.mask_agreement:>10.4%} {r.boundary_agreement:>10.4%} "
            f"{r.miou_vs_keras:>10.4f} {(f'{change * 100:+.3f} pt' if change is not None else '-'):>10}  "
            + ("ok" if r.passed else "OVER BUDGET: " + "; ".join(r.failures))
        )
    budgets = "; ".join(
        f"{p}: "
        + ", ".join(
            s
            for s in (
                f"max|Δp| ≤ {b.max_abs_prob:.0e}" if b.max_abs_prob is not None else "",
                f"mask ≥ {b.mask_agreement:.2%}",
                f"|ΔmIoU| ≤ {b.miou_change * 100:.1f} pt" if b.miou_change is not None else "",
            )
            if s
        )
        for p, b in BUDGETS.items()
    )
    lines.append(f"budgets  {budgets}   (edge = within {BOUNDARY_RADIUS} px of a Keras class boundary)")
    return "\n".join(lines)
