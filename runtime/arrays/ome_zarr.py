"""Masks as an OME-Zarr label image, and probabilities as a Zarr array, written band by band.

``OUT/NAME.zarr`` is a Zarr v2 group holding an NGFF 0.4 multiscale label image: the
arrays ``0`` (full size), ``1``, ... (nearest-neighbour halvings of y and x until a plane
is at most ``PYRAMID_MIN`` px a side), and in its attributes ``multiscales`` (axes: the
input's plane axes, then y, x) and ``image-label`` (the card's palette as ``colors``, the
class names as ``properties``). The group itself is the label image, so
``ome_zarr.reader.Reader(parse_url(OUT/NAME.zarr))`` and napari open it as labels with the
card's colours; to attach it to an OME-Zarr image, copy it to ``IMAGE.zarr/labels/NAME``
and list NAME in ``labels/.zattrs``. Level 0 chunks are (1, ..., band, <= 4096): one row of
chunks per band, so no chunk is written twice.

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
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import remove_entry, remove_stale_temps
from ..card import ModelCard
from .band_writer import (
    BAND_DONE,
    BAND_WRITTEN,
    BEFORE_PUBLISH,
    BandJournal,
    MaskWriter,
    base_name,
    check_all_written,
    fault_point,
    fsync_path,
    fsync_tree,
    probs_path,
    require,
)
from .source import ArrayError

NGFF_VERSION = "0.4"
CHUNK_WIDTH = 4096  # level-0 chunk columns (at most)
PYRAMID_MIN = 1024  # halve until a plane is at most this many px a side
PROBS_CHUNK_BYTES = 16 << 20  # a probabilities chunk holds at most about this much
PARTIAL = ".fcnx-partial"
JOURNAL = ".fcnx-done.jsonl"
_ZARR_TEMP = re.compile(r".*\.[0-9a-f]{32}\.partial")  # zarr's own temp files (LocalStore)


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PARTIAL}")


def journal_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{JOURNAL}")


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


class _BandedZarr:
    """One Zarr output written band by band: created in ``.NAME.fcnx-partial``, each band
    fsynced then journaled, renamed into place by ``publish``. Subclasses say what arrays
    it holds (``_create``), which array the bands go to (``LEVEL0``) and how a complete
    output is recognised (``_matches``)."""

    LEVEL0 = ""  # the bands' array, relative to the root

    def __init__(self, final: Path, geometry: dict[str, Any], band: int, run_id: str) -> None:
        self.final = final
        self.partial = partial_path(final)
        self.band = band
        self.run_id = run_id
        self.journal = BandJournal(journal_path(final), geometry)
        self._array: Any = None
        self._lock = threading.Lock()
        recorded = self.journal.read() if self.partial.is_dir() else None
        self.started = recorded is not None  # the partial folder is this geometry's, journaled
        self.complete = not self.started and not os.path.lexists(self.partial) and self._matches()
        self.recorded: set[tuple[int, int]] = recorded or set()

    def _create(self, root: Path) -> None:
        raise NotImplementedError

    def _matches(self) -> bool:
        raise NotImplementedError

    def _start(self) -> None:
        """A fresh partial output (a previous one without a journal of this geometry goes).
        The old journal goes first: one left by a killed ``publish`` (same geometry) beside a
        new, still empty partial output would make every band of it look done."""
        self.journal.remove()
        remove_entry(self.partial)
        self._create(self.partial)
        fsync_tree(self.partial, self.partial.parent)
        self.journal.start()
        self.started, self.complete, self.recorded = True, False, set()

    def array(self) -> Any:
        if self._array is None:
            zarr = require("zarr")
            array = zarr.open_array(self.partial / self.LEVEL0, mode="r+", zarr_format=2)
            self._array = array.with_config({"write_empty_chunks": True})
        return self._array

    def band_dirs(self, root: Path, index: tuple[int, ...], y0: int, rows: int, band: int) -> list[Path]:
        """The folders holding the chunks of rows y0..y0+rows ("/" chunk keys: one per chunk row)."""
        base = root.joinpath(*(str(i) for i in index))
        return [base / str(cy) for cy in range(y0 // band, (y0 + rows - 1) // band + 1)]

    def write(self, bands: list[tuple[int, int]], index: tuple[int, ...], y0: int, data: np.ndarray) -> None:
        with self._lock:
            if not self.started:
                self._start()
            array = self.array()
        folders = self.band_dirs(self.partial / self.LEVEL0, index, y0, len(data), self.band)
        for folder in folders:  # what a killed run left of these bands (never journaled)
            remove_entry(folder)
        array[(*index, slice(y0, y0 + len(data)))] = data
        for folder in folders:
            fsync_tree(folder, self.partial)
        fault_point(BAND_WRITTEN, self.final)
        with self._lock:
            self.journal.append(bands)
            self.recorded.update(bands)
        fault_point(BAND_DONE, self.final)

    def publish(self) -> None:
        """Put the finished partial output in place of ``final`` (whatever was there goes),
        then remove the journal and what killed publishes left (``.NAME.<hex>.old``)."""
        for root, _, files in os.walk(self.partial):  # zarr's temps from a killed write
            for name in files:
                if _ZARR_TEMP.fullmatch(name):
                    os.unlink(Path(root) / name)
        fsync_tree(self.partial, self.partial.parent)
        fault_point(BEFORE_PUBLISH, self.final)
        old = None
        if os.path.lexists(self.final):
            tag = f"{self.run_id}-" if self.run_id else ""
            old = self.final.with_name(f".{self.final.name}.{tag}{secrets.token_hex(6)}.old")
            os.rename(self.final, old)
        os.rename(self.partial, self.final)
        fsync_path(self.final.parent)
        if old is not None:
            remove_entry(old)
        self.journal.remove()
        remove_stale_temps(self.final)
        self.started, self.complete, self._array = False, True, None

    def check_finished(self, bands: set[tuple[int, int]]) -> None:
        """A ValueError unless every one of ``bands`` is in (journaled, or a complete output)."""
        if self.started:
            check_all_written(self.final, bands - self.recorded)
        elif not self.complete:
            raise ValueError(f"{self.final}: no band was written")

    def close(self) -> None:
        self.journal.close()
        self._array = None


def _zarray(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / ".zarray").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


class _LabelZarr(_BandedZarr):
    LEVEL0 = "0"

    def __init__(
        self,
        final: Path,
        shapes: list[tuple[int, ...]],
        chunks: list[tuple[int, ...]],
        band: int,
        run_id: str,
    ) -> None:
        self.shapes, self.chunks = shapes, chunks
        super().__init__(final, {"shapes": shapes, "chunks": chunks, "dtype": "uint8"}, band, run_id)

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
            meta = _zarray(self.final / str(level))
            if meta is None or meta.get("shape") != list(shape) or meta.get("chunks") != list(chunks):
                return False
            if meta.get("dtype") != np.dtype("uint8").str:
                return False
        try:
            attrs = json.loads((self.final / ".zattrs").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(attrs, dict) and "multiscales" in attrs and "image-label" in attrs


class ProbsZarrWriter(_BandedZarr):
    """``--save-probs`` of an array input: (plane axes..., H, W, K) float16 or uint8
    (round(p * 255)) in ``OUT/NAME.probs.zarr``, band by band, with its own journal."""

    def __init__(
        self,
        path: Path,
        plane_shape: tuple[int, ...],
        height: int,
        width: int,
        band: int,
        channels: int,
        dtype: str,
        card: ModelCard,
        plane_axes: str,
        run_id: str = "",
    ) -> None:
        itemsize = np.dtype(dtype).itemsize
        columns = max(256, PROBS_CHUNK_BYTES // (band * channels * itemsize)) // 256 * 256
        self.shape = (*plane_shape, height, width, channels)
        self.chunk = (*(1 for _ in plane_shape), min(band, height), min(width, columns), channels)
        self.dtype, self.card, self.plane_axes = dtype, card, plane_axes
        geometry = {"shape": self.shape, "chunks": self.chunk, "dtype": dtype}
        super().__init__(Path(path), geometry, band, run_id)

    @classmethod
    def beside(cls, masks: MaskWriter) -> ProbsZarrWriter | None:
        """The probabilities writer of a mask writer's output, or None without ``--save-probs``."""
        if masks.probs_dtype is None:
            return None
        return cls(
            probs_path(masks.path),
            masks.plane_shape,
            masks.height,
            masks.width,
            masks.band,
            masks.probs_channels,
            masks.probs_dtype,
            masks.card,
            masks.plane_axes,
            masks.run_id,
        )

    def _create(self, root: Path) -> None:
        zarr, numcodecs = require("zarr"), require("numcodecs")
        zarr.create_array(
            root,
            shape=self.shape,
            chunks=self.chunk,
            dtype=self.dtype,
            fill_value=0,
            compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            config={"write_empty_chunks": True},
            zarr_format=2,
        )

    def _matches(self) -> bool:
        meta = _zarray(self.final)
        return (
            meta is not None
            and meta.get("shape") == list(self.shape)
            and meta.get("chunks") == list(self.chunk)
            and meta.get("dtype") == np.dtype(self.dtype).str
            and (self.final / ".zattrs").is_file()
        )

    def write_probs(
        self, bands: list[tuple[int, int]], index: tuple[int, ...], y0: int, probs: np.ndarray
    ) -> None:
        if self.dtype == "uint8":
            data = np.clip(np.rint(probs.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        else:
            data = probs.astype(np.float16, copy=False)
        self.write(bands, index, y0, data)

    def finish(self) -> None:
        if not self.started:
            return
        attrs = {
            "axes": [*(a.lower() for a in self.plane_axes), "y", "x", "class"],
            "classes": list(self.card.classes),
            "encoding": "probability" if self.dtype == "float16" else "round(probability * 255)",
        }
        self.array().attrs.update(attrs)
        self.publish()


class OmeZarrLabelWriter(MaskWriter):
    """Masks of an array input as an OME-Zarr (NGFF 0.4, Zarr v2) label image ``NAME.zarr``
    with a nearest-neighbour pyramid; probabilities (``probs``) in ``NAME.probs.zarr``."""

    suffix = ".zarr"

    def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        self.axes = ngff_axes(self.plane_axes, self.path)
        ones = tuple(1 for _ in self.plane_shape)
        shapes = pyramid_shapes(self.height, self.width)
        self.level_shapes = [(*self.plane_shape, h, w) for h, w in shapes]
        chunks = [(*ones, min(self.band, h), min(w, CHUNK_WIDTH)) for h, w in shapes]
        self.labels = _LabelZarr(self.path, self.level_shapes, chunks, self.band, self.run_id)
        self.probs = ProbsZarrWriter.beside(self)

    def done(self) -> set[tuple[int, int]]:
        with self._lock:
            parts = [self.labels] + ([self.probs] if self.probs is not None else [])
            sets = [self.all_bands() if part.complete else set(part.recorded) for part in parts]
            return set.intersection(*sets)

    def write_band(self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None = None) -> None:
        bands = self.check_band(plane, y0, mask, probs)
        index = self.plane_index(plane)
        if self.probs is not None and probs is not None:
            self.probs.write_probs(bands, index, y0, probs)
        self.labels.write(bands, index, y0, mask)

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
        band by band: memory is two bands of the level above."""
        zarr = require("zarr")
        root = self.labels.partial
        ones = len(self.plane_shape)
        for level in range(1, len(self.level_shapes)):
            source = zarr.open_array(root / str(level - 1), mode="r", zarr_format=2)
            target = zarr.open_array(root / str(level), mode="r+", zarr_format=2)
            target = target.with_config({"write_empty_chunks": True})
            height, rows = self.level_shapes[level][ones], target.chunks[ones]
            above = self.level_shapes[level - 1][ones]
            for plane in range(self.planes):
                index = self.plane_index(plane)
                for y0 in range(0, height, rows):
                    y1 = min(height, y0 + rows)
                    block = np.asarray(source[(*index, slice(2 * y0, min(2 * y1, above)))])
                    target[(*index, slice(y0, y1))] = block[::2, ::2]
                    for folder in self.labels.band_dirs(root / str(level), index, y0, y1 - y0, rows):
                        fsync_tree(folder, root)

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
