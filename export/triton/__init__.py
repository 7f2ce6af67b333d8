"""``fcnx export triton``: an fcnx ONNX file or TensorRT engine -> a Triton model repository.

Writes ``REPO/NAME/config.pbtxt``, ``REPO/NAME/1/model.onnx`` (platform
``onnxruntime_onnx``) or ``REPO/NAME/1/model.plan`` (``tensorrt_plan``), and the
model card as ``REPO/NAME/fcnx-card.json`` (engines: their sidecar too, as
``fcnx-engine.json``; Triton ignores files that are not version folders).

Everything in the config comes from the model itself: the input and output names,
data types and dims from the ONNX graph or the engine's sidecar, ``max_batch_size``
from the engine's batch profile. The config is a real ``ModelConfig`` protobuf from
tritonclient, written with ``text_format``, so a field Triton does not know cannot be
written. The model folder is built in a temp folder inside REPO and renamed into
place: Triton never sees half of one.

Not run here: the Triton server itself (no docker or GPU on fcnx's machines). The
tests parse the config back and run the repository's ONNX with onnxruntime.
"""

from .config import TritonRepoConfig, build_model_config
from .model import TritonClientUnavailable, read_served_model
from .repository import write_repository

__all__ = [
    "TritonClientUnavailable",
    "TritonRepoConfig",
    "build_model_config",
    "read_served_model",
    "write_repository",
]
