"""The FCN family (Long, Shelhamer, Darrell 2015) as plain Keras functional models.

FCN-32s … FCN-8s follow the paper; FCN-4s and FCN-2s continue the skip fusion down
to pool2 and pool1 (the write-up's fix for jagged edges). Every layer is a standard
Keras layer, so a saved ``.keras`` file loads with ``safe_mode=True`` without fcnx.

The graph takes **uint8** images: normalization is the first layer, so training and
serving can never disagree on preprocessing.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from .config import ARCHS, CONVS_PER_BLOCK, WIDTHS, ModelConfig

__all__ = ["ARCHS", "WIDTHS", "ModelConfig", "bilinear_kernel", "build_fcn"]


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """A Conv2DTranspose kernel (size, size, channels, channels) that upsamples each
    channel bilinearly and independently, as the FCN paper initializes its deconvolutions.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1.0 - np.abs(np.arange(size) - center) / factor
    kernel2d = np.outer(ramp, ramp).astype("float32")
    kernel = np.zeros((size, size, channels, channels), dtype="float32")
    for c in range(channels):
        kernel[:, :, c, c] = kernel2d
    return kernel


def _conv(x: Any, filters: int, size: int, name: str, batch_norm: bool, momentum: float) -> Any:
    if not batch_norm:
        return layers.Conv2D(filters, size, padding="same", activation="relu", name=name)(x)
    x = layers.Conv2D(filters, size, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _upsample(x: Any, channels: int, factor: int, name: str) -> Any:
    # kernel 2f, stride f, 'same' padding: exactly f times larger, the paper's choice.
    return layers.Conv2DTranspose(
        channels, 2 * factor, strides=factor, padding="same", use_bias=False, name=name
    )(x)


def build_fcn(config: ModelConfig, precision: str = "float32") -> keras.Model:
    """Build an FCN; it runs on any input whose sides are multiples of 32.

    ``precision="mixed_bfloat16"`` builds it for mixed-precision training (bfloat16
    compute, float32 weights, float32 probabilities); saved models are float32
    (fit.py saves a float32 twin), so deployment never sees bfloat16."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)  # layers take the policy in force when built
    try:
        return _build_fcn(config)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_fcn(config: ModelConfig) -> keras.Model:
    c = config
    n_out = c.output_channels
    score_activation = None if c.linear_scores else "relu"

    image = keras.Input(shape=(None, None, c.in_channels), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / c.norm_std, offset=-c.norm_mean / c.norm_std, name="normalize")(image)

    pools = []
    for block, (filters, n_convs) in enumerate(zip(WIDTHS[c.width], CONVS_PER_BLOCK), start=1):
        for i in range(1, n_convs + 1):
            x = _conv(x, filters, 3, f"block{block}_conv{i}", c.batch_norm, c.bn_momentum)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        pools.append(x)

    # fc6/fc7 as 1x1 convolutions. No batch norm here: a BN after dropout sees a
    # different variance in training than in inference (the "variance shift").
    for name in ("fc6", "fc7"):
        x = layers.Conv2D(c.fc_filters, 1, activation="relu", name=name)(x)
        x = layers.Dropout(c.dropout, name=f"{name}_dropout")(x)
    score = layers.Conv2D(n_out, 1, activation=score_activation, name="score_fr")(x)

    for level in c.skip_levels:
        up = _upsample(score, n_out, 2, f"upscore_pool{level}")
        skip = layers.Conv2D(n_out, 1, activation=score_activation, name=f"score_pool{level}")(
            pools[level - 1]
        )
        score = layers.Add(name=f"fuse_pool{level}")([up, skip])

    logits = _upsample(score, n_out, c.final_upsample, "upscore_final")
    probs = layers.Activation(c.head, dtype="float32", name="probs")(logits)
    model = keras.Model(image, probs, name=f"{c.arch}_{c.width}")

    if c.bilinear_init:
        # Set as weights (not a custom initializer) so the saved config stays standard Keras.
        for layer in model.layers:
            if isinstance(layer, layers.Conv2DTranspose):
                size = layer.kernel_size[0]
                layer.set_weights([bilinear_kernel(size, n_out)])
    return model
