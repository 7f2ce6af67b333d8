"""Sliding-window inference: an image of any size as tiles of the model's input size.

``TileGrid`` places tiles of one shape over an image with a given overlap. Tile origins
are multiples of the model's stride, and the image is (virtually) mirror-padded at its
bottom and right to a stride multiple, exactly as a whole-image run pads it, so every
tile sees the pooling grid whole-image inference sees. Tiles that reach past the image
are filled by mirror indexing: the padded image never exists in memory.

``Blender`` assembles tile outputs into one image's result in row bands:

- probabilities are blended with a weight window that is 1 in a tile's centre and
  falls off towards its edges as a Gaussian of sigma = tile/8 (the window nnU-Net's
  predictor and MONAI's ``sliding_window_inference(mode="gaussian")`` use: a tile's
  centre has the most context, its edges the least), then normalised by the summed
  weights and argmax'ed. A blended pixel's probabilities are a weighted mean of
  distributions, so they still sum to 1. benchmarks/large_images.py measures it
  against a linear and a cosine ramp over the overlap (docs/results/large-images.md).
- a mask-only model (argmax in the graph) cannot be blended: each output pixel is
  taken from the tile where it lies farthest from a tile edge (the overlaps are split
  at their middle), which is "stitching the tile centres".

Tiles arrive in row-major order; as soon as a row of tiles is complete, the rows of
pixels no later tile touches are finished (normalised, argmax'ed, written into the
output) and their accumulator rows reused. The blend memory is one band of about a
tile's height across the image, not the image's area times the classes.

A grid can be cut into column strips (``TileGrid.strip``): a strip's grid holds the
columns of tiles that reach into it, and its Blender gives exactly the strip's columns of
the whole grid's result (every pixel of the strip gets the same tiles, in the same order),
with memory of the strip's width: a plane wider than any band should be is segmented
strip by strip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# The budget tiled inference is held to against the same artifact run on the whole image
# (benchmarks/large_images.py judges every overlap by it; the default overlap meets it):
TILED_AGREEMENT = 0.999  # mask agreement, at least
BORDER_GAP = 0.001  # agreement near tile borders at most this far below agreement elsewhere

TTA_FLIPS: dict[str, tuple[tuple[bool, bool], ...]] = {  # (flip rows, flip columns) per pass
    "off": ((False, False),),
    "flip": ((False, False), (False, True), (True, False), (True, True)),
}


def parse_tile(text: str) -> tuple[int, int] | str:
    """``--tile``: "auto", "off", or HxW (e.g. 512x512, or 512 for a square)."""
    value = text.strip().lower()
    if value in ("auto", "off"):
        return value
    parts = value.split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise ValueError(f"--tile must be auto, off or HxW (e.g. 512x512), got {text!r}") from None
    if len(parts) > 2 or h < 1 or w < 1:
        raise ValueError(f"--tile must be auto, off or HxW (e.g. 512x512), got {text!r}")
    return h, w


def default_overlap(tile: tuple[int, int], multiple: int) -> int:
    """The overlap when none is given: 3/16 of the shorter tile side, down to the stride
    (96 px for 512² tiles). benchmarks/large_images.py chose it: the smallest overlap
    at which both membrane models stay within the tiling budget below (99.97 % agreement
    with whole-image inference; 64 px misses the near-border budget, 128 px costs 21 %
    more tiles for 99.99 %)."""
    return max(0, min(tile) * 3 // 16 // multiple * multiple)


def choose_tiling(
    tile: str | tuple[int, int] | None,
    fit: str,
    overlap: int | None,
    native: tuple[int, int],
    input_hw: tuple[int, int] | None,
    multiple: int,
) -> tuple[tuple[int, int] | None, int]:
    """The tile size (None: whole images) and overlap a Segmenter's arguments mean, checked
    against the model: ``native`` is the tile "auto" means, ``input_hw`` a fixed input size,
    ``multiple`` the model's stride."""
    choice = parse_tile(tile) if isinstance(tile, str) else tile or "off"
    if fit != "auto":  # resize / pad fit whole images to the model
        if choice not in ("auto", "off"):
            raise ValueError(f"fit={fit!r} runs whole images; it cannot be combined with a tile size")
        choice = "off"
    if choice == "off":
        if overlap:
            raise ValueError("an overlap needs tiling (tile is off)")
        return None, 0
    size = native if choice == "auto" else choice
    assert isinstance(size, tuple)
    if input_hw is not None and size != input_hw:
        raise ValueError(
            f"this model takes {input_hw[0]}x{input_hw[1]} inputs; a {size[0]}x{size[1]} tile "
            "cannot run on it (leave the tile size out, or export with --size dynamic)"
        )
    if size[0] % multiple or size[1] % multiple:
        raise ValueError(
            f"tile sides must be multiples of the model's stride {multiple}, got {size[0]}x{size[1]}"
        )
    overlap = default_overlap(size, multiple) if overlap is None else overlap
    if overlap < 0 or overlap >= min(size):
        raise ValueError(f"overlap must be at least 0 and under the tile side {min(size)}, got {overlap}")
    return size, overlap


def starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile origins along one axis of ``length`` pixels (padded to ``multiple`` first):
    steps of ``tile - overlap`` (down to the stride), the last tile flush with the end."""
    padded = max(tile, -(-length // multiple) * multiple)
    step = max(multiple, (tile - overlap) // multiple * multiple)
    origins = list(range(0, padded - tile, step))
    origins.append(padded - tile)
    return origins


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
    """Indices ``start .. start+size`` into an axis of ``length``, mirrored past its end the
    way ``np.pad(mode="symmetric")`` (``images.mirror_pad``) extends it."""
    index = np.arange(start, start + size) % (2 * length)
    return np.where(index < length, index, 2 * length - 1 - index)


SIGMA = 1 / 8  # of the tile side
MIN_WEIGHT = 1e-3  # a tile's edge still counts where no other tile covers the pixel


def weights(tile: int) -> np.ndarray:
    """1-D blend weights across a tile: a Gaussian of sigma ``SIGMA * tile`` about its
    centre, 1 there, never below ``MIN_WEIGHT``."""
    i = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    return np.maximum(np.exp(-0.5 * (i / (SIGMA * tile)) ** 2), MIN_WEIGHT).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image go."""

    size: tuple[int, int]  # the image's (H, W)
    tile: tuple[int, int]
    overlap: int
    rows: tuple[int, ...]  # tile origins, top to bottom
    cols: tuple[int, ...]  # tile origins, left to right
    span: tuple[int, int] | None = None  # the columns whose result this grid gives (None: all)
    across: int = 0  # columns of tiles across the whole image (0: len(cols), a whole grid)

    @classmethod
    def over(cls, size: tuple[int, int], tile: tuple[int, int], overlap: int, multiple: int) -> TileGrid:
        rows = starts(size[0], tile[0], overlap, multiple)
        cols = starts(size[1], tile[1], overlap, multiple)
        return cls(size, tile, overlap, tuple(rows), tuple(cols))

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def columns(self) -> tuple[int, int]:
        """The columns x0..x1 of the image this grid's result covers."""
        return self.span if self.span is not None else (0, self.size[1])

    def strip(self, x0: int, x1: int) -> TileGrid:
        """The grid of columns ``x0 .. x1`` alone: the tiles that reach into them."""
        if not 0 <= x0 < x1 <= self.size[1]:
            raise ValueError(f"a strip must lie in columns 0..{self.size[1]}, got {x0}..{x1}")
        tw = self.tile[1]
        cols = tuple(x for x in self.cols if x < x1 and x + tw > x0)
        return replace(self, cols=cols, span=(x0, x1), across=self.across or len(self.cols))

    def tile_image(self, image: np.ndarray, r: int, c: int) -> np.ndarray:
        """Tile (r, c) of ``image`` (H, W, C), mirror-filled where it reaches past the image."""
        y, x = self.rows[r], self.cols[c]
        (th, tw), (h, w) = self.tile, self.size
        if y + th <= h and x + tw <= w:
            return np.ascontiguousarray(image[y : y + th, x : x + tw])
        return image[np.ix_(mirror_indices(y, th, h), mirror_indices(x, tw, w))]

    def own(self, origins: tuple[int, ...], i: int, tile: int, end: int) -> tuple[int, int]:
        """The part of tile ``i`` along one axis that is closer to its centre than to any
        other tile's (overlaps split at their middle), clipped to ``end``. (Over a strip's
        columns the first and last tiles' outer parts are the strip's own borders, where
        clipping to ``columns`` puts them: no tile outside the strip reaches into it.)"""
        lo = 0 if i == 0 else (origins[i - 1] + tile + origins[i]) // 2
        hi = end if i == len(origins) - 1 else (origins[i] + tile + origins[i + 1]) // 2
        return min(lo, end), min(hi, end)


Rows = Callable[[int, np.ndarray, "np.ndarray | None"], None]  # (first row, mask rows, probs rows)


class Blender:
    """One image's result from its tiles, added in row-major order (``passes`` outputs per
    tile with test-time augmentation). ``classes``: the probabilities' channels, or 0 for
    a mask-only model (stitched). ``keep_probs``: also keep the blended probabilities
    (float16, (H, W, K)) for ``--save-probs``.

    With ``emit``, nothing image-sized is held: each run of finished rows goes to
    ``emit(y0, mask_rows, probs_rows)`` as soon as no later tile touches it (a windowed
    input's writer takes it from there). ``start_row``: begin at that tile row (a
    resumed run): the first rows it emits are then exactly those of an uninterrupted
    run from that row's origin on, provided no earlier tile row reaches them, which
    ``first_tile_row`` guarantees. ``end_row``: stop after the tile rows before it (a
    region of rows, ``end_tile_row``); every row above that tile row's origin is then final
    and emitted, exactly as an uninterrupted run gives it."""

    def __init__(
        self,
        grid: TileGrid,
        classes: int,
        passes: int = 1,
        keep_probs: bool = False,
        dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32,
        emit: Rows | None = None,
        start_row: int = 0,
        end_row: int | None = None,
    ) -> None:
        self.grid = grid
        self.end_row = len(grid.rows) if end_row is None else end_row
        self.classes = classes
        self.passes = passes
        self.emit = emit
        h = grid.size[0]
        self._x0, x1 = grid.columns  # the result's columns (a strip's, or the image's)
        self._left = grid.cols[0]  # the accumulator's first column
        w = x1 - self._x0
        keep = keep_probs and classes > 0
        if emit is None:
            self.mask = np.zeros((h, w), np.uint8)
            self.probs = np.zeros((h, w, classes), dtype) if keep else None
        else:  # rows leave as they finish: only the stitched band of one tile row is held
            self.mask = np.zeros((0, w), np.uint8) if classes else np.zeros((grid.tile[0], w), np.uint8)
            self.probs = None
        self._keep = keep
        self._dtype = dtype
        self.added = 0  # outputs added so far
        self._added = 0  # outputs added in the current tile row
        self._row = start_row
        if classes:
            th = grid.tile[0]
            width = grid.cols[-1] + grid.tile[1] - self._left
            self._top = grid.rows[start_row] if start_row else 0  # image row the band's first row stands for
            self._acc = np.zeros((th, width, classes), np.float32)
            self._weight = np.zeros((th, width, 1), np.float32)
            # weights fall off only along an axis with more than one tile (one tile: exactly its output)
            down = weights(th) if len(grid.rows) > 1 else np.ones(th, np.float32)
            columns = grid.across or len(grid.cols)  # the whole grid's: a strip blends as the whole does
            across = weights(grid.tile[1]) if columns > 1 else np.ones(grid.tile[1], np.float32)
            self._window = (down[:, None] * across[None, :])[:, :, None]

    @property
    def done(self) -> bool:
        return self._row >= self.end_row

    def add(self, output: np.ndarray) -> None:
        """The next tile's output: (th, tw, K) float probabilities, or (th, tw) uint8 mask."""
        if self.done:
            raise RuntimeError("all tiles of this image are already in")
        c = self._added // self.passes
        if self.classes:
            x, tw = (
                self.grid.cols[c] - self._left,
                self.grid.tile[1],
            )  # the band starts at this tile row's origin
            self._acc[:, x : x + tw] += output * self._window
            self._weight[:, x : x + tw] += self._window
        else:
            self._stitch(c, output)
        self.added += 1
        self._added += 1
        if self._added == len(self.grid.cols) * self.passes:
            self._finish_row()

    def _stitch(self, c: int, mask: np.ndarray) -> None:
        g, r = self.grid, self._row
        y0, y1 = g.own(g.rows, r, g.tile[0], g.size[0])
        a, b = g.columns
        x0, x1 = (min(max(v, a), b) for v in g.own(g.cols, c, g.tile[1], g.size[1]))
        y, x = g.rows[r], g.cols[c]
        top = 0 if self.emit is None else y0  # emitting: the band of this tile row's own rows
        self.mask[y0 - top : y1 - top, x0 - a : x1 - a] = mask[y0 - y : y1 - y, x0 - x : x1 - x]

    def _finish_row(self) -> None:
        g = self.grid
        self._added = 0
        self._row += 1
        if not self.classes:
            if self.emit is not None:  # the finished tile row's own rows are final
                y0, y1 = g.own(g.rows, self._row - 1, g.tile[0], g.size[0])
                if y1 > y0:
                    self.emit(y0, self.mask[: y1 - y0].copy(), None)
            return
        last = self._row == len(g.rows)
        # rows above the next tile row's origin are final: no later tile touches them
        end = g.size[0] if last else min(g.rows[self._row], g.size[0])
        n = end - self._top
        if n > 0:
            a, b = self._x0 - self._left, g.columns[1] - self._left
            probs = self._acc[:n, a:b] / self._weight[:n, a:b]
            mask = mask_from_probs(probs)
            if self.emit is not None:
                self.emit(self._top, mask, probs.astype(self._dtype) if self._keep else None)
            else:
                self.mask[self._top : end] = mask
                if self.probs is not None:
                    self.probs[self._top : end] = probs
        if last or self._row >= self.end_row:
            del self._acc, self._weight
            return
        shift = g.rows[self._row] - self._top
        keep = self._acc.shape[0] - shift
        self._acc[:keep] = self._acc[shift:].copy()
        self._weight[:keep] = self._weight[shift:].copy()
        self._acc[keep:] = 0
        self._weight[keep:] = 0
        self._top = g.rows[self._row]


def first_tile_row(grid: TileGrid, row: int, stitched: bool) -> int:
    """The first tile row whose output reaches image row ``row``: a run resumed at ``row``
    starts there, so every row from ``row`` on gets exactly the tiles it gets in a whole
    run (in the same order: the same floating-point sums)."""
    for r, origin in enumerate(grid.rows):
        if stitched:
            if grid.own(grid.rows, r, grid.tile[0], grid.size[0])[1] > row:
                return r
        elif origin + grid.tile[0] > row:
            return r
    return len(grid.rows)


def end_tile_row(grid: TileGrid, row: int, stitched: bool) -> int:
    """The tile rows a run needs for image rows up to ``row`` (exclusive): those whose
    output reaches above ``row``. After them every row above ``row`` is final, with exactly
    the tiles (in the same order) an uninterrupted run gives it: a region of rows ends there."""
    for r in range(len(grid.rows)):
        start = grid.own(grid.rows, r, grid.tile[0], grid.size[0])[0] if stitched else grid.rows[r]
        if start >= row:
            return r
    return len(grid.rows)


def mask_from_probs(probs: np.ndarray) -> np.ndarray:
    """(..., K) probabilities -> (...) uint8 class ids: argmax, or > 0.5 for one sigmoid channel.
    The one place this is decided (the blend, whole images, the Keras backend, evaluate and
    parity all use it)."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] > 0.5).astype(np.uint8)
    return probs.argmax(axis=-1).astype(np.uint8)


def flip(array: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
    """``array`` (H, W, ...) flipped up-down and/or left-right (its own inverse)."""
    if rows:
        array = array[::-1]
    if cols:
        array = array[:, ::-1]
    return array
