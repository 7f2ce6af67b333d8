"""fcnx.runtime: the lean deployment side. Never imports TensorFlow, Keras, tf2onnx or onnx.

The documented API::

    from fcnx.runtime import load, Segmenter, ModelCard, BackendError, predict_folder

``load(path, backend="auto")`` gives a Backend for an ONNX file, a TensorRT engine or a
Keras model; ``Segmenter(backend).predict(images)`` gives one mask per image at its
own size; ``predict_folder(PredictConfig(...))`` is ``fcnx predict``. For Ray Data
pipelines: ``SegmentationPredictor``, ``read_images``, ``write_masks``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Backend, BackendError
    from .backends.registry import load
    from .card import ModelCard
    from .predict.config import PredictConfig
    from .predict.job import predict_folder
    from .predict.ray import SegmentationPredictor, read_images, write_masks
    from .predict.segmenter import Segmenter

# Imported on first use (PEP 562), so ``import fcnx.runtime`` loads neither NumPy nor
# OpenCV by itself: the fcnx command sets OpenCV's pixel limit before OpenCV is loaded.
_PUBLIC = {
    "Backend": ".backends.base",
    "BackendError": ".backends.base",
    "load": ".backends.registry",
    "ModelCard": ".card",
    "PredictConfig": ".predict.config",
    "predict_folder": ".predict.job",
    "SegmentationPredictor": ".predict.ray",
    "read_images": ".predict.ray",
    "write_masks": ".predict.ray",
    "Segmenter": ".predict.segmenter",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name], __name__), name)


__version__ = "0.1.0"
__all__ = [
    "Backend",
    "BackendError",
    "ModelCard",
    "PredictConfig",
    "SegmentationPredictor",
    "Segmenter",
    "__version__",
    "load",
    "predict_folder",
    "read_images",
    "write_masks",
]
