"""Which reader opens an array input: ``open_array(spec)`` (a TIFF file, a Zarr folder, an
HDF5 ``FILE.h5[:/dataset]``; an N5 folder is refused) and ``is_array_input(path)``, whether
an input found in a folder is an array (a TIFF from its header only). The readers and their
libraries (the ``volumes`` extra) are imported only when an array is opened."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..names import shown
from .source import (
    HDF5_SUFFIXES,
    TIFF_SUFFIXES,
    VOLUMES,
    ZARR_MARKERS,
    ArrayError,
    ArraySource,
    is_n5,
    split_hdf5_spec,
)


def open_array(spec: str | Path, axes: str | None = None, level: int = 0) -> ArraySource:
    """Open an array input read-only: a TIFF (``.tif``, ``.tiff``, ``.btf``, ``.tf8``, ``.ome.tif``),
    a Zarr folder (v2, v3, OME-Zarr), an HDF5 dataset (``FILE.h5[:/dataset]``). ``axes``
    overrides the axes the file gives (``"ZYX"``), ``level`` is the pyramid level read. An N5
    folder is refused: zarr 3 does not read N5."""
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        if is_n5(path):
            raise ArrayError(
                f"{shown(spec)}: an N5 container, which fcnx cannot read (zarr 3 has no N5 support): "
                "convert it to Zarr (e.g. with tensorstore, or zarr 2's N5Store) and give the .zarr"
            )
        from .zarr_source import ZarrSource

        return ZarrSource(spec, axes, level)
    hdf5 = split_hdf5_spec(spec)
    if hdf5 is not None:
        from .hdf5 import Hdf5Source

        return Hdf5Source(spec, axes, level)
    if path.name.lower().endswith(TIFF_SUFFIXES):
        from .tiff import TiffSource

        return TiffSource(spec, axes, level)
    if not path.exists():
        raise ArrayError(f"{shown(spec)}: no such file or folder")
    raise ArrayError(f"{shown(spec)}: not an array input (a TIFF, a Zarr folder, an HDF5 FILE.h5[:/dataset])")


def is_array_input(path: Path) -> bool:
    """Whether an input is an array (read by ``open_array``) rather than one 2D image file: a
    Zarr or N5 folder, an HDF5 file, a TIFF that is not one small 2D image (see
    ``tiff.tiff_is_array``; only its header is read). Without tifffile, a TIFF of several
    pages (Pillow counts them) or a BigTIFF is a ``MissingExtra``: it is never read as its
    first page alone."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return (
            name.endswith((".zarr", ".n5")) or any((path / m).is_file() for m in ZARR_MARKERS) or is_n5(path)
        )
    if name.endswith(HDF5_SUFFIXES):
        return True
    if not name.endswith(TIFF_SUFFIXES):
        return False
    try:
        importlib.import_module("tifffile")
    except ModuleNotFoundError:
        return _pillow_says_stack(path)
    from .tiff import tiff_is_array

    return tiff_is_array(path)


def _pillow_says_stack(path: Path) -> bool:
    """No tifffile: a BigTIFF or a TIFF of several pages is a MissingExtra, else False."""
    from PIL import Image

    from ..backends.base import MissingExtra

    with open(path, "rb") as f:
        head = f.read(4)
    if head in (b"II\x2b\x00", b"MM\x00\x2b"):
        raise MissingExtra(
            f"{shown(path)}: a BigTIFF, which needs tifffile, which is not installed: {VOLUMES}"
        )
    with Image.open(path) as image:
        frames = int(getattr(image, "n_frames", 1))
    if frames > 1:
        raise MissingExtra(
            f"{shown(path)}: a TIFF of {frames} pages (a stack), which needs tifffile, which is not "
            f"installed: {VOLUMES}"
        )
    return False
