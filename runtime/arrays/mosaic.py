"""Large synthetic inputs for tests and benchmarks: a mosaic of real 2D slices (the membrane
EM images), written tile by tile as a tiled BigTIFF or chunk by chunk as an OME-Zarr, so
a 65536 x 65536 image (or a 64-plane volume) is never whole in memory.

The slices tile the plane, mirrored on every other tile row and column, so neighbouring
tiles meet edge to edge (membranes continue across borders where the same slice meets its
mirror); which slice fills a tile cycles with its position and the plane. Any pixel is a
function of its coordinates, so every window, and every pyramid level (every 2**l-th
pixel), is computed on its own. Not used by ``fcnx predict``: a generator of inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, remove_entry, temp_folder
from .band_writer import fsync_tree, require

FORMATS = ("tiff", "ome-zarr")


class Mosaic:
    """The pixels of a mosaic of ``slices`` (2D uint8 arrays of one shape, or image files)."""

    def __init__(self, slices: Sequence[np.ndarray] | Sequence[Path | str]) -> None:
        if not slices:
            raise ValueError("a mosaic needs at least one slice")
        arrays = [self._load(s) for s in slices]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"mosaic slices must share one shape, got {sorted(shapes)}")
        self.stack = np.stack(arrays)  # (n, h, w): 24 membrane slices are 6 MiB
        self.count, self.tile_h, self.tile_w = self.stack.shape

    @staticmethod
    def _load(source: np.ndarray | Path | str) -> np.ndarray:
        if isinstance(source, np.ndarray):
            array = source
        else:
            import cv2

            loaded = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
            if loaded is None:
                raise ValueError(f"{source}: not an image OpenCV reads")
            array = loaded
        if array.dtype != np.uint8 or array.ndim != 2:
            raise ValueError(f"mosaic slices are 2D uint8, got {array.dtype} {array.shape}")
        return array

    def window(self, plane: int, y0: int, y1: int, x0: int, x1: int, step: int = 1) -> np.ndarray:
        """Rows y0..y1, columns x0..x1 (uint8) of ``plane``, of the level whose pixels are every
        ``step``-th pixel of the full mosaic."""
        rows = np.arange(y0, y1, dtype=np.int64) * step
        cols = np.arange(x0, x1, dtype=np.int64) * step
        tile_y, in_y = np.divmod(rows, self.tile_h)
        tile_x, in_x = np.divmod(cols, self.tile_w)
        in_y = np.where(tile_y % 2 == 1, self.tile_h - 1 - in_y, in_y)  # mirrored tile rows
        in_x = np.where(tile_x % 2 == 1, self.tile_w - 1 - in_x, in_x)
        which = (plane + tile_y[:, None] * 7 + tile_x[None, :] * 3) % self.count
        return self.stack[which, in_y[:, None], in_x[None, :]]

    def tiles(self, planes: int, height: int, width: int, tile: int) -> Iterator[np.ndarray]:
        """Every plane's (tile, tile) tiles, row by row (edge tiles smaller): a tiled TIFF's order."""
        for plane in range(planes):
            for y0 in range(0, height, tile):
                for x0 in range(0, width, tile):
                    yield self.window(plane, y0, min(height, y0 + tile), x0, min(width, x0 + tile))


def write_mosaic(
    slices: Sequence[np.ndarray] | Sequence[Path | str],
    out: str | Path,
    size: tuple[int, int],
    format: str = "tiff",
    tile: int = 512,
    planes: int | None = None,
    levels: int = 1,
    zarr_format: int = 2,
) -> Path:
    """Write a ``size`` = (height, width) mosaic of ``slices`` to ``out``, atomically.

    ``format="tiff"``: a tiled (``tile`` x ``tile``), zlib-compressed BigTIFF, pages = planes
    (``levels`` > 1 adds SubIFD pyramid levels, each half the one above; 2D only). ``"ome-zarr"``: a
    Zarr group with an NGFF image (0.4 on Zarr v2, or 0.5 on ``zarr_format=3``), chunks
    (1, tile, tile), ``levels`` nearest-neighbour levels. ``planes``: None for a 2D image
    (Y, X), else a (Z, Y, X) volume of that many planes."""
    if format not in FORMATS:
        raise ValueError(f"mosaic format must be one of {FORMATS}, got {format!r}")
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"mosaic size is (height, width) >= 1, got {size}")
    if planes is not None and planes < 1:
        raise ValueError(f"planes must be None (a 2D image) or >= 1, got {planes}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
    mosaic = Mosaic(slices)
    out = Path(out)
    if format == "tiff":
        _write_tiff(mosaic, out, size, tile, planes, levels)
    else:
        _write_zarr(mosaic, out, size, tile, planes, levels, zarr_format)
    return out


def _write_tiff(
    mosaic: Mosaic, out: Path, size: tuple[int, int], tile: int, planes: int | None, levels: int
) -> None:
    tifffile = require("tifffile")
    if planes and levels > 1:
        raise ValueError("pyramid levels of a TIFF mosaic are for 2D images (tifffile's shaped series)")
    height, width = size
    count = planes or 1
    lead = () if planes is None else (planes,)
    options = {"dtype": np.uint8, "tile": (tile, tile), "compression": "zlib", "photometric": "minisblack"}
    with atomic_path(out, suffix=".tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        tif.write(
            mosaic.tiles(count, height, width, tile),
            shape=(*lead, height, width),
            subifds=levels - 1,
            metadata={"axes": "ZYX" if planes else "YX"},
            **options,
        )
        for level in range(1, levels):
            step = 2**level
            h, w = -(-height // step), -(-width // step)
            tiles = (
                mosaic.window(p, y, min(h, y + tile), x, min(w, x + tile), step)
                for p in range(count)
                for y in range(0, h, tile)
                for x in range(0, w, tile)
            )
            tif.write(tiles, shape=(*lead, h, w), subfiletype=1, **options)


def _write_zarr(
    mosaic: Mosaic,
    out: Path,
    size: tuple[int, int],
    tile: int,
    planes: int | None,
    levels: int,
    zarr_format: int,
) -> None:
    zarr = require("zarr")
    height, width = size
    count = planes or 1
    lead = () if planes is None else (planes,)
    axes = ([{"name": "z", "type": "space"}] if planes else []) + [
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    folder = temp_folder(out, suffix=".zarr")
    try:
        group = zarr.open_group(folder, mode="w", zarr_format=zarr_format)
        datasets = []
        for level in range(levels):
            step = 2**level
            h, w = -(-height // step), -(-width // step)
            extra = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2 else {}
            array = group.create_array(
                str(level),
                shape=(*lead, h, w),
                chunks=(*(1 for _ in lead), tile, tile),
                dtype="uint8",
                fill_value=0,
                **extra,
            )
            for p in range(count):  # chunk by chunk: memory is one tile, whatever the size
                index = (p,) if planes else ()
                for y in range(0, h, tile):
                    y1 = min(h, y + tile)
                    for x in range(0, w, tile):
                        x1 = min(w, x + tile)
                        array[(*index, slice(y, y1), slice(x, x1))] = mosaic.window(p, y, y1, x, x1, step)
            scale = [1.0] * len(lead) + [float(step)] * 2
            datasets.append(
                {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        version = "0.4" if zarr_format == 2 else "0.5"
        multiscales = [{"version": version, "name": out.name, "axes": axes, "datasets": datasets}]
        if zarr_format == 2:
            group.attrs.update({"multiscales": multiscales})
        else:
            multiscales[0].pop("version")
            group.attrs.update({"ome": {"version": version, "multiscales": multiscales}})
        fsync_tree(folder, folder)
        remove_entry(out)
        os.replace(folder, out)
    except BaseException:
        remove_entry(folder)
        raise
