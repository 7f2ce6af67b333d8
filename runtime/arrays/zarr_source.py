"""Zarr inputs (v2 and v3, sharded or not, OME-Zarr), read by windows through zarr, read-only.

The folder given is opened with ``zarr.open(path, mode="r")`` (nothing is ever written):

- an array: that array, axes from ``--axes`` or the defaults (source.py);
- an OME-Zarr image group (NGFF 0.4 ``multiscales`` in its attributes, or 0.5's under
  ``ome``; a ``bioformats2raw.layout`` group: its image ``0``): the ``datasets`` of
  ``multiscales[0]`` are the pyramid levels (``--level``), the axes its ``axes`` (names, or
  0.4's ``{"name", "type"}`` objects);
- any other group: its one array (at any depth), else an ArrayError listing its arrays.

zarr reads only the chunks (or shards) a window touches; a chunk that is not stored is the
array's fill value (Zarr's rule), a chunk whose bytes do not decode is an ArrayError
naming the chunk's key.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..names import shown
from .source import (
    ArrayError,
    ArrayInfo,
    ArraySource,
    as_window,
    axes_from_names,
    reason,
    require,
    resolve_axes,
    window_key,
)


def _ome(node: Any) -> dict[str, Any]:
    """A group's attributes, NGFF 0.5's (under ``ome``) or 0.4's (at the top)."""
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    return ome if isinstance(ome, dict) else attrs


def _ngff_axes(axes: Any) -> str | None:
    """NGFF ``multiscales`` axes (0.4: ``[{"name": "z", "type": "space"}, ...]``; 0.3: ``["z", ...]``)."""
    if not isinstance(axes, list) or not axes:
        return None
    if all(isinstance(a, dict) for a in axes):
        return axes_from_names([a.get("name", "") for a in axes], [a.get("type", "") for a in axes])
    if all(isinstance(a, str) for a in axes):
        return axes_from_names(axes)
    return None


class ZarrSource(ArraySource):
    """A Zarr array, or the image of a Zarr group (one level of an OME-Zarr pyramid)."""

    def __init__(self, spec: str, axes: str | None = None, level: int = 0) -> None:
        zarr = require("zarr", spec, "a Zarr array")
        self.spec = spec
        self._name = shown(spec)
        try:
            node = zarr.open(spec, mode="r")
        except Exception as exc:
            raise ArrayError(f"{self._name}: not a Zarr array or group ({reason(exc)})") from None
        fmt, found, levels = "zarr", None, self._levels(zarr, node)
        if isinstance(levels, tuple):
            fmt, found, levels = "ome-zarr", levels[0], levels[1]
        shapes = tuple(tuple(int(n) for n in array.shape) for _, array in levels)
        if not 0 <= level < len(levels):
            which = (
                "it has one level (0)"
                if len(levels) == 1
                else "its levels are "
                + ", ".join(f"{i} ({'x'.join(map(str, s))})" for i, s in enumerate(shapes))
            )
            raise ArrayError(f"{self._name}: no pyramid level {level}: {which}")
        self._path, self._array = levels[level]
        try:
            dtype = np.dtype(self._array.dtype)
        except TypeError:
            dtype = np.dtype(object)
        if dtype.kind not in "biuf":
            raise ArrayError(f"{self._name}: {self._where()}data type {self._array.dtype} is not numeric")
        shape = shapes[level]
        self.info = ArrayInfo(
            spec=spec,
            format=fmt,
            axes=resolve_axes(spec, shape, axes, found),
            shape=shape,
            dtype=dtype.name,
            chunks=tuple(int(c) for c in self._array.chunks),
            levels=shapes,
            level=level,
        )
        shards = getattr(self._array, "shards", None)
        self._grid = tuple(int(c) for c in (shards or self._array.chunks))  # the stored objects' shape
        self._unit = "shard" if shards else "chunk"

    def _where(self) -> str:
        return f"array {self._path}: " if self._path else ""

    def _levels(self, zarr: Any, node: Any) -> Any:
        """[(path, array), ...] of a plain array or group, or (axes, levels) of an OME-Zarr image."""
        if isinstance(node, zarr.Array):
            return [("", node)]
        prefix = ""
        meta = _ome(node)
        if "multiscales" not in meta and "bioformats2raw.layout" in meta:
            try:
                node, prefix = node["0"], "0/"
            except KeyError:
                raise ArrayError(f"{self._name}: a bioformats2raw group without its image 0") from None
            meta = _ome(node)
        if "multiscales" in meta:
            try:
                multiscale = meta["multiscales"][0]
                paths = [str(d["path"]) for d in multiscale["datasets"]]
                levels = [(prefix + p, node[p]) for p in paths]
            except (KeyError, IndexError, TypeError) as exc:
                raise ArrayError(
                    f"{self._name}: OME-Zarr multiscales metadata unusable ({reason(exc)})"
                ) from None
            if not levels or not all(isinstance(a, zarr.Array) for _, a in levels):
                raise ArrayError(f"{self._name}: OME-Zarr multiscales datasets are not all arrays")
            return _ngff_axes(multiscale.get("axes")), levels
        arrays = sorted(
            (
                (prefix + name, member)
                for name, member in node.members(max_depth=None)
                if isinstance(member, zarr.Array)
            ),
            key=lambda item: item[0],
        )
        if len(arrays) == 1:
            return arrays
        if not arrays:
            raise ArrayError(f"{self._name}: a Zarr group with no arrays")
        names = ", ".join(name for name, _ in arrays[:20]) + (", ..." if len(arrays) > 20 else "")
        raise ArrayError(
            f"{self._name}: a Zarr group of {len(arrays)} arrays and no OME-Zarr multiscales: give one "
            f"array's folder ({names})"
        )

    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        key, order = window_key(self.info, plane, y0, y1, x0, x1)
        try:
            block = self._array[key]
        except Exception as exc:
            raise self._chunk_error(key, exc, plane, y0, y1) from None
        return as_window(np.asarray(block), self.info, order)

    def _stored(
        self, key: Sequence[int | slice]
    ) -> Iterator[tuple[tuple[int, ...], tuple[int | slice, ...]]]:
        """(grid coordinates, the key's part in it) of every stored chunk/shard ``key`` touches."""
        ranges = []
        for index, size, grid in zip(key, self.info.shape, self._grid):
            if isinstance(index, slice):
                start, stop, _ = index.indices(size)
                ranges.append(range(start // grid, math.ceil(stop / grid)) if stop > start else range(0))
            else:
                ranges.append(range(index // grid, index // grid + 1))
        for coords in itertools.product(*ranges):
            part: list[int | slice] = []
            for index, size, grid, c in zip(key, self.info.shape, self._grid, coords):
                if isinstance(index, slice):
                    start, stop, _ = index.indices(size)
                    part.append(slice(max(start, c * grid), min(stop, (c + 1) * grid)))
                else:
                    part.append(index)
            yield coords, tuple(part)

    def _chunk_error(
        self, key: tuple[int | slice, ...], exc: Exception, plane: int, y0: int, y1: int
    ) -> ArrayError:
        """The ArrayError of a failed read, naming the first chunk (shard) that fails alone."""
        label = self.info.plane_label(plane)
        where = f"{label + ', ' if label else ''}rows {y0}-{y1}"
        for coords, part in self._stored(key):
            try:
                self._array[part]
            except Exception as error:
                name = self._array.metadata.encode_chunk_key(coords)
                prefix = f"{self._path}/" if self._path else ""
                return ArrayError(
                    f"{self._name}: {self._unit} {prefix}{name} ({where}): cannot decode ({reason(error)})"
                )
        return ArrayError(f"{self._name}: {self._where()}{where}: cannot read ({reason(exc)})")

    def close(self) -> None:
        self._array = None
