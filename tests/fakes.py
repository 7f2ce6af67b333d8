"""Test doubles with a known answer. ``FakeBackend`` is a real ``Backend`` subclass whose
"model" is a threshold: mask = pixel > 127, probs = (1 - p, p) with p = pixel / 255
(first channel), so every test can say exactly which mask each image must get. It can
take the shapes real deployments have: a fixed input size, a fixed batch, mask-only
outputs. It records every batch shape it ran."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnx.runtime.backends.base import Backend
from fcnx.runtime.card import ModelCard, default_palette
from fcnx.runtime.data import FOLDER

THRESHOLD_ONNX = FOLDER / "threshold.onnx"  # the same answer as a real onnxruntime model


def threshold_mask(image: np.ndarray) -> np.ndarray:
    """What both fakes answer for a uint8 (H, W) or (H, W, 1) image."""
    return (image.reshape(image.shape[:2]) > 127).astype(np.uint8)


class FakeBackend(Backend):
    def __init__(
        self,
        input_hw: tuple[int | None, int | None] = (None, None),
        fixed_batch: int | None = None,
        outputs: tuple[str, ...] = ("probs", "mask"),
        channels: int = 1,
        path: str | Path = "fake.onnx",
    ) -> None:
        super().__init__(path)
        self.name = "fake"
        self.provider = "threshold at 127"
        h, w = input_hw
        self.card = ModelCard(
            architecture="threshold", classes=("background", "foreground"), palette=default_palette(2),
            input_channels=channels, input_height=h, input_width=w,
        )  # fmt: skip
        self.input_hw = input_hw
        self.max_batch = fixed_batch
        self.fixed_batch = fixed_batch is not None
        self.output_names = list(outputs)
        self.batches: list[tuple[int, ...]] = []

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.shape)
        p = batch[..., :1].astype(np.float32) / 255.0
        result = {
            "probs": np.concatenate([1 - p, p], axis=-1),
            "mask": (batch[..., 0] > 127).astype(np.uint8),
        }
        return {name: result[name] for name in self.output_names}
