"""Segmenter on real onnxruntime sessions of the tiny trained model: any image in, a mask
at its own size out; batching never changes a result; backends agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnx.export.parity import BUDGETS
from fcnx.runtime.backends.registry import load
from fcnx.runtime.predict.segmenter import Segmenter


def _images(n: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def segmenter(tiny_onnx: Path) -> Segmenter:
    return Segmenter(load(tiny_onnx, "ort-cpu"), batch_size=4)


def test_mixed_sizes_and_channel_counts_come_back_at_their_own_size(segmenter: Segmenter) -> None:
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (64, 64), dtype=np.uint8),  # 2-D grey, the model's size
        rng.integers(0, 256, (37, 101, 1), dtype=np.uint8),  # odd size, 1 channel
        rng.integers(0, 256, (120, 80, 3), dtype=np.uint8),  # RGB
        rng.integers(0, 256, (50, 70, 4), dtype=np.uint8),  # RGBA
        rng.integers(0, 65536, (64, 96), dtype=np.uint16),  # 16-bit
        rng.integers(0, 256, (1, 1), dtype=np.uint8),  # a single pixel
    ]
    masks = segmenter.predict(images)
    assert [m.shape for m in masks] == [im.shape[:2] for im in images]
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)


def test_a_result_does_not_depend_on_its_batch(segmenter: Segmenter) -> None:
    images = [*_images(9, seed=2), np.random.default_rng(3).integers(0, 256, (40, 90), np.uint8)]
    together = segmenter.predict(images)
    alone = [segmenter.predict([im])[0] for im in images]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)


def test_probabilities_at_the_image_size(segmenter: Segmenter) -> None:
    images = [*_images(2), np.zeros((30, 50), np.uint8)]
    probs = segmenter.predict(images, probs=True)
    assert [p.shape for p in probs] == [(64, 64, 2), (64, 64, 2), (30, 50, 2)]
    np.testing.assert_allclose(probs[0].sum(axis=-1), 1.0, atol=1e-5)
    masks = segmenter.predict(images[:2])
    np.testing.assert_array_equal(masks[0], probs[0].argmax(-1))


def test_fixed_batch_model_pads_the_last_batch_and_matches_dynamic(
    tiny_onnx: Path, tiny_onnx_fixed: Path, segmenter: Segmenter
) -> None:
    fixed = Segmenter(load(tiny_onnx_fixed, "ort-cpu"))
    assert fixed.batch_size == 3 and fixed.backend.fixed_batch
    images = _images(7, seed=4)  # 3 + 3 + 1 (padded)
    for a, b in zip(fixed.predict(images), segmenter.predict(images)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fixed batch of 3"):
        Segmenter(load(tiny_onnx_fixed, "ort-cpu"), batch_size=8)
    with pytest.raises(ValueError, match="no probabilities output"):
        fixed.predict(images[:1], probs=True)


def test_more_images_than_the_batch(segmenter: Segmenter) -> None:
    images = _images(11, seed=5)
    assert len(segmenter.predict(images)) == 11


def test_fit_pad_letterboxes_and_dynamic_models_run_at_native_size(
    tiny_onnx: Path, tiny_onnx_dynamic: Path
) -> None:
    image = np.random.default_rng(6).integers(0, 256, (40, 128), np.uint8)
    padded = Segmenter(load(tiny_onnx, "ort-cpu"), fit="pad")
    prepared = padded.prepare(image)
    assert prepared.image.shape == (64, 64, 1) and prepared.valid == (20, 64)
    assert padded.predict([image])[0].shape == (40, 128)

    native = Segmenter(load(tiny_onnx_dynamic, "ort-cpu"))
    assert native.fit == "pad" and native.input_hw is None
    prepared = native.prepare(image)
    assert prepared.image.shape == (64, 128, 1) and prepared.valid == (40, 128)
    # at the model's own size, a fixed and a dynamic export give the same masks
    same = _images(3, seed=7)
    for a, b in zip(native.predict(same), padded.predict(same)):
        np.testing.assert_array_equal(a, b)


def test_bad_arrays_are_named(segmenter: Segmenter) -> None:
    with pytest.raises(ValueError, match=r"images\[1\]"):
        segmenter.predict([np.zeros((8, 8), np.uint8), np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(ValueError, match="fit must be"):
        Segmenter(segmenter.backend, fit="stretch")


def test_keras_and_onnxruntime_backends_agree_within_the_fp32_budget(tiny_run: Path, tiny_onnx: Path) -> None:
    keras_backend = load(tiny_run)
    assert keras_backend.name == "keras" and keras_backend.provider.startswith("keras ")
    images = _images(6, seed=8)
    batch = np.stack(images)[..., None]
    ref = keras_backend.infer(batch)
    out = load(tiny_onnx, "ort-cpu").infer(batch)
    budget = BUDGETS["fp32"]
    assert np.abs(ref["probs"] - out["probs"]).max() <= (budget.max_abs_prob or 0.0)
    assert (ref["mask"] == out["mask"]).mean() >= budget.mask_agreement
