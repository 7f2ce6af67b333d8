"""Augmentation applied identically to an image and its mask.

All geometric changes (the write-up's rotation, shifts, shear, zoom and flips) are
composed into one affine matrix and applied by one resampling: bilinear for the image,
nearest for the mask, mirrored borders for both. With ``elastic`` (the U-Net paper's
augmentation for EM images), a smooth random displacement field (random shifts on a
coarse grid, bicubically interpolated) is added to the output coordinates before the
affine map: still one resampling. One resampling means no extra blur,
and the same matrix for both means the mask can never drift from its image.
Brightness and contrast touch the image only. Randomness is stateless, seeded per
sample, so a run is reproducible.
"""

from __future__ import annotations

import math

import tensorflow as tf

from .config import NO_AUGMENTATION, AugmentConfig

__all__ = ["NO_AUGMENTATION", "affine_matrix", "augment_pair", "random_crop_pair"]


def _uniform(seed: tf.Tensor, index: int, low: float, high: float) -> tf.Tensor:
    sub = tf.stack([seed[0], seed[1] * 16 + index])
    return tf.random.stateless_uniform([], sub, minval=low, maxval=high)


def _flip_sign(seed: tf.Tensor, index: int, enabled: bool) -> tf.Tensor:
    if not enabled:
        return tf.constant(1.0)
    return tf.where(_uniform(seed, index, 0.0, 1.0) < 0.5, -1.0, 1.0)


def affine_matrix(config: AugmentConfig, height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The 8-vector ImageProjectiveTransform wants: output pixel -> input pixel."""
    c = config
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    theta = _uniform(seed, 0, -c.rotation, c.rotation) * (math.pi / 180.0)
    shear = _uniform(seed, 1, -c.shear, c.shear) * (math.pi / 180.0)
    scale = _uniform(seed, 2, 1.0 - c.zoom, 1.0 + c.zoom)
    tx = _uniform(seed, 3, -c.width_shift, c.width_shift) * w
    ty = _uniform(seed, 4, -c.height_shift, c.height_shift) * h
    fx, fy = _flip_sign(seed, 5, c.hflip), _flip_sign(seed, 6, c.vflip)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0

    cos, sin, tan = tf.cos(theta), tf.sin(theta), tf.tan(shear)
    # linear part L = R(theta) @ Shear @ diag(scale * fx, scale * fy), about the centre
    a, b = cos * scale * fx, (cos * tan - sin) * scale * fy
    d, e = sin * scale * fx, (sin * tan + cos) * scale * fy
    # x_in = L (x_out - c) + c + t
    a2 = cx + tx - (a * cx + b * cy)
    b2 = cy + ty - (d * cx + e * cy)
    return tf.stack([a, b, a2, d, e, b2, 0.0, 0.0])


def _warp(image: tf.Tensor, matrix: tf.Tensor, interpolation: str) -> tf.Tensor:
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=matrix[None],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="REFLECT",
    )
    return out[0]


def elastic_field(config: AugmentConfig, height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """(H, W, 2) smooth random (dx, dy) in pixels: normal shifts of std ``elastic`` on an
    ``elastic_grid`` x ``elastic_grid`` grid, bicubically interpolated."""
    sub = tf.stack([seed[0], seed[1] * 16 + 10])
    grid = config.elastic_grid
    coarse = tf.random.stateless_normal([1, grid, grid, 2], sub, stddev=config.elastic)
    return tf.image.resize(coarse, tf.stack([height, width]), method="bicubic")[0]


def _mirror(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Integer indices folded into [0, size) by mirroring at the edges (d c b a | a b c d)."""
    period = 2 * size
    index = tf.math.floormod(index, period)
    return tf.where(index >= size, period - 1 - index, index)


def _remap(image: tf.Tensor, x: tf.Tensor, y: tf.Tensor, nearest: bool) -> tf.Tensor:
    """Sample image (H, W, C) at float pixel coordinates x, y (H, W): bilinear or nearest.
    Not keras.ops.image.map_coordinates: its "reflect" folds negative indices like
    "mirror" (Keras 3.15), which would disagree with ``_warp`` at the borders."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]

    def at(yi: tf.Tensor, xi: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(image, tf.stack([_mirror(yi, h), _mirror(xi, w)], axis=-1))

    if nearest:
        return at(tf.cast(tf.round(y), tf.int32), tf.cast(tf.round(x), tf.int32))
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    pixels = [tf.cast(at(y0 + dy, x0 + dx), tf.float32) for dy in (0, 1) for dx in (0, 1)]
    top = pixels[0] * (1 - fx) + pixels[1] * fx
    bottom = pixels[2] * (1 - fx) + pixels[3] * fx
    out = top * (1 - fy) + bottom * fy
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), image.dtype)


def _warp_elastic(
    image: tf.Tensor, mask: tf.Tensor, matrix: tf.Tensor, field: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ys, xs = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    xo, yo = xs + field[..., 0], ys + field[..., 1]
    x = matrix[0] * xo + matrix[1] * yo + matrix[2]
    y = matrix[3] * xo + matrix[4] * yo + matrix[5]
    return _remap(image, x, y, nearest=False), _remap(mask, x, y, nearest=True)


def augment_pair(
    image: tf.Tensor, mask: tf.Tensor, config: AugmentConfig, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """image uint8 (H, W, C), mask uint8 (H, W, 1) -> the same, transformed together."""
    seed = tf.cast(seed, tf.int64)
    shape = tf.shape(image)
    matrix = affine_matrix(config, shape[0], shape[1], seed)
    if config.elastic > 0:
        field = elastic_field(config, shape[0], shape[1], seed)
        image, mask = _warp_elastic(image, mask, matrix, field)
    else:
        image = _warp(image, matrix, "BILINEAR")
        mask = _warp(mask, matrix, "NEAREST")
    if config.brightness or config.contrast:
        x = tf.cast(image, tf.float32)
        factor = _uniform(seed, 7, 1.0 - config.contrast, 1.0 + config.contrast)
        shift = _uniform(seed, 8, -config.brightness, config.brightness) * 255.0
        mean = tf.reduce_mean(x)
        x = (x - mean) * factor + mean + shift
        image = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
    return image, mask


def random_crop_pair(
    image: tf.Tensor, mask: tf.Tensor, size: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The same random size x size window of image (H, W, C) and mask (H, W, 1)."""
    channels = image.shape[-1]
    both = tf.concat([image, mask], axis=-1)
    sub = tf.stack([tf.cast(seed[0], tf.int64), tf.cast(seed[1], tf.int64) * 16 + 9])
    crop = tf.image.stateless_random_crop(both, [size, size, channels + 1], seed=sub)
    return crop[..., :channels], crop[..., channels:]
