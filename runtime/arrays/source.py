"""The one notion of an array input: what it is (``ArrayInfo``) and how it is read (``ArraySource``).

``readers.open_array(spec)`` opens one with the reader its path calls for (tiff.py,
zarr_source.py, hdf5.py, which build on this module), ``describe(info)`` gives the lines
``fcnx info`` prints. The readers' libraries (tifffile, zarr, h5py: the ``volumes`` extra)
are imported only when an array is opened; a missing one is a ``MissingExtra`` naming the pip line.

Axes: one letter per dimension from ``TZCYXSQIR`` (T time, Z depth, C channel, Y, X, S samples
of an RGB pixel, Q/I/R other plane axes), each once, Y and X always. They come from the file's
metadata (tifffile's series axes, OME-Zarr ``multiscales`` axes, an HDF5 ``axes`` attribute);
``--axes`` overrides them; with neither they default by the number of dimensions (OME order):
2 ``YX``, 3 ``ZYX`` (``YXS`` when the last is 3 or 4 long and the first two are not),
4 ``CZYX``, 5 ``TCZYX``; more than 5 need ``--axes``.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..names import shown

CHANNEL_AXES = "CS"  # C: a channel axis (OME), S: samples per pixel (RGB TIFF)
PLANE_AXES = "TZCQIR"  # axes that count planes (C too when it is not the channel axis fed to the model)
AXIS_LETTERS = "TZCYXSQIR"  # every letter an axes string may hold, each at most once
FORMATS = ("tiff", "ome-tiff", "bigtiff", "zarr", "ome-zarr", "hdf5")
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}  # no metadata, no --axes (OME order)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")  # .ome.tif(f) ends in one of these
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")  # a folder holding one is a Zarr array or group
LARGE_PLANE = 4096 * 4096  # a tiled or pyramid TIFF plane over this many pixels is read by windows
VOLUMES = 'pip install "fcnx[volumes]"'
_HDF5_SPEC = re.compile(r"(.+\.(?:h5|hdf5|he5))(?::(/.*))?", re.IGNORECASE | re.DOTALL)


class ArrayError(ValueError):
    """An array input that cannot be read: one line naming the file (and the page, chunk
    or dataset) and what was wrong."""


@dataclass(frozen=True)
class ArrayInfo:
    spec: str  # as given: a path, or FILE.h5:/dataset
    format: str  # one of FORMATS: "tiff", "ome-tiff", "bigtiff", "zarr", "ome-zarr", "hdf5"
    axes: str  # one letter per dimension of the level read, e.g. "ZYX", "TCZYX", "YXS"
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "uint8", "uint16"
    chunks: tuple[int, ...] | None  # the stored chunk (tile/strip) shape, None when unknown
    levels: tuple[tuple[int, ...], ...]  # every pyramid level's shape, level 0 first
    level: int = 0  # the level read

    @property
    def height(self) -> int:
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        return self.shape[self.axes.index("X")]

    @property
    def channel_axis(self) -> str | None:
        """The axis fed to the model's channels: S (samples), else C when its length is 3 or
        4 (RGB/RGBA) or 1; None when there is none (grey)."""
        if "S" in self.axes:
            return "S"
        if "C" in self.axes and self.shape[self.axes.index("C")] in (1, 3, 4):
            return "C"
        return None

    @property
    def channels(self) -> int:
        axis = self.channel_axis
        return 1 if axis is None else self.shape[self.axes.index(axis)]

    @property
    def plane_axes(self) -> str:
        """The axes that count planes, outermost first (every axis but Y, X and the channel axis)."""
        return "".join(a for a in self.axes if a not in ("Y", "X", self.channel_axis))

    @property
    def planes(self) -> int:
        return math.prod(self.shape[self.axes.index(a)] for a in self.plane_axes)

    def plane_index(self, plane: int) -> dict[str, int]:
        """Plane number -> its index on each plane axis (row-major: the last axis fastest)."""
        if not 0 <= plane < self.planes:
            raise IndexError(f"{self.spec}: plane {plane} of {self.planes}")
        index = {}
        for axis in reversed(self.plane_axes):
            n = self.shape[self.axes.index(axis)]
            plane, index[axis] = divmod(plane, n)
        return dict(reversed(list(index.items())))

    def plane_label(self, plane: int) -> str:
        """``z=3`` / ``t=0,z=3`` (empty for a single 2D image): names a plane in messages."""
        return ",".join(f"{a.lower()}={i}" for a, i in self.plane_index(plane).items())


class ArraySource(ABC):
    """An array input opened read-only. ``read`` returns a window of one plane as
    (rows, cols, channels) in the array's own dtype, reading from disk only the chunks
    (tiles, strips, pages) the window touches, where the format allows."""

    info: ArrayInfo

    @abstractmethod
    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray: ...

    def read_plane(self, plane: int) -> np.ndarray:
        return self.read(plane, 0, self.info.height, 0, self.info.width)

    def close(self) -> None:  # noqa: B027 (most readers hold a file handle; some hold nothing)
        pass

    def __enter__(self) -> ArraySource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def reason(exc: BaseException) -> str:
    """An exception as a short one-line reason: ``DeflateError: bad data``."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def require(module: str, spec: str, what: str) -> Any:
    """Import one of the ``volumes`` extra's libraries, or say (MissingExtra) how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        from ..backends.base import MissingExtra

        raise MissingExtra(
            f"{shown(spec)}: reading {what} needs {module}, which is not installed: {VOLUMES}"
        ) from None


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def check_axes(spec: str, axes: str, shape: Sequence[int], origin: str = "--axes") -> str:
    """``axes`` upper-cased when it names each dimension of ``shape`` once with a letter of
    ``AXIS_LETTERS``, Y and X among them; else an ArrayError naming the input and its shape."""
    letters = axes.strip().upper()
    where = f"{shown(spec)} (shape {_dims(shape)})"
    if len(letters) != len(shape):
        raise ArrayError(f"{where}: {origin} {axes!r} has {len(letters)} letters for {len(shape)} dimensions")
    bad = sorted(set(letters) - set(AXIS_LETTERS))
    if bad:
        raise ArrayError(f"{where}: {origin} {axes!r}: {', '.join(bad)} is no axis (letters: {AXIS_LETTERS})")
    twice = sorted({a for a in letters if letters.count(a) > 1})
    if twice:
        raise ArrayError(f"{where}: {origin} {axes!r} names {', '.join(twice)} more than once")
    missing = [a for a in "YX" if a not in letters]
    if missing:
        raise ArrayError(f"{where}: {origin} {axes!r} has no {' and '.join(missing)} (a plane needs Y and X)")
    return letters


def default_axes(spec: str, shape: Sequence[int]) -> str:
    """The axes of an array whose metadata names none (see the module's doc)."""
    n = len(shape)
    if n == 3 and shape[-1] in (3, 4) and shape[0] > 4 and shape[1] > 4:
        return "YXS"  # an RGB(A) image: a stack of 3-pixel-wide planes is no image
    if n in DEFAULT_AXES:
        return DEFAULT_AXES[n]
    raise ArrayError(
        f"{shown(spec)} (shape {_dims(shape)}): {n} dimensions and no axes in its metadata: "
        f"give them with --axes (one letter each of {AXIS_LETTERS})"
    )


def resolve_axes(spec: str, shape: Sequence[int], given: str | None, found: str | None) -> str:
    """The axes of an array: ``given`` (--axes) over ``found`` (its metadata) over the default."""
    if given:
        return check_axes(spec, given, shape)
    if found:
        return check_axes(spec, found, shape, "the axes in its metadata (override with --axes)")
    return check_axes(spec, default_axes(spec, shape), shape, "the default axes (give --axes)")


# axis names (OME-Zarr ``multiscales`` axes, HDF5 attributes) -> letters
_NAME_LETTERS = {
    "t": "T", "time": "T", "z": "Z", "depth": "Z", "c": "C", "ch": "C", "channel": "C", "channels": "C",
    "y": "Y", "x": "X", "s": "S", "sample": "S", "samples": "S", "rgb": "S", "q": "Q", "i": "I", "r": "R",
}  # fmt: skip
_TYPE_LETTERS = {"time": "T", "channel": "C"}


def axes_from_names(names: Sequence[Any], types: Sequence[Any] | None = None) -> str | None:
    """Axis names (``["t", "c", "z", "y", "x"]``, or NGFF types) as letters; a name with no
    letter of its own (``"angle"``) gets a free one of Q, I, R; None when they run out."""
    letters: list[str | None] = []
    for i, name in enumerate(names):
        letter = _NAME_LETTERS.get(str(name).strip().lower())
        if letter is None and types is not None and i < len(types):
            letter = _TYPE_LETTERS.get(str(types[i]).strip().lower())
        letters.append(letter if letter not in letters else None)
    spare = [a for a in "QIR" if a not in letters]
    out = []
    for letter in letters:
        if letter is None:
            if not spare:
                return None
            letter = spare.pop(0)
        out.append(letter)
    return "".join(out)


def axes_from_attribute(value: Any, ndim: int) -> str | None:
    """An ``axes`` attribute as letters: ``"zyx"``, ``"z,y,x"``, ``["z", "y", "x"]``, ilastik's
    ``axistags`` JSON (``{"axes": [{"key": "z"}, ...]}``); None when it is none of these or does
    not name ``ndim`` axes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    names: list[Any]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                names = [a.get("key", "") for a in json.loads(text).get("axes", [])]
            except (ValueError, AttributeError):
                return None
        elif re.fullmatch(r"[A-Za-z]+", text) and len(text) == ndim:
            names = list(text)
        else:
            names = [n for n in re.split(r"[\s,;]+", text) if n]
    elif isinstance(value, (list, tuple)):
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in value]
    else:
        return None
    if len(names) != ndim:
        return None
    return axes_from_names(names)


def window_key(
    info: ArrayInfo, plane: int, y0: int, y1: int, x0: int, x1: int
) -> tuple[tuple[int | slice, ...], tuple[int, ...]]:
    """The index of a window of a plane (ints on the plane axes, slices on Y, X and the
    channel axis), and the transpose that puts what it gives in (Y, X, channel) order."""
    h, w = info.height, info.width
    if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
        raise ValueError(
            f"{shown(info.spec)}: window rows {y0}:{y1}, columns {x0}:{x1} outside its {w}x{h} plane"
        )
    at = info.plane_index(plane)
    channel = info.channel_axis
    key: list[int | slice] = []
    kept: list[str] = []
    for axis in info.axes:
        if axis == "Y":
            key.append(slice(y0, y1))
        elif axis == "X":
            key.append(slice(x0, x1))
        elif axis == channel:
            key.append(slice(None))
        else:
            key.append(at[axis])
            continue
        kept.append(axis)
    order = tuple(kept.index(a) for a in ("Y", "X", channel) if a is not None)
    return tuple(key), order


def as_window(block: np.ndarray, info: ArrayInfo, order: tuple[int, ...]) -> np.ndarray:
    """What ``window_key``'s index gave, as (rows, cols, channels) in native byte order."""
    block = np.asarray(block).transpose(order)
    if info.channel_axis is None:
        block = block[..., None]
    if not block.dtype.isnative:
        block = block.astype(block.dtype.newbyteorder("="))
    return np.ascontiguousarray(block)


def split_hdf5_spec(spec: str) -> tuple[str, str | None] | None:
    """``FILE.h5:/path`` -> (FILE.h5, /path); ``FILE.h5`` -> (FILE.h5, None); else None."""
    match = _HDF5_SPEC.fullmatch(spec)
    return (match[1], match[2]) if match else None


def is_n5(path: Path) -> bool:
    """An N5 container: a ``.n5`` folder, or one with N5's ``attributes.json``, and no Zarr metadata."""
    if any((path / marker).is_file() for marker in ZARR_MARKERS):
        return False
    return path.name.lower().endswith(".n5") or (path / "attributes.json").is_file()


def describe(info: ArrayInfo) -> list[str]:
    """What ``fcnx info`` says about an array input, one ``key: value`` line each."""
    lines = [
        f"format: {info.format}",
        f"shape: {_dims(info.shape)} ({info.axes})",
        f"dtype: {info.dtype}",
        f"chunks: {_dims(info.chunks) if info.chunks else 'none (contiguous)'}",
    ]
    if len(info.levels) > 1:
        shapes = ", ".join(f"{i}: {_dims(s)}" for i, s in enumerate(info.levels))
        lines.append(f"pyramid levels: {len(info.levels)} ({shapes}); reading level {info.level}")
    else:
        lines.append("pyramid levels: 1")
    counts = " x ".join(f"{a}={info.shape[info.axes.index(a)]}" for a in info.plane_axes)
    channels = f"{info.channels} channel" + ("s" if info.channels != 1 else "")
    lines.append(
        f"planes: {info.planes}{f' ({counts})' if counts else ''} of {info.width}x{info.height} px, {channels}"
    )
    return lines
