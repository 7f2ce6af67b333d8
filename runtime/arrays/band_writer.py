"""What every mask writer of an array input shares: the ``MaskWriter`` interface, the band
geometry, the resume journal and the fsyncs that make a band durable.

A writer receives the masks of one array input as row bands of its planes, in any order,
and makes each band durable before ``write_band`` returns; ``done()`` of a later writer on
the same path says which bands a killed run finished, so a resume computes only the rest.
``band`` is the number of rows per band (the Segmenter's tile-row step): a band is the unit
of writing, of durability and of resume, and output chunks are cut on band borders so no
chunk is ever written twice.

A writer whose format can be written by columns (a Zarr array) also cuts planes wider than
its ``strip`` into column strips: a band is then (plane, y0, x0), the rows y0.. of the
strip starting at column x0, and a wide plane is segmented strip by strip, so the rows in
memory are a strip's width whatever the plane's (memory does not grow with the image).
Formats written row by row (TIFF, PNG) have one strip, the plane's width (x0 is 0).
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..atomic import _fault_point, atomic_write_bytes, remove_entry, remove_stale_temps
from ..backends.base import MissingExtra
from ..card import ModelCard

# FCNX_KILL_AT moments of a band writer (tests/reliability kill a run exactly there), matched
# against the output's file name, e.g. FCNX_KILL_AT="band-written:vol.zarr#3":
BAND_WRITTEN = "band-written"  # the band's chunks/part are durable, its journal line not yet
BAND_DONE = "band-done"  # the band's journal line is durable
BEFORE_PUBLISH = "before-publish"  # finish(): everything written, not yet renamed into place

PROBS_DTYPES = {"float16": "float16", "uint8": "uint8", "npy": "float16", "png": "uint8"}


def require(module: str) -> Any:
    """Import one of the ``volumes`` extra's libraries, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise MissingExtra(
            f'writing array outputs needs {module}, which is not installed: pip install "fcnx[volumes]"'
        ) from None


def fsync_path(path: Path) -> None:
    """Flush a file's bytes or a folder's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path, up_to: Path) -> None:
    """fsync every file and folder under ``folder``, then ``folder`` and its parents up to
    ``up_to`` (so the entries of newly made folders are durable too)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        for name in dirs:
            fsync_path(Path(root) / name)
    node = folder
    while True:
        fsync_path(node)
        if node == up_to or node.parent == node:
            break
        node = node.parent


# Output names: the input's name without its format's suffix, then the output's
FORMAT_SUFFIXES: tuple[str, ...] = (
    *(".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".n5"),
    *(".tiff", ".tif", ".btf", ".tf8", ".hdf5", ".h5", ".he5"),
)
PROBS_SUFFIX = ".probs.zarr"


def base_name(name: str) -> str:
    """``vol.ome.zarr`` -> ``vol``, ``stack.tif`` -> ``stack``, ``x.h5`` -> ``x``, ``a.b`` -> ``a.b``."""
    for suffix in FORMAT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def probs_path(output: Path) -> Path:
    """Where the probabilities of the masks at ``output`` go: ``NAME.probs.zarr`` beside it."""
    return output.with_name(base_name(output.name) + PROBS_SUFFIX)


def band_starts(height: int, band: int) -> range:
    return range(0, height, band)


Band = tuple[int, int, int]  # (plane, y0, x0): the rows y0.. of the column strip at x0


def chunk_columns(strip: int, limit: int) -> int:
    """A chunk width that divides ``strip`` (so no chunk straddles two strips): ``strip``
    halved while it is over ``limit`` and even."""
    while strip > limit and strip % 2 == 0:
        strip //= 2
    return strip


def plane_shape_for(planes: int, plane_axes: str, plane_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The plane axes' lengths: ``(planes,)`` for one axis, ``()`` for a single 2D image."""
    if plane_shape is None:
        if len(plane_axes) > 1:
            raise ValueError(f"plane axes {plane_axes!r} need their lengths (plane_shape)")
        plane_shape = (planes,) if plane_axes else ()
    if len(plane_shape) != len(plane_axes) or int(np.prod(plane_shape, dtype=np.int64)) != planes:
        raise ValueError(f"plane axes {plane_axes!r} of lengths {plane_shape} do not make {planes} planes")
    return tuple(int(n) for n in plane_shape)


class MaskWriter(ABC):
    """The masks of one array input: ``planes`` planes of (height, width) uint8 class ids,
    written in row bands of ``band`` rows, durable band by band.

    ``plane_axes`` names the axes that count planes, outermost first ("Z", "TZ"; "" for one
    2D image; default "Z" for several planes, "" for one), ``plane_shape`` their lengths
    (needed for more than one axis); plane numbers run row-major over them, as
    ``ArrayInfo.plane_index``. ``probs``: None, or the dtype of a probabilities array
    written beside the masks ("float16" or "uint8" 0..255; the flag values "npy"/"png" of
    ``--save-probs`` mean the same). ``strip``: the column strip width of a format written
    by columns (default ``STRIP``); formats written by rows ignore it.

    ``journal=False``: a region worker's writer (runtime/predict/ray_regions.py). It writes
    its bands' chunks, durable when ``write_band`` returns, into the output its driver
    started (``begin``), never starts one and never records: the driver ``record``s the
    bands a worker reports, so one process alone appends to the journal."""

    suffix: ClassVar[str]  # the output's file suffix
    STRIP: ClassVar[int | None] = None  # column strips of this width, or None: written by rows

    def __init__(
        self,
        path: Path,
        planes: int,
        height: int,
        width: int,
        band: int,
        card: ModelCard,
        probs: str | None = None,
        run_id: str = "",
        plane_axes: str | None = None,
        plane_shape: tuple[int, ...] | None = None,
        strip: int | None = None,
        journal: bool = True,
    ) -> None:
        if min(planes, height, width, band) < 1:
            raise ValueError(
                f"{path}: planes, height, width and band must be >= 1, got {planes, height, width, band}"
            )
        if probs is not None and probs not in PROBS_DTYPES:
            raise ValueError(f"{path}: probs must be one of {sorted(PROBS_DTYPES)}, got {probs!r}")
        self.path = Path(path)
        self.planes, self.height, self.width, self.band = planes, height, width, band
        self.card = card
        self.probs_dtype = PROBS_DTYPES[probs] if probs is not None else None
        self.probs_channels = 1 if card.output_kind == "sigmoid" else card.num_classes
        self.run_id = run_id
        self.plane_axes = plane_axes if plane_axes is not None else ("Z" if planes > 1 else "")
        self.plane_shape = plane_shape_for(planes, self.plane_axes, plane_shape)
        self.strip = self.strip_width(width, strip)
        self.journaling = journal
        self._lock = threading.Lock()

    @classmethod
    def strip_width(cls, width: int, strip: int | None = None) -> int:
        """The column strip width this format cuts planes of ``width`` into."""
        if cls.STRIP is None:
            return width
        strip = strip or cls.STRIP
        if strip < 1:
            raise ValueError(f"strip must be >= 1, got {strip}")
        return min(strip, width)

    # -- the interface ------------------------------------------------------------------

    @abstractmethod
    def done(self) -> set[Band]:
        """(plane, y0, x0) of every band already durable (a killed run's, or this one's)."""

    @abstractmethod
    def write_band(
        self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None = None, x0: int = 0
    ) -> None:
        """Rows ``y0 .. y0 + len(mask)`` of ``plane``'s strip at column ``x0``: one band, or
        several whole bands at once (the last band of a plane may be shorter). Durable when
        it returns."""

    @abstractmethod
    def finish(self) -> None:
        """All bands are in: metadata, pyramid, put in place atomically. Afterwards ``done()``
        of a fresh writer on the same path lists every band."""

    @abstractmethod
    def abort(self) -> None:
        """Stop: what is durable stays for a resume; nothing half-written counts as done."""

    @abstractmethod
    def begin(self) -> None:
        """Start the output (its partial folder or parts) unless a killed run's is there to
        resume: what region workers' writers write into."""

    @abstractmethod
    def record(self, bands: list[Band]) -> None:
        """Bands a region worker made durable: recorded as done (journaled), as if written here."""

    # -- shared helpers -----------------------------------------------------------------

    def column_starts(self) -> range:
        """Where the column strips start."""
        return range(0, self.width, self.strip)

    def all_bands(self) -> set[Band]:
        return {
            (p, y, x)
            for p in range(self.planes)
            for y in band_starts(self.height, self.band)
            for x in self.column_starts()
        }

    def plane_index(self, plane: int) -> tuple[int, ...]:
        """Plane number -> its index on each plane axis (row-major)."""
        return tuple(int(i) for i in np.unravel_index(plane, self.plane_shape)) if self.plane_shape else ()

    def check_band(
        self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None, x0: int = 0
    ) -> list[Band]:
        """The bands (plane, y0, x0) that ``mask`` covers; a ValueError naming the output when
        the arguments do not fit the writer's geometry."""
        rows = mask.shape[0] if mask.ndim == 2 else -1
        where = f"{self.path}: plane {plane} rows {y0}.." + (f" columns {x0}.." if x0 else "")
        if not 0 <= plane < self.planes:
            raise ValueError(f"{where}: plane must be in 0..{self.planes - 1}")
        if y0 % self.band or not 0 <= y0 < self.height:
            raise ValueError(f"{where}: y0 must be a multiple of the band ({self.band}) below {self.height}")
        if x0 % self.strip or not 0 <= x0 < self.width:
            raise ValueError(f"{where}: x0 must be a multiple of the strip ({self.strip}) below {self.width}")
        width = min(self.strip, self.width - x0)
        if mask.dtype != np.uint8 or mask.ndim != 2 or mask.shape[1] != width:
            raise ValueError(f"{where}: a mask band is uint8 (rows, {width}), got {mask.dtype} {mask.shape}")
        end = y0 + rows
        if rows < 1 or end > self.height or (rows % self.band and end != self.height):
            raise ValueError(
                f"{where}: a band has {self.band} rows (fewer only at the plane's end, {self.height}), got {rows}"
            )
        if self.probs_dtype is not None:
            want = (rows, width, self.probs_channels)
            if probs is None or probs.shape != want or probs.dtype.kind != "f":
                got = None if probs is None else f"{probs.dtype} {probs.shape}"
                raise ValueError(f"{where}: float probabilities of shape {want} expected, got {got}")
        return [(plane, y, x0) for y in range(y0, end, self.band)]


class BandJournal:
    """The durable list of finished bands of a chunked output: a JSON-lines file whose first
    line is the output's geometry (``{"fcnx": "bands", "version": 1, ...}``) and every other
    line one finished band, ``{"plane": P, "y0": Y, "x0": X}``, appended and fsynced only after the
    band's chunks are durable. A torn last line (a kill mid-append) is dropped; a journal
    whose geometry differs from the writer's is not a resume of it."""

    VERSION = 1

    def __init__(self, path: Path, geometry: dict[str, Any]) -> None:
        self.path = path
        # through JSON once, so tuples compare equal to the lists read back
        self.header = json.loads(json.dumps({"fcnx": "bands", "version": self.VERSION, **geometry}))
        self._file: Any = None

    def read(self) -> set[Band] | None:
        """The bands recorded, or None when there is no journal of this geometry."""
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return None
        try:
            if json.loads(lines[0]) != self.header:
                return None
        except ValueError:
            return None
        done = set()
        # lines[-1] follows the last newline: empty, or a torn line that ``append`` drops
        for line in lines[1:-1]:
            try:
                record = json.loads(line)
                done.add((int(record["plane"]), int(record["y0"]), int(record.get("x0", 0))))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line: its band is simply written again
        return done

    def start(self) -> None:
        """A new, empty journal (atomically: it exists whole or not at all)."""
        self.close()
        atomic_write_bytes(self.path, (json.dumps(self.header) + "\n").encode())

    def append(self, bands: Iterable[Band]) -> None:
        if self._file is None:
            self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across bands)
            data = self._file.read()
            self._file.seek(data.rfind(b"\n") + 1)  # drop a torn last line
            self._file.truncate()
        lines = "".join(json.dumps({"plane": p, "y0": y, "x0": x}) + "\n" for p, y, x in bands)
        self._file.write(lines.encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        remove_entry(self.path)
        remove_stale_temps(self.path)  # a killed ``start``'s temp


def gone(output: Path) -> RuntimeError:
    """What a region worker's writer (``journal=False``) says when its output was never
    started or has been removed: the run that started it is gone."""
    return RuntimeError(f"{output}: its partial output is not there; the run that started it is gone")


def check_all_written(output: Path, missing: set[Band]) -> None:
    if missing:
        plane, y0, x0 = min(missing)
        columns = f", columns {x0}.." if x0 else ""
        raise ValueError(
            f"{output}: {len(missing)} bands not written yet (the first: plane {plane}, rows {y0}..{columns})"
        )


def fault_point(moment: str, path: Path) -> None:
    """A named write point of a band writer (``FCNX_KILL_AT``, see runtime/atomic.py)."""
    _fault_point(moment, path)
