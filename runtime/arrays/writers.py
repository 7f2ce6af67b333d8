"""Where the masks of an array input go, and which writer writes them.

``--output-format tiff``: ``TiffStackWriter`` (tiff_stack.py), one multi-page TIFF beside
the input's name; ``zarr``: ``OmeZarrLabelWriter`` (ome_zarr.py), an OME-Zarr label image;
``png``: ``PngPlanesWriter`` (png_planes.py), one palette PNG per plane. All are
``MaskWriter``s (band_writer.py): bands in, durable one by one, ``done()`` for the resume,
``finish()`` puts the output in place atomically. Importing this module imports no
``volumes`` library: a writer imports tifffile / zarr when it first needs them.

On disk, beside an output ``OUT/NAME.EXT`` while it is being written (deterministic names,
so a rerun finds them; none of them is an fcnx temp name, so ``remove_stale_temps`` leaves
them for the resume):

- ``OUT/.NAME.tif.fcnx-parts/``: a TIFF's finished bands (tiff_stack.py)
- ``OUT/.NAME.zarr.fcnx-partial/`` + ``OUT/.NAME.zarr.fcnx-done.jsonl``: a Zarr output
  being written, and its journal of finished bands (ome_zarr.py)
- the same for ``OUT/NAME.probs.zarr`` when probabilities are saved.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from .band_writer import MaskWriter, base_name, probs_path
from .ome_zarr import OmeZarrLabelWriter
from .png_planes import PngPlanesWriter, plane_names
from .tiff_stack import PARTS, TiffStackWriter
from .zarr_bands import JOURNAL, PARTIAL, ProbsZarrWriter

__all__ = [
    "OUTPUT_FORMATS",
    "MaskWriter",
    "OmeZarrLabelWriter",
    "PngPlanesWriter",
    "ProbsZarrWriter",
    "TiffStackWriter",
    "is_progress_name",
    "mask_files",
    "output_path",
    "probs_path",
    "progress_paths",
]

OUTPUT_FORMATS: dict[str, type[MaskWriter]] = {
    "tiff": TiffStackWriter,
    "zarr": OmeZarrLabelWriter,
    "png": PngPlanesWriter,
}

_HDF5_SPEC = re.compile(r"(.+\.(?:h5|hdf5|he5))(?::/.*)?", re.IGNORECASE | re.DOTALL)
_PROGRESS = re.compile(
    r"\..+(?:" + "|".join(re.escape(s) for s in (PARTS, PARTIAL, JOURNAL)) + ")", re.DOTALL
)


def output_path(out: Path, relative: str, fmt: str) -> Path:
    """Where the masks of the input at ``relative`` (its path below the input root, or
    ``FILE.h5:/dataset``) go in ``out``: for ``tiff`` the input's own name when it is a
    ``.tif``/``.tiff`` (an ``.ome.tif`` loses ``.ome``: the masks carry no OME-XML), else
    NAME.tif; for ``zarr`` a ``.zarr`` / ``.ome.zarr`` input's own name, else NAME.zarr.
    ``stack.tif`` -> ``OUT/stack.tif``; ``vol.zarr``, ``x.h5:/data`` -> ``OUT/vol.zarr``,
    ``OUT/x.zarr``; for ``png`` the name without its suffix, the base of the plane files
    (``mask_files``)."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {sorted(OUTPUT_FORMATS)}, got {fmt!r}")
    hdf5 = _HDF5_SPEC.fullmatch(relative)
    rel = PurePosixPath(hdf5[1] if hdf5 else relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise ValueError(f"an output's relative path must stay below the output folder, got {relative!r}")
    name, lower = rel.name, rel.name.lower()
    if fmt == "tiff":
        if lower.endswith((".ome.tif", ".ome.tiff")) or not lower.endswith((".tif", ".tiff")):
            name = base_name(name) + ".tif"
    elif fmt == "png":
        name = base_name(name)
    elif not lower.endswith(".zarr"):
        name = base_name(name) + ".zarr"
    return out / rel.with_name(name)


def mask_files(output: Path, fmt: str, plane_axes: str, plane_shape: tuple[int, ...]) -> list[Path]:
    """The files and folders the masks at ``output`` (``output_path``) are: itself, or for
    ``png`` one file per plane."""
    if fmt != "png":
        return [output]
    return [output.with_name(name) for name in plane_names(output.name, plane_axes, plane_shape)]


def progress_paths(output: Path) -> list[Path]:
    """What an unfinished write of ``output`` (and of its probabilities) may have left beside
    it, existing or not: what ``--overwrite`` removes with the output itself."""
    paths = []
    for final in (output, probs_path(output)):
        paths += [final.with_name(f".{final.name}{tail}") for tail in (PARTS, PARTIAL, JOURNAL)]
    return paths


def is_progress_name(name: str) -> bool:
    """Whether ``name`` is one of ``progress_paths``' names (of any output)."""
    return _PROGRESS.fullmatch(name) is not None
