"""fcnx.runtime: the lean deployment side. Never imports TensorFlow, Keras, tf2onnx or onnx.

The documented API::

    from fcnx.runtime import load, Segmenter, ModelCard, BackendError, predict_folder

``load(path, backend="auto")`` gives a Backend for an ONNX file, a TensorRT engine or a
Keras model; ``Segmenter(backend).predict(images)`` gives one mask per image at its
own size; ``predict_folder(PredictConfig(...))`` is ``fcnx predict``. For Ray Data
pipelines: ``SegmentationPredictor``, ``read_images``, ``write_masks``.
"""

from .backends.base import Backend, BackendError
from .backends.registry import load
from .card import ModelCard
from .predict.config import PredictConfig
from .predict.job import predict_folder
from .predict.ray import SegmentationPredictor, read_images, write_masks
from .predict.segmenter import Segmenter

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
