"""What an image becomes on its way through a model: its plan (whole, or tiles) and its output.

- ``Prepared``: a whole image, fitted to what the model takes (its own resolution padded
  to the stride, or resized / letterboxed for a fixed-size model), and how to map the
  output back (``restore``);
- ``Tiled``: an image at full resolution and the grid of tiles it runs as (tiling.py);
- ``Windowed``: a plane of an array input, tiled the same way but read by rows of tiles
  and written by finished rows (never whole in memory);
- ``Output``: the mask (and probabilities) at the image's own size;
- ``mask_from_probs`` (from tiling.py, where row bands finish): the one place
  probabilities become class ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..arrays.source import ArraySource
from ..intensity import Note
from .tiling import Rows, TileGrid, mask_from_probs

__all__ = ["Output", "Plan", "Prepared", "Tiled", "Windowed", "mask_from_probs", "resize", "restore"]


@dataclass(frozen=True)
class Prepared:
    """One whole image ready for the model, and how to map its output back."""

    image: np.ndarray  # (h, w, C) uint8, the shape the model takes
    size: tuple[int, int]  # the original (H, W)
    valid: tuple[int, int]  # (h, w) of the region in ``image`` that holds the (scaled) original

    @property
    def shape(self) -> tuple[int, ...]:
        return self.image.shape


@dataclass(frozen=True)
class Tiled:
    """One image at full resolution, to run as the tiles of ``grid``."""

    image: np.ndarray  # (H, W, C) uint8, the model's channels
    grid: TileGrid

    @property
    def size(self) -> tuple[int, int]:
        return self.grid.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.grid.tile, self.image.shape[2])


@dataclass(frozen=True)
class Windowed:
    """One plane of an array input too large to hold, run as the tiles of ``grid``: each
    row of tiles is read from ``source`` when it is needed (with its mirror-filled
    overlap), and finished rows go to ``emit`` as they are final, so nothing plane-sized
    is ever in memory. ``start_row``: the first tile row to run (a resumed plane);
    ``end_row``: the tile row to stop before (a region of rows; None: the last)."""

    source: ArraySource
    plane: int
    grid: TileGrid
    channels: int  # the model's
    emit: Rows
    start_row: int = 0
    intensity: str = "full"  # how a 16-bit array maps to 8 bits (a window has no whole-plane histogram)
    note: Note | None = None  # gets the mapping's warnings (intensity.py)
    end_row: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.grid.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.grid.tile, self.channels)


Plan = Prepared | Tiled | Windowed


@dataclass(frozen=True)
class Output:
    mask: np.ndarray  # uint8 (H, W) class indices
    probs: np.ndarray | None  # float (H, W, K) when asked for


def resize(array: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    if array.shape[:2] == hw:
        return array
    out = cv2.resize(array, (hw[1], hw[0]), interpolation=interpolation)
    return out[:, :, None] if array.ndim == 3 and out.ndim == 2 else out


def restore(prepared: Prepared, outputs: dict[str, np.ndarray]) -> Output:
    """A whole image's model-space outputs -> the image's own size."""
    vh, vw = prepared.valid
    mask = resize(np.ascontiguousarray(outputs["mask"][:vh, :vw]), prepared.size, cv2.INTER_NEAREST)
    probs = outputs.get("probs")
    if probs is not None:
        probs = resize(np.ascontiguousarray(probs[:vh, :vw]), prepared.size, cv2.INTER_LINEAR)
    return Output(mask, probs)
