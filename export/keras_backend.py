"""The original Keras model behind the runtime's Backend protocol, so bench and parity
time and compare it exactly like the exported artifacts. It lives in fcnx.export (not
the runtime) because it imports Keras; ``fcnx.runtime.load`` reaches it by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnx.runtime.backend import check_batch


class KerasBackend:
    """``infer(uint8 (N, H, W, C)) -> {"probs": float32, "mask": uint8}``, through
    ``model.predict_on_batch`` (the graph-compiled path, without ``predict``'s per-call
    dataset setup)."""

    def __init__(self, path: str | Path) -> None:
        import keras

        from fcnx.train.evaluate import find_card, load_keras_model, resolve_model_path

        from .onnx_export import card_for

        self.path = resolve_model_path(path)
        self.model = load_keras_model(self.path)
        self.card = card_for(self.model, find_card(self.path))
        self.name = "keras"
        self.provider = f"keras {keras.__version__} ({keras.backend.backend()})"
        self.max_batch: int | None = None
        self.fixed_batch = False
        shape = self.model.inputs[0].shape
        self.input_hw: tuple[int | None, int | None] = (shape[1], shape[2])
        self.output_names = ["probs", "mask"]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(batch, self.card.input_channels, self.input_hw, str(self.path))
        probs = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        if probs.shape[-1] == 1:
            mask = (probs[..., 0] > 0.5).astype(np.uint8)
        else:
            mask = probs.argmax(axis=-1).astype(np.uint8)
        return {"probs": probs, "mask": mask}

    def close(self) -> None:
        self.model = None
