"""An array input split into regions: what one worker (a Ray actor, ray_regions.py) segments on its own.

A region is whole output chunks:

- a run of whole planes (planes read whole, volumes.py), or
- rows ``y0 .. y1`` (band borders) of one column strip of one plane (planes read by windows).

Its worker reads only the window its tiles need (``read_rows``: the region's rows plus the
halo of the tile rows that reach into them) and writes only its own chunks: no two regions
write one chunk, and a retried region rewrites exactly its own. The tiles that reach into a
region are exactly the tiles an uninterrupted run gives each of its rows, added in the same
order (``first_tile_row`` .. ``end_tile_row``), so the blend at a region's border equals the
local run's byte for byte.

Sizes: the tile row that straddles a region's border runs in both regions: 416 rows of
work (512-row tiles stepping 416) for each border, ~10 % for regions of 8 bands of 512 rows,
~2.5 % at 32. So a windowed region is at least ``MIN_REGION_BANDS`` bands tall and above
that as tall as leaves ``REGIONS_PER_WORKER`` regions for each worker (the balance, and
what a lost worker costs), up to about ``REGION_PIXELS`` output pixels; memory does not
grow with a region's size (it is read and written by rows). Whole planes are grouped the
same way, so a 30-slice stack still spreads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays.band_writer import Band
from ..arrays.source import ArraySource
from .tiling import TileGrid, end_tile_row, first_tile_row, mirror_indices

REGION_PIXELS = 256 << 20  # at most about this many output pixels per region (~100 s on 2 cores)
MIN_REGION_BANDS = 8  # a windowed region's least height, in bands
REGIONS_PER_WORKER = 4  # whole planes: at least this many regions per worker, planes allowing


@dataclass(frozen=True, order=True)
class Region:
    """Planes ``p0 .. p1``, rows ``y0 .. y1`` and columns ``x0 .. x1`` of an array input's
    output (ends exclusive): whole planes, or one plane's rows of one column strip."""

    planes: tuple[int, int]
    rows: tuple[int, int]
    columns: tuple[int, int]

    def bands(self, band: int, strip: int) -> list[Band]:
        """The writer's bands (plane, y0, x0) this region writes."""
        (p0, p1), (y0, y1), (x0, x1) = self.planes, self.rows, self.columns
        return [(p, y, x) for p in range(p0, p1) for y in range(y0, y1, band) for x in range(x0, x1, strip)]

    @property
    def pixels(self) -> int:
        (p0, p1), (y0, y1), (x0, x1) = self.planes, self.rows, self.columns
        return (p1 - p0) * (y1 - y0) * (x1 - x0)

    def describe(self) -> str:
        """``planes 0..7`` or ``plane 3 rows 4096..8192 columns 0..16384`` (ends exclusive)."""
        (p0, p1), (y0, y1), (x0, x1) = self.planes, self.rows, self.columns
        if p1 - p0 > 1:
            return f"planes {p0}..{p1 - 1}"
        return f"plane {p0} rows {y0}..{y1} columns {x0}..{x1}"

    def bounds(self) -> dict[str, list[int]]:
        """The region as failures.jsonl records it (ends exclusive)."""
        return {"planes": list(self.planes), "rows": list(self.rows), "columns": list(self.columns)}


def plan_regions(
    planes: int,
    height: int,
    width: int,
    band: int,
    strip: int,
    windowed: bool,
    workers: int = 1,
    region_pixels: int | None = None,
) -> list[Region]:
    """Every output chunk of an array input in exactly one region (see the module's doc);
    ``workers=0``: the local run's regions (a whole strip of a plane, or all planes)."""
    if min(planes, height, width, band, strip) < 1:
        raise ValueError(f"regions need positive sizes, got {planes, height, width, band, strip}")
    budget = region_pixels or REGION_PIXELS
    if windowed:  # up to the budget, and short enough to give each worker several, down to the least height
        strips = -(-width // strip)
        spread = -(-height * planes * strips // (max(1, workers) * REGIONS_PER_WORKER) // band) * band
        tall = max(MIN_REGION_BANDS * band, min(budget // min(strip, width) // band * band, spread))
        rows = height if workers == 0 else tall
        return [
            Region((p, p + 1), (y, min(height, y + rows)), (x, min(width, x + strip)))
            for p in range(planes)
            for x in range(0, width, strip)
            for y in range(0, height, rows)
        ]
    spread = -(-planes // (max(1, workers) * REGIONS_PER_WORKER))  # planes per region, spread over workers
    group = planes if workers == 0 else max(1, min(budget // (height * width), spread))
    return [Region((p, min(planes, p + group)), (0, height), (0, width)) for p in range(0, planes, group)]


def tile_rows(region: Region, grid: TileGrid, stitched: bool) -> tuple[int, int]:
    """The tile rows a region runs: every tile row whose output reaches into its rows."""
    y0, y1 = region.rows
    return first_tile_row(grid, y0, stitched), end_tile_row(grid, y1, stitched)


def read_rows(region: Region, grid: TileGrid, stitched: bool) -> tuple[int, int]:
    """The input rows a windowed region reads: its rows and the halo its tiles reach."""
    first, end = tile_rows(region, grid, stitched)
    th, h = grid.tile[0], grid.size[0]
    index = np.concatenate([mirror_indices(grid.rows[r], th, h) for r in range(first, end)])
    return int(index.min()), int(index.max()) + 1


class TimedSource(ArraySource):
    """An array source whose reads are timed (seconds, and pixels read): a region's read cost."""

    def __init__(self, source: ArraySource) -> None:
        self.source, self.info = source, source.info
        self.seconds, self.pixels = 0.0, 0
        self._lock = threading.Lock()

    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        started = time.perf_counter()
        window = self.source.read(plane, y0, y1, x0, x1)
        self._count(started, window)
        return window

    def read_plane(self, plane: int) -> np.ndarray:
        started = time.perf_counter()
        image = self.source.read_plane(plane)
        self._count(started, image)
        return image

    def _count(self, started: float, window: np.ndarray) -> None:
        with self._lock:
            self.seconds += time.perf_counter() - started
            self.pixels += int(window.shape[0]) * int(window.shape[1])

    def close(self) -> None:
        self.source.close()

    def cost(self) -> dict[str, Any]:
        return {"read_seconds": round(self.seconds, 3), "pixels_read": self.pixels}
