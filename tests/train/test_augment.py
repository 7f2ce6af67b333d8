from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fcnx.train.augment import augment_pair, random_crop_pair
from fcnx.train.config import AugmentConfig


def _blocks(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A mask of 3 classes in big blocks, and an image that is the mask times 100."""
    mask = np.zeros((size, size, 1), np.uint8)
    mask[size // 4 : size // 2, size // 5 : size // 2] = 1
    mask[size // 2 :, size // 2 :] = 2
    return (mask * 100).astype(np.uint8), mask


GEOMETRIC = AugmentConfig(
    brightness=0.0, contrast=0.0, rotation=30.0, shear=10.0, zoom=0.2, width_shift=0.1, height_shift=0.1
)


@pytest.mark.parametrize("elastic", [0.0, 6.0])
@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned(seed: int, elastic: float) -> None:
    image, mask = _blocks()
    config = dataclasses.replace(GEOMETRIC, elastic=elastic)
    out_image, out_mask = augment_pair(tf.constant(image), tf.constant(mask), config, tf.constant([7, seed]))
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.dtype == np.uint8 and out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 1, 2}  # nearest: no new class values
    # Away from edges (where bilinear and nearest may differ by a pixel) the image still
    # spells out the mask: the two were moved by the same transform.
    recovered = np.round(out_image / 100.0).astype(np.uint8)
    assert (recovered == out_mask).mean() > 0.97
    assert not np.array_equal(out_mask, mask)  # something did change


def test_same_seed_same_result_other_seed_other_result() -> None:
    image, mask = _blocks()
    a = augment_pair(tf.constant(image), tf.constant(mask), AugmentConfig(), tf.constant([1, 2]))
    b = augment_pair(tf.constant(image), tf.constant(mask), AugmentConfig(), tf.constant([1, 2]))
    c = augment_pair(tf.constant(image), tf.constant(mask), AugmentConfig(), tf.constant([1, 3]))
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[1].numpy(), c[1].numpy())


def test_flip_only_is_an_exact_flip() -> None:
    image, mask = _blocks()
    flips = AugmentConfig(
        rotation=0,
        width_shift=0,
        height_shift=0,
        shear=0,
        zoom=0,
        hflip=True,
        vflip=False,
        brightness=0,
        contrast=0,
    )
    seen = set()
    for seed in range(8):
        out_image, out_mask = augment_pair(
            tf.constant(image), tf.constant(mask), flips, tf.constant([0, seed])
        )
        flipped = np.array_equal(out_mask.numpy(), mask[:, ::-1])
        assert flipped or np.array_equal(out_mask.numpy(), mask)
        assert np.array_equal(out_image.numpy(), out_mask.numpy() * 100)
        seen.add(flipped)
    assert seen == {True, False}


def test_brightness_contrast_change_the_image_only() -> None:
    image, mask = _blocks()
    photometric = AugmentConfig(
        rotation=0,
        width_shift=0,
        height_shift=0,
        shear=0,
        zoom=0,
        hflip=False,
        vflip=False,
        brightness=0.3,
        contrast=0.3,
    )
    out_image, out_mask = augment_pair(
        tf.constant(image), tf.constant(mask), photometric, tf.constant([0, 1])
    )
    assert np.array_equal(out_mask.numpy(), mask)
    assert not np.array_equal(out_image.numpy(), image)


def test_random_crop_takes_the_same_window() -> None:
    image, mask = _blocks()
    out_image, out_mask = random_crop_pair(tf.constant(image), tf.constant(mask), 32, tf.constant([0, 5]))
    assert out_image.shape == (32, 32, 1) and out_mask.shape == (32, 32, 1)
    assert np.array_equal(out_image.numpy(), out_mask.numpy() * 100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(zoom=1.0), r"augment zoom must be in \[0, 1\), got 1.0"),
        (dict(rotation=200), r"rotation must be in \[0, 180\] degrees, got 200"),
        (dict(shear=90), r"shear must be in \[0, 90\) degrees, got 90"),
        (dict(brightness=-0.1), r"augment brightness must be in \[0, 1\), got -0.1"),
        (dict(elastic=-1), "elastic must be >= 0 and elastic_grid >= 2, got -1, 3"),
        (dict(elastic_grid=1), "elastic must be >= 0 and elastic_grid >= 2, got 0.0, 1"),
    ],
)
def test_bad_augment_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_elastic_shares_the_affine_map_and_adds_a_smooth_field(seed: int) -> None:
    image, mask = _blocks()
    affine = augment_pair(tf.constant(image), tf.constant(mask), GEOMETRIC, tf.constant([7, seed]))
    tiny = dataclasses.replace(GEOMETRIC, elastic=1e-4)
    same = augment_pair(tf.constant(image), tf.constant(mask), tiny, tf.constant([7, seed]))
    assert np.array_equal(affine[1].numpy(), same[1].numpy())  # same coordinate convention
    assert np.abs(affine[0].numpy().astype(int) - same[0].numpy()).max() <= 1
    bent = augment_pair(
        tf.constant(image),
        tf.constant(mask),
        dataclasses.replace(GEOMETRIC, elastic=6.0),
        tf.constant([7, seed]),
    )
    changed = (bent[1].numpy() != affine[1].numpy()).mean()
    assert 0.01 < changed < 0.3  # moved near the class borders, not scrambled
