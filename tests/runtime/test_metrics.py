from __future__ import annotations

import numpy as np
import pytest

from fcnx.runtime.metrics import confusion_matrix, mean_iou, per_class_iou, pixel_accuracy, summarize


def test_miou_against_a_hand_computed_example() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 2]])
    cm = confusion_matrix(truth, pred, 3)
    # class 0: TP 3, FP 1 (the 0 predicted in row 2), FN 1 -> 3/5
    # class 1: TP 3, FP 1, FN 1 -> 3/5
    # class 2: TP 3, FP 1, FN 1 -> 3/5 ... check the matrix itself first
    assert cm.tolist() == [[3, 1, 0], [0, 3, 1], [1, 0, 3]]
    np.testing.assert_allclose(per_class_iou(cm), [3 / 5, 3 / 5, 3 / 5])
    assert mean_iou(cm) == pytest.approx(0.6)
    assert pixel_accuracy(cm) == pytest.approx(9 / 12)


def test_uneven_example_and_absent_class() -> None:
    truth = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1])
    cm = confusion_matrix(truth, pred, 3)
    iou = per_class_iou(cm)
    np.testing.assert_allclose(iou[:2], [3 / 4, 2 / 3])
    assert np.isnan(iou[2])  # class 2 in neither: left out of the mean
    assert mean_iou(cm) == pytest.approx((3 / 4 + 2 / 3) / 2)
    report = summarize(cm, ["a", "b", "c"])
    assert report["per_class_iou"]["c"] is None
    assert report["per_class_dice"]["a"] == pytest.approx(2 * 3 / (4 + 3))


def test_valid_mask_and_range_checks() -> None:
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2, valid=np.array([1, 0, 1]))
    assert cm.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
