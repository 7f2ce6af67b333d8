"""A plane too large to hold, as the Segmenter's tiles read by windows (runtime/predict/volumes.py).

``plan_window`` plans one plane of an array source (or one column strip of it) as a
``Windowed`` plan: the tile grid, the tile row a resumed run starts at, and where the
finished rows go. ``window_pieces`` gives its tiles in the Segmenter's order: each row of
tiles is read from the source when it is needed (the next one on a thread while this
one's tiles run), only the columns its tiles read, mirror-filled past the plane's
bottom and right edges exactly as a whole-image run pads them, so the result equals the
in-memory tiled one byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..arrays.source import ArraySource
from ..card import ModelCard
from ..images import to_channels, to_uint8
from ..intensity import Note
from .plans import Windowed
from .tiling import Rows, TileGrid, end_tile_row, first_tile_row, flip, mirror_indices


def plan_window(
    source: ArraySource,
    plane: int,
    emit: Rows,
    tiling: tuple[tuple[int, int] | None, int],
    card: ModelCard,
    stitched: bool,
    from_row: int = 0,
    intensity: str | None = None,
    note: Note | None = None,
    columns: tuple[int, int] | None = None,
    to_row: int | None = None,
) -> Windowed:
    """Plane ``plane`` of ``source`` as tiles read by rows of tiles, its finished rows going
    to ``emit(y0, mask, probs)``; ``from_row``: resume there (rows above it are not emitted
    again, tile rows that cannot reach it are not run). ``intensity``: the 16-bit mapping
    (default the card's), ``note`` gets its warnings. ``columns``: only the strip x0..x1
    of the plane (its rows are what ``emit`` gets). ``to_row``: stop there (a region of
    rows ``from_row .. to_row``: only the tile rows reaching into it run). ``tiling``: the Segmenter's tile and
    overlap; ``stitched``: a mask-only model (tiles stitched, not blended)."""
    info, (tile, overlap) = source.info, tiling
    intensity = intensity or card.intensity
    if tile is None:
        raise ValueError(
            f"{info.spec}: an array plane is read by windows, which needs tiling (not --tile off)"
        )
    if intensity.startswith("percentile"):
        raise ValueError(
            f"{info.spec}: --intensity {intensity} needs a whole plane's histogram; a plane read "
            "by windows takes auto, full or bits:N"
        )
    if info.channels not in (1, 3, 4):
        raise ValueError(
            f"{info.spec}: axes {info.axes} give {info.channels} channels; the model takes "
            f"{card.input_channels} (grey, RGB or RGBA planes are read)"
        )
    grid = TileGrid.over((info.height, info.width), tile, overlap, card.input_multiple)
    if columns is not None:
        grid = grid.strip(*columns)
    start = first_tile_row(grid, from_row, stitched)
    end = None if to_row is None else end_tile_row(grid, to_row, stitched)
    stop = info.height if to_row is None else to_row

    def emit_between(y0: int, mask: np.ndarray, probs: np.ndarray | None) -> None:
        # rows a resumed run already has, and rows past the region, are not written
        lo, hi = max(0, from_row - y0), min(len(mask), stop - y0)
        if hi > lo:
            emit(y0 + lo, mask[lo:hi], None if probs is None else probs[lo:hi])

    emit_rows = emit_between if from_row or to_row is not None else emit
    return Windowed(source, plane, grid, card.input_channels, emit_rows, start, intensity, note, end)


def window_columns(grid: TileGrid) -> tuple[int, int]:
    """The columns of the plane that the grid's tiles read (a strip's and its halo)."""
    last = mirror_indices(grid.cols[-1], grid.tile[1], grid.size[1])
    return grid.cols[0], int(last.max()) + 1


def window_rows(plan: Windowed, r: int, channels: int) -> np.ndarray:
    """Tile row ``r`` of a windowed plane: its rows read from the source (mirror-filled past
    the bottom), mapped to uint8 and the model's ``channels``; the columns its tiles read."""
    g = plan.grid
    h, th = g.size[0], g.tile[0]
    rows = mirror_indices(g.rows[r], th, h)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    origin = f"{plan.source.info.spec} {plan.source.info.plane_label(plan.plane)}".strip()
    band = plan.source.read(plan.plane, lo, hi, *window_columns(g))
    band = to_channels(to_uint8(band, origin, plan.intensity, None, plan.note), channels)
    return band[rows - lo] if (lo, hi) != (g.rows[r], g.rows[r] + th) else band


def window_pieces(
    plan: Windowed, passes: tuple[tuple[bool, bool], ...], channels: int
) -> Iterator[np.ndarray]:
    """The tiles of a windowed plane, each followed by its flips (``passes``); the next row
    of tiles is read (a thread) while this one's tiles go through the model."""
    g = plan.grid
    with ThreadPoolExecutor(1, thread_name_prefix="fcnx-window") as reader:
        ahead = (
            reader.submit(window_rows, plan, plan.start_row, channels)
            if plan.start_row < (len(g.rows) if plan.end_row is None else plan.end_row)
            else None
        )
        end = len(g.rows) if plan.end_row is None else plan.end_row
        for r in range(plan.start_row, end):
            assert ahead is not None
            band = ahead.result()
            ahead = reader.submit(window_rows, plan, r + 1, channels) if r + 1 < end else None
            (w, tw), left = (g.size[1], g.tile[1]), g.cols[0]  # left: the band's first column
            for x in g.cols:  # past the right edge: mirror-filled from columns the band holds
                inside = x + tw <= w
                tile = (
                    band[:, x - left : x - left + tw] if inside else band[:, mirror_indices(x, tw, w) - left]
                )
                for flip_rows, flip_cols in passes:
                    yield np.ascontiguousarray(flip(tile, flip_rows, flip_cols))
