"""Masks of a stack as ONE multi-page TIFF: page i is the mask of plane i (the ISBI layout).

Pages are 8-bit class ids, zlib (Deflate) compressed, tiled 512 x 512 when a plane is larger
than ``TILE_ABOVE`` px a side (strips otherwise), with the card's palette as the TIFF
colormap (photometric palette): viewers show the colours, ``tifffile.imread`` gives the
class ids, shaped (plane axes..., H, W). BigTIFF when the pixels pass 4 GiB.

A TIFF cannot be written band by band in a resumable way, so each finished band goes first
to ``OUT/.NAME.tif.fcnx-parts/pPPPPPP-yYYYYYYY.zlib`` (its rows, zlib level 1, written
atomically: a part exists whole or not at all, and ``done()`` lists them), beside a
``geometry.json`` that says which output they belong to. ``finish()`` assembles the TIFF
from the parts page by page (tile row by tile row for tiled planes: memory is two bands and
one row of tiles, never a whole huge plane) into a temp file renamed into place, then
removes the parts. Killed and resumed or not, the TIFF is byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes, remove_entry, remove_stale_temps
from .band_writer import (
    BAND_DONE,
    BAND_WRITTEN,
    BEFORE_PUBLISH,
    Band,
    MaskWriter,
    band_starts,
    check_all_written,
    fault_point,
    fsync_path,
    gone,
    require,
)
from .zarr_bands import ProbsZarrWriter

PARTS = ".fcnx-parts"
TILE = 512  # tile side of tiled pages
TILE_ABOVE = 4096  # planes larger than this (either side) are tiled
COMPRESSION = "zlib"  # Deflate: every TIFF reader decodes it, no codec beyond zlib needed
PART_LEVEL = 1  # zlib level of the parts: fast; masks shrink 20-100x anyway
BIGTIFF_ABOVE = 2**32 - 2**25  # pixels (bytes) beyond which a classic TIFF's offsets overflow
_PART = re.compile(r"p(\d+)-y(\d+)\.zlib")


def parts_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PARTS}")


def colormap(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """The TIFF colormap (3, 256) uint16 of a palette (unused entries black)."""
    table = np.zeros((3, 256), np.uint16)
    for k, rgb in enumerate(palette[:256]):
        table[:, k] = np.asarray(rgb, np.uint16) * 257
    return table


class TiffStackWriter(MaskWriter):
    suffix = ".tif"

    def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        self.parts = parts_path(self.path)
        self.geometry = {
            "fcnx": "tiff-parts",
            "version": 1,
            "planes": self.planes,
            "height": self.height,
            "width": self.width,
            "band": self.band,
        }
        self.tiled = max(self.height, self.width) > TILE_ABOVE
        self.started = self._read_geometry() == self.geometry
        self.recorded = self._listed() if self.started else set()
        self.complete = not self.started and not os.path.lexists(self.parts) and self._matches()
        self.probs = ProbsZarrWriter.beside(self)

    # -- state on disk ------------------------------------------------------------------

    def _read_geometry(self) -> Any:
        try:
            return json.loads((self.parts / "geometry.json").read_text())
        except (OSError, ValueError):
            return None

    def _listed(self) -> set[Band]:
        valid = self.all_bands()
        found = set()
        for name in os.listdir(self.parts):
            match = _PART.fullmatch(name)
            if match and (band := (int(match[1]), int(match[2]), 0)) in valid:
                found.add(band)
        return found

    def _matches(self) -> bool:
        """Whether ``path`` is a finished mask TIFF of this geometry."""
        if not self.path.is_file():
            return False
        tifffile = require("tifffile")
        try:
            with tifffile.TiffFile(self.path) as tif:
                page = tif.pages.first
                return bool(
                    len(tif.pages) == self.planes
                    and page.shape == (self.height, self.width)
                    and page.dtype == np.uint8
                    and page.photometric == tifffile.PHOTOMETRIC.PALETTE
                )
        except Exception:  # any unreadable file is simply not a finished output
            return False

    def _start(self) -> None:
        remove_entry(self.parts)
        self.parts.mkdir(parents=True)
        atomic_write_bytes(self.parts / "geometry.json", json.dumps(self.geometry).encode(), tag=self.run_id)
        fsync_path(self.parts)
        fsync_path(self.parts.parent)
        self.started, self.complete, self.recorded = True, False, set()

    def _part(self, plane: int, y0: int) -> Path:
        return self.parts / f"p{plane:06d}-y{y0:07d}.zlib"

    # -- the interface ------------------------------------------------------------------

    def done(self) -> set[Band]:
        with self._lock:
            mine = self.all_bands() if self.complete else set(self.recorded)
        if self.probs is None:
            return mine
        theirs = self.all_bands() if self.probs.complete else set(self.probs.recorded)
        return mine & theirs

    def write_band(
        self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None = None, x0: int = 0
    ) -> None:
        bands = self.check_band(plane, y0, mask, probs, x0)
        if self.probs is not None and probs is not None:
            self.probs.write_probs(bands, self.plane_index(plane), y0, probs)
        with self._lock:
            if not self.started:
                if not self.journaling:
                    raise gone(self.path)
                self._start()
        for p, y, _ in bands:
            rows = np.ascontiguousarray(mask[y - y0 : y - y0 + self.band])
            atomic_write_bytes(self._part(p, y), zlib.compress(rows.tobytes(), PART_LEVEL), tag=self.run_id)
        fsync_path(self.parts)
        fault_point(BAND_WRITTEN, self.path)
        with self._lock:
            self.recorded.update(bands)
        fault_point(BAND_DONE, self.path)

    def begin(self) -> None:
        with self._lock:
            if not self.started:
                self._start()
        if self.probs is not None:
            self.probs.begin()

    def record(self, bands: list[Band]) -> None:
        """The parts are their own record (a part file exists whole or not at all)."""
        with self._lock:
            self.recorded.update(bands)
        if self.probs is not None:
            self.probs.record(bands)

    def finish(self) -> None:
        with self._lock:
            if self.started:
                check_all_written(self.path, self.all_bands() - self.recorded)
            elif not self.complete:
                raise ValueError(f"{self.path}: no band was written")
            if self.probs is not None:
                self.probs.check_finished(self.all_bands())
                self.probs.finish()
            if self.started:
                remove_stale_temps(self.path)  # a killed assembly's temp TIFF
                self._assemble()
                fsync_path(self.path.parent)  # the TIFF's entry is durable before the parts go
                remove_entry(self.parts)
                self.started, self.complete = False, True

    def abort(self) -> None:
        if self.probs is not None:
            self.probs.close()

    # -- assembling the TIFF ------------------------------------------------------------

    def _load(self, plane: int, y0: int) -> np.ndarray:
        part = self._part(plane, y0)
        rows = min(self.band, self.height - y0)
        try:
            data = zlib.decompress(part.read_bytes())
        except (OSError, zlib.error) as exc:
            raise ValueError(f"{part}: cannot read a finished band: {exc}") from None
        if len(data) != rows * self.width:
            raise ValueError(f"{part}: {len(data)} bytes, expected {rows} rows of {self.width}")
        return np.frombuffer(data, np.uint8).reshape(rows, self.width)

    def _pages(self) -> Iterator[np.ndarray]:
        for plane in range(self.planes):
            page = np.empty((self.height, self.width), np.uint8)
            for y0 in band_starts(self.height, self.band):
                page[y0 : y0 + self.band] = self._load(plane, y0)
            yield page

    def _tiles(self) -> Iterator[np.ndarray]:
        """Every page's tiles, row by row: each tile row built from the (at most few) bands it
        crosses, kept until the tile rows have passed them."""
        for plane in range(self.planes):
            bands: dict[int, np.ndarray] = {}
            for ty0 in range(0, self.height, TILE):
                ty1 = min(self.height, ty0 + TILE)
                first, last = ty0 // self.band, (ty1 - 1) // self.band
                for b in [b for b in bands if b < first]:
                    del bands[b]
                pieces = []
                for b in range(first, last + 1):
                    if b not in bands:
                        bands[b] = self._load(plane, b * self.band)
                    top = b * self.band
                    pieces.append(bands[b][max(ty0, top) - top : ty1 - top])
                row = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
                for tx0 in range(0, self.width, TILE):
                    yield np.ascontiguousarray(row[:, tx0 : tx0 + TILE])

    def _assemble(self) -> None:
        tifffile = require("tifffile")
        shape = (*self.plane_shape, self.height, self.width)
        pixels = self.planes * self.height * self.width
        options: dict[str, Any] = {"tile": (TILE, TILE)} if self.tiled else {}
        with atomic_path(self.path, tag=self.run_id) as tmp:
            with tifffile.TiffWriter(tmp, bigtiff=pixels > BIGTIFF_ABOVE) as tif:
                tif.write(
                    self._tiles() if self.tiled else self._pages(),
                    shape=shape,
                    dtype=np.uint8,
                    photometric="palette",
                    colormap=colormap(self.card.palette),
                    compression=COMPRESSION,
                    **options,
                )
            fault_point(BEFORE_PUBLISH, self.path)
