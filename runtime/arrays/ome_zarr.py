"""Masks as an OME-Zarr label image, and probabilities as a Zarr array, written band by band.

``OUT/NAME.zarr`` is a Zarr v2 group holding an NGFF 0.4 multiscale label image: the
arrays ``0`` (full size), ``1``, ... (nearest-neighbour halvings of y and x until a plane
is at most ``PYRAMID_MIN`` px a side), and in its attributes ``multiscales`` (axes: the
input's plane axes, then y, x) and ``image-label`` (the card's palette as ``colors``, the
class names as ``properties``). The group itself is the label image, so
``ome_zarr.reader.Reader(parse_url(OUT/NAME.zarr))`` and napari open it as labels with the
card's colours; to attach it to an OME-Zarr image, copy it to ``IMAGE.zarr/labels/NAME``
and list NAME in ``labels/.zattrs``. Level 0 chunks are (1, ..., band, <= 4096): one row of
chunks per band, chunk columns dividing the column strip (``STRIP_COLUMNS``: a wider plane
is segmented strip by strip), so no chunk is written twice.

``OUT/NAME.probs.zarr`` (``--save-probs``) is a plain Zarr v2 array (plane axes..., y, x,
class) of float16, or uint8 (round(probability * 255)).

Resume and atomicity: an output is written in ``OUT/.NAME.zarr.fcnx-partial/`` and renamed
to ``OUT/NAME.zarr`` by ``finish()``, so ``NAME.zarr`` exists only whole. Each band's
chunk files (and their folders) are fsynced, then the band is appended to the journal
``OUT/.NAME.zarr.fcnx-done.jsonl`` (``BandJournal``); ``done()`` reads it. A band without a
journal line is written again by the resume (its chunks removed first), so a half-written
chunk never counts. The journal goes once the output is in place: a complete output is
``NAME.zarr`` without a ``.fcnx-partial`` folder beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .band_writer import (
    Band,
    MaskWriter,
    base_name,
    chunk_columns,
    fsync_tree,
    require,
)
from .source import ArrayError
from .zarr_bands import BandedZarr, ProbsZarrWriter, zarray_meta

NGFF_VERSION = "0.4"
CHUNK_WIDTH = 4096  # level-0 chunk columns (at most)
# A plane wider than this is segmented as column strips of this width (each with the tiles
# that reach into it from its neighbours): what a wide plane holds in memory (tile rows,
# blend band, output band) is one strip's, so memory does not grow with the image's width.
# 16384: the tiles recomputed where strips meet are under 3 % of a 512² tiling's.
STRIP_COLUMNS = 16384
PYRAMID_MIN = 1024  # halve until a plane is at most this many px a side


def ngff_axes(plane_axes: str, origin: Path | str = "") -> list[dict[str, str]]:
    """NGFF 0.4 axes for masks with these plane axes, then y and x. A lone plane axis that
    is not T, C or Z (tifffile's I/Q of a plain page sequence) becomes z. Axes NGFF cannot
    order (time first, channel before space, at most one custom axis, at most 5) are an
    ArrayError naming them."""
    others = [a for a in plane_axes if a not in "TCZ"]
    axes = []
    for a in plane_axes:
        if a == "T":
            axes.append({"name": "t", "type": "time"})
        elif a == "C":
            axes.append({"name": "c", "type": "channel"})
        elif a == "Z" or (len(others) == 1 and "Z" not in plane_axes):
            axes.append({"name": "z", "type": "space"})
        else:
            axes.append({"name": a.lower()})
    axes += [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    types = [a.get("type") for a in axes]
    problem = None
    if len(axes) > 5:
        problem = "more than 5 axes"
    elif "time" in types[1:]:
        problem = "time must be the first axis"
    elif types.count("channel") > 1 or ("channel" in types and types.index("channel") > types.index("space")):
        problem = "the channel axis must come before z, y, x"
    elif types.count(None) > 1:
        problem = "more than one axis that is not t, c, z, y or x"
    elif len({a["name"] for a in axes}) != len(axes):
        problem = "an axis name repeats"
    if problem:
        raise ArrayError(
            f"{origin}: masks with plane axes {plane_axes!r} cannot be an NGFF {NGFF_VERSION} label image "
            f"({problem}); use --output-format tiff"
        )
    return axes


def pyramid_shapes(height: int, width: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    while max(shapes[-1]) > PYRAMID_MIN:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


class _LabelZarr(BandedZarr):
    LEVEL0 = "0"

    def __init__(
        self,
        final: Path,
        shapes: list[tuple[int, ...]],
        chunks: list[tuple[int, ...]],
        band: int,
        strip: int,
        run_id: str,
        journal: bool = True,
    ) -> None:
        self.shapes, self.chunks = shapes, chunks
        geometry = {"shapes": shapes, "chunks": chunks, "strip": strip, "dtype": "uint8"}
        super().__init__(final, geometry, band, run_id, journal)

    def _create(self, root: Path) -> None:
        zarr, numcodecs = require("zarr"), require("numcodecs")
        group = zarr.open_group(root, mode="w", zarr_format=2)
        for level, (shape, chunks) in enumerate(zip(self.shapes, self.chunks)):
            group.create_array(
                str(level),
                shape=shape,
                chunks=chunks,
                dtype="uint8",
                fill_value=0,
                compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
                chunk_key_encoding={"name": "v2", "separator": "/"},
                config={"write_empty_chunks": True},
            )

    def _matches(self) -> bool:
        for level, (shape, chunks) in enumerate(zip(self.shapes, self.chunks)):
            meta = zarray_meta(self.final / str(level))
            if meta is None or meta.get("shape") != list(shape) or meta.get("chunks") != list(chunks):
                return False
            if meta.get("dtype") != np.dtype("uint8").str:
                return False
        try:
            attrs = json.loads((self.final / ".zattrs").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(attrs, dict) and "multiscales" in attrs and "image-label" in attrs


class OmeZarrLabelWriter(MaskWriter):
    """Masks of an array input as an OME-Zarr (NGFF 0.4, Zarr v2) label image ``NAME.zarr``
    with a nearest-neighbour pyramid; probabilities (``probs``) in ``NAME.probs.zarr``."""

    suffix = ".zarr"
    STRIP = STRIP_COLUMNS

    def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        self.axes = ngff_axes(self.plane_axes, self.path)
        ones = tuple(1 for _ in self.plane_shape)
        shapes = pyramid_shapes(self.height, self.width)
        self.level_shapes = [(*self.plane_shape, h, w) for h, w in shapes]
        columns = chunk_columns(self.strip, CHUNK_WIDTH)
        chunks = [(*ones, min(self.band, h), min(w, columns)) for h, w in shapes]
        self.labels = _LabelZarr(
            self.path, self.level_shapes, chunks, self.band, self.strip, self.run_id, self.journaling
        )
        self.probs = ProbsZarrWriter.beside(self)

    def done(self) -> set[Band]:
        with self._lock:
            parts = [self.labels] + ([self.probs] if self.probs is not None else [])
            sets = [self.all_bands() if part.complete else set(part.recorded) for part in parts]
            return set.intersection(*sets)

    def write_band(
        self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None = None, x0: int = 0
    ) -> None:
        bands = self.check_band(plane, y0, mask, probs, x0)
        index = self.plane_index(plane)
        if self.probs is not None and probs is not None:
            self.probs.write_probs(bands, index, y0, probs, x0)
        self.labels.write(bands, index, y0, mask, x0)

    def begin(self) -> None:
        for part in self._parts():
            part.begin()

    def record(self, bands: list[Band]) -> None:
        for part in self._parts():
            part.record(bands)

    def _parts(self) -> list[BandedZarr]:
        return [self.labels] + ([self.probs] if self.probs is not None else [])

    def finish(self) -> None:
        with self._lock:
            for part in [self.labels] + ([self.probs] if self.probs is not None else []):
                part.check_finished(self.all_bands())
            if self.probs is not None:
                self.probs.finish()
            if self.labels.started:
                self._pyramid()
                zarr = require("zarr")
                group = zarr.open_group(self.labels.partial, mode="r+", zarr_format=2)
                group.attrs.update(self.metadata())
                self.labels.publish()

    def _pyramid(self) -> None:
        """Levels 1.. by nearest neighbour (every other row and column of the level above),
        chunk by chunk: memory is four chunks of the level above, whatever the image's size."""
        zarr = require("zarr")
        root = self.labels.partial
        ones = len(self.plane_shape)
        for level in range(1, len(self.level_shapes)):
            source = zarr.open_array(root / str(level - 1), mode="r", zarr_format=2)
            target = zarr.open_array(root / str(level), mode="r+", zarr_format=2)
            target = target.with_config({"write_empty_chunks": True})
            (height, width), (rows, columns) = self.level_shapes[level][ones:], target.chunks[ones:]
            above = self.level_shapes[level - 1][ones:]
            for plane in range(self.planes):
                index = self.plane_index(plane)
                for y0 in range(0, height, rows):
                    y1 = min(height, y0 + rows)
                    for x0 in range(0, width, columns):
                        x1 = min(width, x0 + columns)
                        window = (slice(2 * y0, min(2 * y1, above[0])), slice(2 * x0, min(2 * x1, above[1])))
                        block = np.asarray(source[(*index, *window)])
                        target[(*index, slice(y0, y1), slice(x0, x1))] = block[::2, ::2]
                    entries = self.labels.chunk_entries(
                        root / str(level), index, (y0, y1), (0, width), (rows, columns)
                    )
                    for entry in entries:
                        fsync_tree(entry, root)

    def metadata(self) -> dict[str, Any]:
        """The group's NGFF attributes: ``multiscales`` and ``image-label``."""
        n = len(self.plane_shape)
        datasets = [
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * n + [2.0**level] * 2}],
            }
            for level in range(len(self.level_shapes))
        ]
        name = base_name(self.path.name)
        colors = [{"label-value": k, "rgba": [*rgb, 255]} for k, rgb in enumerate(self.card.palette)]
        properties = [{"label-value": k, "class": c} for k, c in enumerate(self.card.classes)]
        return {
            "multiscales": [
                {
                    "version": NGFF_VERSION,
                    "name": name,
                    "axes": self.axes,
                    "datasets": datasets,
                    "type": "nearest",
                    "metadata": {"method": "every other row and column (numpy [::2, ::2])"},
                }
            ],
            "image-label": {"version": NGFF_VERSION, "colors": colors, "properties": properties},
        }

    def abort(self) -> None:
        with self._lock:
            self.labels.close()
            if self.probs is not None:
                self.probs.close()
