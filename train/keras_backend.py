"""The original Keras model behind the runtime's Backend class, so bench and parity
time and compare it exactly like the exported artifacts. It lives in fcnx.train (not
the runtime) because it imports Keras; the runtime's backend registry names it by
module path, so ``fcnx.runtime.load`` reaches it without importing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.backends.base import Backend, BackendError
from fcnx.runtime.card import ModelCard, default_palette
from fcnx.runtime.predict.plans import mask_from_probs

from .model_file import find_card, load_keras_model, resolve_model_path


def card_for(model: Any, card: ModelCard | None) -> ModelCard:
    """The run's card, or one made from the model itself for a bare .keras file."""
    if card is not None:
        return card
    channels = int(model.inputs[0].shape[-1])
    classes = int(model.outputs[0].shape[-1])
    kind = "sigmoid" if classes == 1 else "softmax"
    n = 2 if classes == 1 else classes
    return ModelCard(
        architecture=model.name,
        classes=tuple(f"class{k}" for k in range(n)),
        palette=default_palette(n),
        input_channels=channels,
        output_kind=kind,
    )


def bfloat16_twin(model: Any, card: ModelCard) -> Any:
    """The same network and weights built under Keras's ``mixed_bfloat16`` policy (bfloat16
    compute, float32 weights and probabilities), as ``fcnx train --precision mixed_bfloat16``
    builds it: from the card's model config."""
    from .config import ModelConfig
    from .models import build_fcn

    if not card.model_config:
        raise BackendError(
            "keras-bf16 rebuilds the network from its run's card (model_config), and this model has none"
        )
    twin = build_fcn(ModelConfig(**card.model_config), "mixed_bfloat16")
    twin.set_weights(model.get_weights())
    return twin


class KerasBackend(Backend):
    """``infer(uint8 (N, H, W, C)) -> {"probs": float32, "mask": uint8}``, through
    ``model.predict_on_batch`` (the graph-compiled path, without ``predict``'s per-call
    dataset setup). ``keras-bf16``: the same weights under the ``mixed_bfloat16`` policy."""

    def __init__(
        self,
        path: str | Path = "<keras model>",
        name: str = "keras",
        options: Any = None,
        model: Any = None,
        card: ModelCard | None = None,
    ) -> None:
        """A .keras file or run folder (its card.json when there is one), or an in-memory
        ``model`` (with its ``card``, else one made from the model)."""
        import keras

        if model is None:
            super().__init__(resolve_model_path(path))
            self.model = load_keras_model(self.path)
            card = find_card(self.path)
        else:
            super().__init__(path)
            self.model = model
        if name not in ("keras", "keras-bf16"):
            raise BackendError(f"unknown Keras backend {name!r}; keras or keras-bf16")
        self.card = card_for(self.model, card)
        policy = "float32"
        if name == "keras-bf16":
            self.model = bfloat16_twin(self.model, self.card)
            self.card = self.card.replace(precision="bf16")
            policy = "mixed_bfloat16"
        self.name = name
        self.provider = f"keras {keras.__version__} ({keras.backend.backend()}, {policy})"
        self.max_batch: int | None = None
        self.fixed_batch = False
        shape = self.model.inputs[0].shape
        self.input_hw: tuple[int | None, int | None] = (shape[1], shape[2])
        self.output_names = ["probs", "mask"]

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        probs = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        return {"probs": probs, "mask": mask_from_probs(probs)}

    def _release(self) -> None:
        self.model = None
