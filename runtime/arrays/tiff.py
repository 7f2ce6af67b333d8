"""Multi-page, Big and OME-TIFF inputs, read by windows through tifffile.

Series 0 of the file is the array: its axes are tifffile's (OME-XML, ImageJ or tifffile
metadata give T/Z/C; a plain multi-page TIFF is ``IYX``, a tifffile stack without axes
``QYX``; letters outside ``TZCYXSQIR`` become a free one of Q, I, R) and its pyramid levels
are ``series.levels`` (``--level``). A window is read in one of three ways, the first that
applies:

- uncompressed data laid out contiguously (ImageJ hyperstacks, tifffile stacks): a
  read-only ``numpy.memmap`` of the series, so only the window's rows are read;
- otherwise ``zarr.open(series.aszarr(level=N), mode="r")``: tifffile's Zarr store over
  the pages, whose chunks are the tiles or strips, so only those the window touches are
  read and decoded;
- when that store cannot be made (or zarr is not installed), the plane's pages, decoded
  whole (the last plane's pages are kept, so the bands of one plane decode it once).

A damaged file fails with one line naming it and the page: tifffile's warnings while it
opens the file (a page chain that breaks, a series it cannot shape) and any error while
a page is decoded.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..names import shown
from .source import (
    AXIS_LETTERS,
    LARGE_PLANE,
    ArrayError,
    ArrayInfo,
    ArraySource,
    as_window,
    reason,
    require,
    resolve_axes,
    window_key,
)

# tifffile warnings that mean pages are missing or cannot be shaped: the series it would
# give is not the file's whole array (tifffile zeroes or drops what it cannot read).
DAMAGE = (
    "invalid page offset",  # the page chain breaks: the pages after it are lost
    "invalid next page",
    "failed to reshape",  # a series its metadata describes cannot be made of the pages found
    "is missing",  # OME / MMStack pages or files missing (tifffile zeroes them)
    "index out of range",
    "invalid tiffdata index",
    "ome series failed to read",
    "incompletely written",
    "corrupted file",
    "corrupted tag list",
    "bytes, got",  # a short read: the file ends early
)
SPARE_AXES = "QIR"  # letters for tifffile axes that fcnx has no letter for


@contextmanager
def tifffile_log() -> Iterator[list[logging.LogRecord]]:
    """Collect what tifffile logs (warnings and errors) in this thread while the block runs.

    While the handler is attached, tifffile's records are not printed by logging's
    last-resort handler: the caller turns the ones that matter into an ArrayError."""
    records: list[logging.LogRecord] = []
    thread = threading.get_ident()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                records.append(record)

    handler = Collect(logging.WARNING)
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


def tiff_axes(axes: str) -> str:
    """tifffile's axes with the letters fcnx has no use for (e.g. A angle, H lifetime, E
    lambda) renamed to a free one of Q, I, R (they are plane axes)."""
    spare = [a for a in SPARE_AXES if a not in axes]
    out = []
    for axis in axes:
        if axis in AXIS_LETTERS:
            out.append(axis)
        elif spare:
            out.append(spare.pop(0))
        else:
            out.append(axis)  # left as is: the axes check names it
    return "".join(out)


def tiff_is_array(path: Path) -> bool:
    """Whether a TIFF is a stack, a volume or a huge plane (read by ``TiffSource``) rather than
    one 2D image, from its header only: BigTIFF, more than one page (IFD), a volumetric page,
    a series of several planes in one IFD (ImageJ, tifffile), or a tiled or pyramid plane over
    ``LARGE_PLANE`` pixels. Needs tifffile (the caller falls back to Pillow without it)."""
    import tifffile

    with tifffile_log() as records, tifffile.TiffFile(path) as tif:
        if tif.is_bigtiff or _damaged(records):  # damaged: the array reader names the page
            return True
        first = tif.pages.first
        try:
            tif.pages[1]
            return True
        except IndexError:
            pass
        if first.imagedepth > 1:
            return True
        if (first.is_tiled or first.subifds) and first.imagewidth * first.imagelength > LARGE_PLANE:
            return True
        series = tif.series
        return _damaged(records) or (bool(series) and math.prod(series[0].shape) > first.size)


def _message(record: logging.LogRecord) -> str:
    """A tifffile log message without its ``<tifffile.X @8>`` prefix, on one line."""
    text = record.getMessage()
    text = text.split("> ", 1)[-1] if text.startswith("<") else text
    return " ".join(text.split())


def _damaged(records: list[logging.LogRecord]) -> bool:
    return any(d in _message(r).lower() for r in records for d in DAMAGE)


def _levels_text(levels: tuple[tuple[int, ...], ...]) -> str:
    return ", ".join(f"{i} ({'x'.join(map(str, shape))})" for i, shape in enumerate(levels))


class TiffSource(ArraySource):
    """Series 0 of a TIFF (one pyramid level of it), read by windows."""

    def __init__(self, spec: str, axes: str | None = None, level: int = 0) -> None:
        tifffile = require("tifffile", spec, "a TIFF stack")
        self.spec = spec
        self._name = shown(spec)
        self._lock = threading.Lock()
        self._memmap: np.ndarray | None = None
        self._zarr: Any = None
        self._pages: dict[int, np.ndarray] = {}  # the page fallback's decoded pages of one plane
        self._pages_plane = -1
        try:
            with tifffile_log() as records:
                self._tif = tifffile.TiffFile(spec)
        except FileNotFoundError:
            raise ArrayError(f"{self._name}: no such file") from None
        except Exception as exc:
            raise ArrayError(f"{self._name}: not a TIFF tifffile reads ({reason(exc)})") from None
        try:
            self._open(records, axes, level)
        except BaseException:
            self._tif.close()
            raise

    def _open(self, records: list[logging.LogRecord], axes: str | None, level: int) -> None:
        tif = self._tif
        try:
            with tifffile_log() as more:
                series = tif.series[0] if tif.series else None
                levels = series.levels if series is not None else []
        except Exception as exc:
            raise ArrayError(f"{self._name}: tifffile cannot shape its pages ({reason(exc)})") from None
        self._check_damage([*records, *more])
        if series is None or not levels:
            raise ArrayError(f"{self._name}: a TIFF with no image")
        shapes = tuple(tuple(int(n) for n in s.shape) for s in levels)
        if not 0 <= level < len(levels):
            which = "it has one level (0)" if len(levels) == 1 else f"its levels are {_levels_text(shapes)}"
            raise ArrayError(f"{self._name}: no pyramid level {level}: {which}")
        self._series = levels[level]
        self._level = level
        shape = shapes[level]
        found = tiff_axes(self._series.axes)
        if tif.is_ome:
            fmt = "ome-tiff"
        elif tif.is_bigtiff:
            fmt = "bigtiff"
        else:
            fmt = "tiff"
        self._open_zarr(series, level, shape)
        self._open_memmap(shape)
        self.info = ArrayInfo(
            spec=self.spec,
            format=fmt,
            axes=resolve_axes(self.spec, shape, axes, found),
            shape=shape,
            dtype=np.dtype(self._series.dtype).name,
            chunks=tuple(int(c) for c in self._zarr.chunks) if self._zarr is not None else None,
            levels=shapes,
            level=level,
        )
        # the page dimensions: the trailing ones that one page holds (Y, X, S...), the rest
        # count pages (row-major, like the series' pages)
        size, inner = 1, len(shape)
        while inner > 0 and size < self._series.keyframe.size:
            inner -= 1
            size *= shape[inner]
        self._outer = inner

    def _check_damage(self, records: list[logging.LogRecord]) -> None:
        """An ArrayError when tifffile said pages are missing or cannot be shaped."""
        for record in records:
            text = _message(record)
            if "invalid page offset" in text.lower() or "invalid next page" in text.lower():
                raise ArrayError(
                    f"{self._name}: page {len(self._tif.pages)}: cannot read its header ({text[:200]}): "
                    "the file is truncated or damaged"
                )
        for record in records:
            text = _message(record)
            if any(d in text.lower() for d in DAMAGE):
                raise ArrayError(f"{self._name}: truncated or damaged ({text[:200]})")

    def _open_zarr(self, series: Any, level: int, shape: tuple[int, ...]) -> None:
        """tifffile's Zarr store over the level's tiles/strips; None (the page fallback)
        when zarr is missing or the store cannot be made for this layout."""
        try:
            zarr = importlib.import_module("zarr")
        except ModuleNotFoundError:
            return
        try:
            array = zarr.open(series.aszarr(level=level), mode="r")
        except Exception:
            return
        if isinstance(array, zarr.Array) and tuple(array.shape) == shape:
            self._zarr = array

    def _open_memmap(self, shape: tuple[int, ...]) -> None:
        """A read-only memmap of the level when its data is uncompressed and contiguous."""
        series, keyframe = self._series, self._series.keyframe
        offset = series.dataoffset
        if offset is None or not keyframe.is_memmappable:
            return
        dtype = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
        nbytes = math.prod(shape) * dtype.itemsize
        end = os.path.getsize(self.spec)
        if offset + nbytes > end:
            page_bytes = keyframe.size * dtype.itemsize
            page = max(end - offset, 0) // page_bytes
            raise ArrayError(
                f"{self._name}: {self._page_name(page)}: its data ends past the end of the file "
                f"({end} bytes): the file is truncated"
            )
        self._memmap = np.memmap(self.spec, dtype=dtype, mode="r", offset=offset, shape=shape)

    def _page_name(self, k: int) -> str:
        if self._level:
            return f"page {k} of level {self._level}"
        try:
            index = self._series.pages[k].index
        except Exception:
            index = k
        return f"page {index if isinstance(index, int) else k}"

    def _page_of(self, key: tuple[Any, ...]) -> int:
        """The series page that holds the index ``key`` (ints on the page-counting dims)."""
        outer = self.info.shape[: self._outer]
        return int(np.ravel_multi_index(tuple(int(i) for i in key[: self._outer]), outer)) if outer else 0

    def _page_keys(self, key: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], tuple[int, ...]]]:
        """``key`` split by page: (the key of one page's part, its position in the result)
        for every page the key touches (a channel axis C stored as pages touches several)."""
        ranges = [
            range(self.info.shape[d]) if isinstance(key[d], slice) else [key[d]] for d in range(self._outer)
        ]
        sliced = [d for d in range(self._outer) if isinstance(key[d], slice)]
        for combo in itertools.product(*ranges):
            yield (*combo, *key[self._outer :]), tuple(combo[d] for d in sliced)

    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        key, order = window_key(self.info, plane, y0, y1, x0, x1)
        with self._lock:
            if self._memmap is not None:
                block = np.array(self._memmap[key])
            elif self._zarr is not None:
                block = self._read_zarr(key, plane)
            else:
                block = self._read_pages(key, plane)
        return as_window(block, self.info, order)

    def _read_zarr(self, key: tuple[Any, ...], plane: int) -> np.ndarray:
        try:
            return np.asarray(self._zarr[key])
        except Exception as exc:
            first = exc
        for part, _ in self._page_keys(key):  # which page fails
            try:
                self._zarr[part]
            except Exception as exc:
                raise ArrayError(
                    f"{self._name}: {self._page_name(self._page_of(part))}: cannot decode ({reason(exc)})"
                ) from None
        raise ArrayError(f"{self._name}: {self.info.plane_label(plane)}: cannot decode ({reason(first)})")

    def _read_pages(self, key: tuple[Any, ...], plane: int) -> np.ndarray:
        """The window from the plane's pages decoded whole (kept until another plane is read)."""
        if plane != self._pages_plane:
            self._pages, self._pages_plane = {}, plane
        inner_shape = self.info.shape[self._outer :]
        out: np.ndarray | None = None
        for part, at in self._page_keys(key):
            k = self._page_of(part)
            if k not in self._pages:
                self._pages[k] = self._decode_page(k, inner_shape)
            window = self._pages[k][part[self._outer :]]
            if out is None:
                sliced = [self.info.shape[d] for d in range(self._outer) if isinstance(key[d], slice)]
                out = np.empty((*sliced, *window.shape), window.dtype)
            out[at] = window
        assert out is not None
        return out

    def _decode_page(self, k: int, inner_shape: tuple[int, ...]) -> np.ndarray:
        try:
            page = self._series.pages[k]
        except IndexError:
            raise ArrayError(f"{self._name}: {self._page_name(k)}: not in the file") from None
        if page is None:  # an OME page the file lacks: tifffile's (and OME's) fill is zero
            return np.zeros(inner_shape, self._series.dtype)
        try:
            return np.asarray(page.asarray()).reshape(inner_shape)
        except Exception as exc:
            raise ArrayError(f"{self._name}: {self._page_name(k)}: cannot decode ({reason(exc)})") from None

    def close(self) -> None:
        self._memmap = None
        self._zarr = None
        self._pages = {}
        self._tif.close()
