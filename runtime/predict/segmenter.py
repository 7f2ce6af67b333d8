"""``Segmenter``: any list of images in, one mask per image out, at each image's own size.

Three steps, kept apart so the folder pipeline can run the outer two in worker
threads and only inference on the main thread:

1. ``prepare``: to the model's dtype and channels, then to a shape the model takes
   (``fit``): a fixed-size model gets the image resized to its input ("resize") or
   scaled down only if needed and mirror-padded ("pad"); a dynamic-size model gets
   the image at its own resolution, mirror-padded to the stride multiple.
2. ``stream``: same-shape images batched up to the backend's limit (a fixed-batch
   model gets its last batch padded), run in order through the backend.
3. ``restore``: crop the padding, resize back (nearest for masks, linear for
   probabilities) to the image's own size.

A result never depends on which other images shared its batch: batches only ever
hold images of one shape, and padding is per image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np

from ..backends.base import Backend
from ..images import mirror_pad, pad_to_multiple, to_channels, to_uint8

FITS = ("auto", "resize", "pad")
DEFAULT_BATCH = 8
K = TypeVar("K")


@dataclass(frozen=True)
class Prepared:
    """One image ready for the model, and how to map its output back."""

    image: np.ndarray  # (h, w, C) uint8, the shape the model takes
    size: tuple[int, int]  # the original (H, W)
    valid: tuple[int, int]  # (h, w) of the region in ``image`` that holds the (scaled) original


@dataclass(frozen=True)
class Output:
    mask: np.ndarray  # uint8 (H, W) class indices
    probs: np.ndarray | None  # float32 (H, W, K) when asked for


def _resize(array: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    if array.shape[:2] == hw:
        return array
    out = cv2.resize(array, (hw[1], hw[0]), interpolation=interpolation)
    return out[:, :, None] if array.ndim == 3 and out.ndim == 2 else out


class Segmenter:
    def __init__(self, backend: Backend, batch_size: int | None = None, fit: str = "auto") -> None:
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.backend = backend
        self.card = backend.card
        limit = backend.max_batch
        if backend.fixed_batch:
            if batch_size is not None and batch_size != limit:
                raise ValueError(
                    f"this model was exported with a fixed batch of {limit}; --batch {batch_size} cannot run "
                    "on it (export with --batch dynamic for other sizes)"
                )
            batch_size = limit
        if batch_size is None:
            batch_size = min(DEFAULT_BATCH, limit or DEFAULT_BATCH)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if limit is not None and batch_size > limit:
            raise ValueError(f"batch size {batch_size} is over this model's maximum of {limit}")
        self.batch_size = batch_size
        h, w = backend.input_hw
        self.input_hw: tuple[int, int] | None = (h, w) if h is not None and w is not None else None
        if fit == "resize" and self.input_hw is None:
            if not (self.card.input_height and self.card.input_width):
                raise ValueError(
                    "fit='resize' needs a model with a fixed input size; this one takes any size"
                )
            self.input_hw = (self.card.input_height, self.card.input_width)
        if fit == "auto":
            fit = "resize" if self.input_hw is not None else "pad"
        self.fit = fit
        self.has_probs = "probs" in backend.output_names
        self.has_mask = "mask" in backend.output_names

    # -- 1. prepare ---------------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, origin: str = "<array>") -> Prepared:
        """Any (H, W) or (H, W, 1|3|4) uint8/uint16 array -> the model's input."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"{origin}: expected an (H, W) or (H, W, C) image array, got {shape}")
        if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
            raise ValueError(f"{origin}: {image.shape[2]} channels; images have 1, 3 or 4")
        image = to_channels(to_uint8(image, origin), self.card.input_channels)
        size = (int(image.shape[0]), int(image.shape[1]))
        if self.input_hw is None:  # dynamic model: own resolution, padded to the stride
            return Prepared(pad_to_multiple(image, self.card.input_multiple), size, size)
        if self.fit == "resize" or size == self.input_hw:
            shrink = size[0] * size[1] > self.input_hw[0] * self.input_hw[1]
            method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            return Prepared(_resize(image, self.input_hw, method), size, self.input_hw)
        # pad: scale down only if it does not fit, keep the aspect ratio, mirror-pad the rest
        scale = min(1.0, self.input_hw[0] / size[0], self.input_hw[1] / size[1])
        valid = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        scaled = _resize(image, valid, cv2.INTER_AREA)
        return Prepared(mirror_pad(scaled, self.input_hw), size, valid)

    # -- 2. infer -----------------------------------------------------------------------------------------

    def _batches(
        self, items: Iterable[tuple[K, Prepared]], pending: deque[list[tuple[K, Prepared]]]
    ) -> Iterator[np.ndarray]:
        group: list[tuple[K, Prepared]] = []

        def flush() -> np.ndarray:
            batch = np.stack([p.image for _, p in group])
            if self.backend.fixed_batch and len(group) < self.batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(group), axis=0)])
            pending.append(list(group))
            group.clear()
            return batch

        for key, prepared in items:
            if group and (len(group) == self.batch_size or group[0][1].image.shape != prepared.image.shape):
                yield flush()
            group.append((key, prepared))
        if group:
            yield flush()

    def stream(
        self, items: Iterable[tuple[K, Prepared]], probs: bool = False
    ) -> Iterator[tuple[K, Prepared, dict[str, np.ndarray]]]:
        """Run (key, Prepared) pairs in order, batched; yields (key, prepared, outputs) with
        outputs in model space: "mask" always, "probs" when asked for."""
        if probs and not self.has_probs:
            raise ValueError(
                f"{self.backend.name}: this model has no probabilities output (it was exported with "
                "--output mask); re-export with --output both"
            )
        pending: deque[list[tuple[K, Prepared]]] = deque()
        for outputs in self.backend.infer_stream(self._batches(items, pending)):
            group = pending.popleft()
            masks = outputs["mask"] if self.has_mask else mask_from_probs(outputs["probs"])
            for i, (key, prepared) in enumerate(group):
                result = {"mask": masks[i]}
                if probs:
                    result["probs"] = outputs["probs"][i]
                yield key, prepared, result

    # -- 3. restore ---------------------------------------------------------------------------------------

    @staticmethod
    def restore(prepared: Prepared, outputs: dict[str, np.ndarray]) -> Output:
        """Model-space outputs -> the image's own size."""
        vh, vw = prepared.valid
        mask = _resize(np.ascontiguousarray(outputs["mask"][:vh, :vw]), prepared.size, cv2.INTER_NEAREST)
        probs = outputs.get("probs")
        if probs is not None:
            probs = _resize(np.ascontiguousarray(probs[:vh, :vw]), prepared.size, cv2.INTER_LINEAR)
        return Output(mask, probs)

    # -- all three ----------------------------------------------------------------------------------------

    @staticmethod
    def by_shape(items: Iterable[tuple[K, Prepared]]) -> list[tuple[K, Prepared]]:
        """Same-shape images next to each other so they share batches (input order within a shape)."""
        return sorted(items, key=lambda item: item[1].image.shape)

    def segment(self, images: Sequence[np.ndarray], probs: bool = False) -> list[Output]:
        """Each image's mask (and with ``probs=True`` its probabilities) at its own size, in
        input order: prepare, batch by shape, infer, restore."""
        prepared = [self.prepare(image, f"images[{i}]") for i, image in enumerate(images)]
        results: list[Any] = [None] * len(prepared)
        for i, p, outputs in self.stream(self.by_shape(enumerate(prepared)), probs=probs):
            results[i] = self.restore(p, outputs)
        return results

    def predict(self, images: Sequence[np.ndarray], probs: bool = False) -> list[np.ndarray]:
        """Masks (uint8 (H, W) class indices), or with ``probs=True`` probabilities
        (float32 (H, W, K)), each at its image's own size, in input order."""
        outputs = self.segment(images, probs)
        return [out.probs for out in outputs if out.probs is not None] if probs else [o.mask for o in outputs]


def mask_from_probs(probs: np.ndarray) -> np.ndarray:
    """(..., K) probabilities -> (...) uint8 class ids: argmax, or > 0.5 for one sigmoid channel.
    The one place this is decided (the Keras backend, evaluate and parity use it too)."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] > 0.5).astype(np.uint8)
    return probs.argmax(axis=-1).astype(np.uint8)
