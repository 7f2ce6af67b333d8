"""A Zarr output written band by band (``BandedZarr``: created in ``.NAME.fcnx-partial``,
each band fsynced then journaled in ``.NAME.fcnx-done.jsonl``, renamed into place when
complete) and the probabilities array of ``--save-probs`` (``ProbsZarrWriter``), which every
mask writer (ome_zarr.py, tiff_stack.py, png_planes.py) puts beside its masks."""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import remove_entry, remove_stale_temps
from ..card import ModelCard
from .band_writer import (
    BAND_DONE,
    BAND_WRITTEN,
    BEFORE_PUBLISH,
    Band,
    BandJournal,
    MaskWriter,
    check_all_written,
    chunk_columns,
    fault_point,
    fsync_path,
    fsync_tree,
    gone,
    probs_path,
    require,
)

PROBS_CHUNK_BYTES = 16 << 20  # a probabilities chunk holds at most about this much
PARTIAL = ".fcnx-partial"
JOURNAL = ".fcnx-done.jsonl"
_ZARR_TEMP = re.compile(r".*\.[0-9a-f]{32}\.partial")  # zarr's own temp files (LocalStore)


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PARTIAL}")


def journal_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{JOURNAL}")


class BandedZarr(ABC):
    """One Zarr output written band by band: created in ``.NAME.fcnx-partial``, each band
    fsynced then journaled, renamed into place by ``publish``. Subclasses say what arrays
    it holds (``_create``), which array the bands go to (``LEVEL0``) and how a complete
    output is recognised (``_matches``)."""

    LEVEL0 = ""  # the bands' array, relative to the root

    def __init__(
        self, final: Path, geometry: dict[str, Any], band: int, run_id: str, journal: bool = True
    ) -> None:
        self.final = final
        self.journaling = journal  # False: a region worker's (see MaskWriter), the driver journals
        self.partial = partial_path(final)
        self.band = band
        self.run_id = run_id
        self.journal = BandJournal(journal_path(final), geometry)
        self._array: Any = None
        self._lock = threading.Lock()
        recorded = self.journal.read() if self.partial.is_dir() else None
        self.started = recorded is not None  # the partial folder is this geometry's, journaled
        self.complete = not self.started and not os.path.lexists(self.partial) and self._matches()
        self.recorded: set[Band] = recorded or set()

    @abstractmethod
    def _create(self, root: Path) -> None:
        """Create the output's arrays and metadata below ``root`` (the partial folder)."""

    @abstractmethod
    def _matches(self) -> bool:
        """Whether the output in place is a complete one of this geometry."""

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

    def begin(self) -> None:
        """The partial output exists (a resumable one is kept)."""
        with self._lock:
            if not self.started:
                self._start()

    def record(self, bands: list[Band]) -> None:
        """Journal bands whose chunks a region worker made durable."""
        with self._lock:
            self.journal.append(bands)
            self.recorded.update(bands)

    def array(self) -> Any:
        if self._array is None:
            zarr = require("zarr")
            array = zarr.open_array(self.partial / self.LEVEL0, mode="r+", zarr_format=2)
            self._array = array.with_config({"write_empty_chunks": True})
        return self._array

    @staticmethod
    def chunk_entries(
        root: Path,
        index: tuple[int, ...],
        rows: tuple[int, int],
        columns: tuple[int, int],
        chunk: tuple[int, int],
    ) -> list[Path]:
        """The entries ("/" chunk keys: ``ROW/COLUMN``, a file, or a folder with a class axis)
        holding the chunks of ``rows`` x ``columns`` (chunk borders) of the plane at ``index``."""
        base = root.joinpath(*(str(i) for i in index))
        (y0, y1), (x0, x1), (ch, cw) = rows, columns, chunk
        return [
            base / str(cy) / str(cx)
            for cy in range(y0 // ch, (y1 - 1) // ch + 1)
            for cx in range(x0 // cw, (x1 - 1) // cw + 1)
        ]

    def write(
        self, bands: list[Band], index: tuple[int, ...], y0: int, data: np.ndarray, x0: int = 0
    ) -> None:
        """Rows y0.. and columns x0.. (chunk borders) of the plane at ``index``: their chunks
        durable, then journaled as ``bands``."""
        with self._lock:
            if not self.started:
                if not self.journaling:
                    raise gone(self.final)
                self._start()
            array = self.array()
        rows, columns = (y0, y0 + len(data)), (x0, x0 + data.shape[1])
        chunk = (array.chunks[len(index)], array.chunks[len(index) + 1])
        entries = self.chunk_entries(self.partial / self.LEVEL0, index, rows, columns, chunk)
        for entry in entries:  # what a killed run left of these bands (never journaled)
            remove_entry(entry)
        array[(*index, slice(*rows), slice(*columns))] = data
        for entry in entries:
            fsync_tree(entry, self.partial)
        fault_point(BAND_WRITTEN, self.final)
        with self._lock:
            if self.journaling:
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

    def check_finished(self, bands: set[Band]) -> None:
        """A ValueError unless every one of ``bands`` is in (journaled, or a complete output)."""
        if self.started:
            check_all_written(self.final, bands - self.recorded)
        elif not self.complete:
            raise ValueError(f"{self.final}: no band was written")

    def close(self) -> None:
        self.journal.close()
        self._array = None


def zarray_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / ".zarray").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


class ProbsZarrWriter(BandedZarr):
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
        strip: int | None = None,
        journal: bool = True,
    ) -> None:
        itemsize = np.dtype(dtype).itemsize
        limit = max(256, PROBS_CHUNK_BYTES // (band * channels * itemsize))
        columns = chunk_columns(strip or width, limit)  # chunks never straddle two strips
        self.shape = (*plane_shape, height, width, channels)
        self.chunk = (*(1 for _ in plane_shape), min(band, height), min(width, columns), channels)
        self.dtype, self.card, self.plane_axes = dtype, card, plane_axes
        geometry = {"shape": self.shape, "chunks": self.chunk, "strip": strip or width, "dtype": dtype}
        super().__init__(Path(path), geometry, band, run_id, journal)

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
            masks.strip,
            masks.journaling,
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
        meta = zarray_meta(self.final)
        return (
            meta is not None
            and meta.get("shape") == list(self.shape)
            and meta.get("chunks") == list(self.chunk)
            and meta.get("dtype") == np.dtype(self.dtype).str
            and (self.final / ".zattrs").is_file()
        )

    def write_probs(
        self, bands: list[Band], index: tuple[int, ...], y0: int, probs: np.ndarray, x0: int = 0
    ) -> None:
        if self.dtype == "uint8":
            data = np.clip(np.rint(probs.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        else:
            data = probs.astype(np.float16, copy=False)
        self.write(bands, index, y0, data, x0)

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
