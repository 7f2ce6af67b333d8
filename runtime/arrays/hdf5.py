"""HDF5 inputs (``FILE.h5:/path/to/dataset``; also ``.hdf5``, ``.he5``), read by windows through h5py.

With no ``:/path`` the file's one image dataset is read: a numeric dataset of 2 or more
dimensions (several: an ArrayError listing them, give one). h5py reads the hyperslab of a
window only (the chunks it touches, for a chunked dataset). The file is opened read-only.

Axes: ``--axes``, else the dataset's ``axes`` attribute (``"zyx"``, ``["z", "y", "x"]``) or
ilastik's ``axistags``, else its dimension scale labels (``dataset.dims[i].label``), else the
defaults by the number of dimensions (source.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..names import shown
from .source import (
    ArrayError,
    ArrayInfo,
    ArraySource,
    as_window,
    axes_from_attribute,
    axes_from_names,
    reason,
    require,
    resolve_axes,
    split_hdf5_spec,
    window_key,
)

AXES_ATTRIBUTES = ("axes", "axistags", "DIMENSION_LABELS", "dimension_labels")


def is_image_dataset(h5py: Any, node: Any) -> bool:
    """A dataset fcnx can read as an image array: numeric, 2 or more dimensions."""
    return isinstance(node, h5py.Dataset) and node.ndim >= 2 and node.dtype.kind in "biuf"


def image_datasets(h5py: Any, file: Any) -> list[str]:
    """The paths of the file's image datasets, sorted (links to one dataset count once)."""
    found: list[str] = []
    file.visititems(lambda name, node: found.append("/" + name) if is_image_dataset(h5py, node) else None)
    return sorted(found)


def dataset_axes(dataset: Any) -> str | None:
    """The axes a dataset's attributes or dimension labels give, if any."""
    for name in AXES_ATTRIBUTES:
        if name in dataset.attrs:
            found = axes_from_attribute(dataset.attrs[name], dataset.ndim)
            if found:
                return found
    try:
        labels = [dim.label for dim in dataset.dims]
    except Exception:
        return None
    return axes_from_names(labels) if labels and all(labels) else None


class Hdf5Source(ArraySource):
    """One dataset of an HDF5 file, read by windows."""

    def __init__(self, spec: str, axes: str | None = None, level: int = 0) -> None:
        h5py = require("h5py", spec, "an HDF5 dataset")
        parts = split_hdf5_spec(spec)
        if parts is None:
            raise ArrayError(f"{shown(spec)}: not an HDF5 FILE.h5[:/dataset]")
        file_name, inner = parts
        self.spec = spec
        self._name = shown(file_name)
        try:
            self._file = h5py.File(file_name, "r")
        except FileNotFoundError:
            raise ArrayError(f"{self._name}: no such file") from None
        except Exception as exc:
            raise ArrayError(f"{self._name}: not an HDF5 file h5py reads ({reason(exc)})") from None
        try:
            self._open(h5py, inner, axes, level)
        except BaseException:
            self._file.close()
            raise

    def _open(self, h5py: Any, inner: str | None, axes: str | None, level: int) -> None:
        file = self._file
        if inner is None:
            found = image_datasets(h5py, file)
            if not found:
                raise ArrayError(
                    f"{self._name}: no image dataset (numeric, 2 or more dimensions) in this file"
                )
            if len(found) > 1:
                raise ArrayError(
                    f"{self._name}: {len(found)} image datasets ({', '.join(found[:20])}"
                    f"{', ...' if len(found) > 20 else ''}): give one, e.g. {self._name}:{found[0]}"
                )
            inner = found[0]
        node = file.get(inner)
        if node is None:
            found = image_datasets(h5py, file)
            listed = ", ".join(found[:20]) + (", ..." if len(found) > 20 else "") if found else "none"
            raise ArrayError(f"{self._name}: no dataset {shown(inner)} (datasets: {listed})")
        where = f"{self._name}:{shown(inner)}"
        if not isinstance(node, h5py.Dataset):
            raise ArrayError(f"{where}: a group, not a dataset")
        if not is_image_dataset(h5py, node):
            raise ArrayError(f"{where}: a {node.dtype} dataset of shape {node.shape} is not an image array")
        if level != 0:
            raise ArrayError(f"{where}: no pyramid level {level}: it has one level (0)")
        self._dataset = node
        self._where = where
        shape = tuple(int(n) for n in node.shape)
        self.info = ArrayInfo(
            spec=self.spec,
            format="hdf5",
            axes=resolve_axes(self.spec, shape, axes, dataset_axes(node)),
            shape=shape,
            dtype=np.dtype(node.dtype).name,
            chunks=tuple(int(c) for c in node.chunks) if node.chunks else None,
            levels=(shape,),
            level=0,
        )

    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        key, order = window_key(self.info, plane, y0, y1, x0, x1)
        try:
            block = self._dataset[key]
        except Exception as exc:
            label = self.info.plane_label(plane)
            raise ArrayError(
                f"{self._where}: {label + ', ' if label else ''}rows {y0}-{y1}: cannot read ({reason(exc)})"
            ) from None
        return as_window(np.asarray(block), self.info, order)

    def close(self) -> None:
        self._file.close()
