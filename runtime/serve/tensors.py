"""What an infer request must hold, as the exported ONNX and ``fcnx export triton``'s
repository name it: one ``image`` tensor, UINT8, shape [N, H, W, C] with the model's
channels; ``mask`` (UINT8 [N, H, W]) comes back, ``probs`` (FP32 [N, H, W, K]) when asked
for. Everything is checked before a byte of the body is decoded, and a request that is
not this gets one line saying what was wrong (the server answers 400 with it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..card import ModelCard

INPUT = "image"
MASK = "mask"
PROBS = "probs"
OUTPUT_TYPES = {MASK: ("UINT8", np.uint8), PROBS: ("FP32", np.float32)}


class BadRequest(ValueError):
    """The request is not what the model takes; the message is the one line for the client."""


@dataclass(frozen=True)
class Signature:
    """The served model's tensors: the one table metadata, checks and responses read."""

    channels: int
    classes: int
    outputs: tuple[str, ...]  # what the backend can give: "mask" and/or "probs"
    max_pixels: int

    @classmethod
    def of(cls, card: ModelCard, backend_outputs: list[str], max_pixels: int) -> Signature:
        # a probs-only model still serves masks (the Segmenter takes the argmax); a mask-only one has no probs
        outputs = (MASK, PROBS) if PROBS in backend_outputs else (MASK,)
        return cls(card.input_channels, len(card.classes), outputs, max_pixels)

    def metadata(self) -> tuple[list[dict], list[dict]]:
        """Inputs and outputs as Open Inference Protocol metadata (-1: any size)."""
        inputs = [{"name": INPUT, "datatype": "UINT8", "shape": [-1, -1, -1, self.channels]}]
        shapes = {MASK: [-1, -1, -1], PROBS: [-1, -1, -1, self.classes]}
        outputs = [{"name": n, "datatype": OUTPUT_TYPES[n][0], "shape": shapes[n]} for n in self.outputs]
        return inputs, outputs

    def check_input(self, names: list[str], datatype: str, shape: list[int]) -> None:
        """Names, type and shape of the request's inputs, before its data is read."""
        if names != [INPUT]:
            raise BadRequest(
                f"expected one input named {INPUT!r}, got {', '.join(map(repr, names)) or 'none'}"
            )
        if datatype != "UINT8":
            raise BadRequest(f"input {INPUT!r} must be UINT8, got {datatype}")
        if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
            raise BadRequest(
                f"input {INPUT!r} must have shape [N, H, W, C] of positive sizes, got {list(shape)}"
            )
        n, h, w, c = shape
        if c != self.channels:
            raise BadRequest(
                f"input {INPUT!r} has {c} channel(s) (last axis of {list(shape)}); this model takes {self.channels}"
            )
        if h * w > self.max_pixels:
            raise BadRequest(f"image of {w}x{h} pixels is over the limit of {self.max_pixels} (--max-pixels)")
        if n * h * w > 4 * self.max_pixels:
            raise BadRequest(
                f"{n} images of {w}x{h} in one request: split it (limit 4 x --max-pixels pixels)"
            )

    def decode(self, shape: list[int], read: Callable[[], np.ndarray]) -> np.ndarray:
        """The [N, H, W, C] uint8 array, read by ``read`` (the protocol library's decoder of the
        binary or JSON data), checked to fill exactly the shape the request declared."""
        want = int(np.prod(shape))
        try:
            array = np.asarray(read())
        except (ValueError, TypeError, OverflowError):  # too few/many bytes or values, values over 255
            array = None
        if array is None or array.size != want or array.dtype != np.uint8:
            raise BadRequest(
                f"input {INPUT!r}: the data is not {want} UINT8 values (shape {list(shape)}): "
                "a body shorter or longer than its header says, or values outside 0..255"
            )
        return array.reshape(shape)

    def requested(self, names: list[str] | None) -> tuple[str, ...]:
        """The outputs to send: those asked for, else the mask."""
        if not names:
            return (MASK,)
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise BadRequest(f"unknown output {unknown[0]!r}: this model gives {', '.join(self.outputs)}")
        return tuple(dict.fromkeys(names))
