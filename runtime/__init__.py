"""fcnx.runtime: the lean deployment side. Never imports TensorFlow, Keras, tf2onnx or onnx."""

from .card import ModelCard

__version__ = "0.1.0"
__all__ = ["ModelCard", "__version__"]
