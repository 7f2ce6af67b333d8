"""Segmenter: any image in, its exact mask at its own size out. Runs on the shipped
threshold ONNX (a real onnxruntime session, any size) and the FakeBackend (the fixed
sizes, fixed batches and mask-only outputs of real deployments), both of which answer
mask = pixel > 127, so every assertion is an exact mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fcnx.export.parity import BUDGETS
from fcnx.runtime import Segmenter, load
from fcnx.runtime.images import to_channels, to_uint8

from ..fakes import THRESHOLD_ONNX, FakeBackend, threshold_mask


def _images(n: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter(load(THRESHOLD_ONNX, "ort-cpu"), batch_size=4)


def test_every_kind_of_image_gets_its_exact_mask_at_its_own_size(segmenter: Segmenter) -> None:
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (64, 64), dtype=np.uint8),  # 2-D grey
        rng.integers(0, 256, (37, 101, 1), dtype=np.uint8),  # odd size: padded to 64x128, cropped back
        rng.integers(0, 256, (120, 80, 3), dtype=np.uint8),  # RGB: converted to grey
        rng.integers(0, 256, (50, 70, 4), dtype=np.uint8),  # RGBA: alpha dropped
        rng.integers(0, 65536, (64, 96), dtype=np.uint16),  # 16-bit: scaled to 8
        rng.integers(0, 256, (1, 1), dtype=np.uint8),  # a single pixel
    ]
    masks = segmenter.predict(images)
    for image, mask in zip(images, masks):
        grey = to_channels(to_uint8(image), 1)
        np.testing.assert_array_equal(mask, threshold_mask(grey))


def test_a_result_does_not_depend_on_its_batch(segmenter: Segmenter) -> None:
    images = [*_images(9, seed=2), np.random.default_rng(3).integers(0, 256, (40, 90), np.uint8)]
    together = segmenter.predict(images)
    alone = [segmenter.predict([im])[0] for im in images]
    for image, a, b in zip(images, together, alone):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, threshold_mask(image))


def test_probabilities_come_back_at_the_image_size(segmenter: Segmenter) -> None:
    images = [*_images(2), np.full((30, 50), 200, np.uint8)]
    probs = segmenter.predict(images, probs=True)
    assert [p.shape for p in probs] == [(64, 64, 2), (64, 64, 2), (30, 50, 2)]
    np.testing.assert_allclose(probs[0].sum(axis=-1), 1.0, atol=1e-5)
    for image, p in zip(images, probs):
        np.testing.assert_array_equal(p.argmax(-1), threshold_mask(image))


def test_same_shapes_share_batches_and_a_fixed_batch_is_padded() -> None:
    fake = FakeBackend(fixed_batch=3, outputs=("mask",))
    segmenter = Segmenter(fake)
    assert segmenter.batch_size == 3
    images = _images(4, (32, 32), seed=4) + _images(3, (64, 32), seed=5)  # 3 + 1 (padded), then 3
    masks = segmenter.predict(images)
    assert fake.batches == [(3, 32, 32, 1), (3, 32, 32, 1), (3, 64, 32, 1)]
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(mask, threshold_mask(image))
    with pytest.raises(ValueError, match="exported with a fixed batch of 3; --batch 8 cannot run on it"):
        Segmenter(fake, batch_size=8)
    with pytest.raises(ValueError, match=r"fake: this model has no probabilities output .*--output both"):
        segmenter.predict(images[:1], probs=True)


def test_a_fixed_size_model_gets_resized_or_letterboxed_images() -> None:
    image = np.zeros((40, 128), np.uint8)
    image[:, 64:] = 255  # right half foreground
    assert Segmenter(FakeBackend(input_hw=(64, 64))).fit == "tile"  # the default: tiles at full resolution
    resize = Segmenter(FakeBackend(input_hw=(64, 64)), fit="resize")
    assert resize.fit == "resize"
    prepared = resize.prepare(image)
    assert prepared.image.shape == (64, 64, 1) and prepared.valid == (64, 64)
    np.testing.assert_array_equal(resize.predict([image])[0], threshold_mask(image))

    pad = Segmenter(FakeBackend(input_hw=(64, 64)), fit="pad")
    prepared = pad.prepare(image)
    assert prepared.image.shape == (64, 64, 1) and prepared.valid == (20, 64)  # scaled to fit, then padded
    np.testing.assert_array_equal(pad.predict([image])[0], threshold_mask(image))


def test_a_dynamic_model_runs_each_image_at_its_own_resolution() -> None:
    fake = FakeBackend()
    segmenter = Segmenter(fake)
    assert segmenter.fit == "tile" and segmenter.input_hw is None  # smaller than a tile: whole
    image = cv2.resize(
        np.arange(256, dtype=np.uint8).reshape(16, 16), (90, 45), interpolation=cv2.INTER_NEAREST
    )
    prepared = segmenter.prepare(image)
    assert prepared.image.shape == (64, 96, 1) and prepared.valid == (45, 90)  # mirror-padded to the stride
    np.testing.assert_array_equal(segmenter.predict([image])[0], threshold_mask(image))
    assert fake.batches == [(1, 64, 96, 1)]
    with pytest.raises(ValueError, match="fit='resize' needs a model with a fixed input size"):
        Segmenter(FakeBackend(), fit="resize")


def test_bad_arrays_and_options_are_named(segmenter: Segmenter) -> None:
    with pytest.raises(ValueError, match=r"images\[1\]: 2 channels; images have 1, 3 or 4"):
        segmenter.predict([np.zeros((8, 8), np.uint8), np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(ValueError, match=r"images\[0\]: expected an \(H, W\) or \(H, W, C\) image array"):
        segmenter.predict([np.zeros((2, 8, 8, 1), np.uint8)])
    with pytest.raises(ValueError, match="fit must be one of auto, resize, pad, got 'stretch'"):
        Segmenter(segmenter.backend, fit="stretch")
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        Segmenter(FakeBackend(), batch_size=0)


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
