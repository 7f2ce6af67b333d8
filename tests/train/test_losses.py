"""The segmentation loss's region terms against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fcnx.train.losses import SegmentationLoss, lovasz_softmax  # noqa: E402


def _onehot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype="float32")[labels]


def test_lovasz_equals_the_jaccard_loss_at_hard_predictions() -> None:
    # 1 image, 2x3 pixels, 3 classes; class 2 is predicted but absent
    truth = np.array([[[0, 0, 1], [1, 1, 0]]])
    pred = np.array([[[0, 1, 1], [1, 2, 0]]])
    # class 0: truth {0,1,5}, pred {0,5} -> IoU 2/3; class 1: truth {2,3,4}, pred {1,2,3} -> IoU 2/4
    expected = np.mean([1 - 2 / 3, 1 - 2 / 4])  # class 2 is not in the image: not averaged
    got = keras.ops.convert_to_numpy(lovasz_softmax(_onehot(pred, 3), _onehot(truth, 3)))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_lovasz_is_zero_when_right_and_grows_with_the_error() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (2, 8, 8))
    onehot = _onehot(truth, 2)
    losses = [
        keras.ops.convert_to_numpy(lovasz_softmax(onehot * (1 - a) + (1 - onehot) * a, onehot))
        for a in (0.0, 0.2, 0.4)
    ]
    np.testing.assert_allclose(losses[0], 0.0, atol=1e-7)
    assert np.all(losses[1] > 0) and np.all(losses[2] > losses[1])


def test_lovasz_gradient_pushes_towards_the_truth() -> None:
    import tensorflow as tf

    truth = np.array([[[0, 1], [1, 0]]])
    onehot = tf.constant(_onehot(truth, 2))
    logits = tf.Variable(np.zeros((1, 2, 2, 2), "float32"))
    with tf.GradientTape() as tape:
        loss = lovasz_softmax(tf.nn.softmax(logits), onehot)
    grad = tape.gradient(loss, logits).numpy()
    # descending the gradient raises the true class's logit at every pixel
    assert np.all((-grad * (2 * onehot.numpy() - 1)) > 0)


def test_segmentation_loss_adds_the_weighted_region_terms() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (2, 8, 8, 1))
    probs = keras.ops.softmax(rng.normal(size=(2, 8, 8, 2)).astype("float32"))
    onehot = _onehot(labels[..., 0], 2)
    ce = SegmentationLoss()(labels, probs)
    both = SegmentationLoss(lovasz_weight=0.5)(labels, probs)
    lovasz = keras.ops.convert_to_numpy(lovasz_softmax(probs, onehot)).mean()
    np.testing.assert_allclose(float(both), float(ce) + 0.5 * lovasz, rtol=1e-5)
    config = SegmentationLoss(lovasz_weight=0.5, dice_weight=1.0).get_config()
    assert SegmentationLoss.from_config(config).lovasz_weight == 0.5
