"""A Keras model file, loaded the safe way, and the card of the run it belongs to.

A run folder means its ``best.keras``. ``safe_mode=True`` always: a file with a Lambda
layer (arbitrary Python code) is refused, and every problem is one line naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from fcnx.runtime.card import ModelCard


class ModelFileError(ValueError):
    """A model file that is missing, not a .keras archive, or refused by safe mode."""


def resolve_model_path(path: str | Path) -> Path:
    """A run folder means its best.keras."""
    path = Path(path)
    return path / "best.keras" if path.is_dir() else path


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` file (or a run folder's best.keras) with ``safe_mode=True``:
    a file with a Lambda layer (arbitrary code) is refused."""
    path = resolve_model_path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras .keras file (not a zip archive; truncated or another format)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise ModelFileError(
                f"{path}: refused: it contains a Lambda layer, i.e. arbitrary Python code "
                "(fcnx loads models with safe_mode=True)"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelFileError(f"{path}: cannot load as a Keras model: {first}") from None


def find_card(model_path: str | Path) -> ModelCard | None:
    """The card.json of the run folder a model file sits in, if any."""
    card = resolve_model_path(model_path).parent / "card.json"
    return ModelCard.read(card) if card.is_file() else None
