"""Fitting arbitrary image sizes to a fully convolutional model's stride."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad the bottom and right of (H, W, ...) so H and W are multiples of
    ``multiple``; the original is ``result[:H, :W]``."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="symmetric")
