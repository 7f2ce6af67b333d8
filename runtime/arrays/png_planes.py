"""Masks of a stack as one PNG per plane (``--output-format png``), an image sequence.

``OUT/NAME-z0000.png``, ``OUT/NAME-z0001.png``, ... (several plane axes:
``NAME-t0001-z0003.png``; the numbers as wide as the longest, at least 4 digits), each the
palette PNG ``fcnx predict`` writes for an image file (class ids as pixel values, the card's
palette), so plane i of a stack gets the very bytes slice i gets as a PNG. A plane's bands
are kept until the plane is complete, then its PNG is written atomically (temp file, fsync,
rename): the resume unit is the plane, and a PNG in place is a finished plane. For planes
read whole (up to ``MAX_PIXELS``); larger planes need a chunked output (tiff, zarr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes, remove_stale_temps
from .band_writer import BAND_DONE, BAND_WRITTEN, Band, MaskWriter, band_starts, fault_point
from .zarr_bands import ProbsZarrWriter

MAX_PIXELS = 4096 * 4096  # a plane's mask is held whole until it is complete


def plane_names(base: str, plane_axes: str, plane_shape: tuple[int, ...]) -> list[str]:
    """The file names of every plane's PNG, in plane order (row-major over the plane axes)."""
    if not plane_shape:
        return [f"{base}.png"]
    digits = [max(4, len(str(n - 1))) for n in plane_shape]
    names = []
    for index in np.ndindex(*plane_shape):
        parts = (f"{axis.lower()}{i:0{d}d}" for axis, i, d in zip(plane_axes, index, digits))
        names.append(f"{base}-{'-'.join(parts)}.png")
    return names


class PngPlanesWriter(MaskWriter):
    """``path`` is ``OUT/NAME`` (the sequence's base, not a file): plane files beside it,
    probabilities (``--save-probs``) in ``OUT/NAME.probs.zarr``."""

    suffix = ".png"

    def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        if self.height * self.width > MAX_PIXELS:
            raise ValueError(
                f"{self.path}: PNG masks are for planes up to {MAX_PIXELS} px (read whole); planes of "
                f"{self.width}x{self.height} need --output-format zarr or tiff"
            )
        names = plane_names(self.path.name, self.plane_axes, self.plane_shape)
        self.files = [self.path.with_name(name) for name in names]
        self._rows: dict[int, dict[int, np.ndarray]] = {}  # plane -> y0 -> rows of a plane not yet complete
        self.probs = ProbsZarrWriter.beside(self)

    def _bands(self, plane: int) -> set[Band]:
        return {(plane, y, 0) for y in band_starts(self.height, self.band)}

    def done(self) -> set[Band]:
        mine = set().union(*(self._bands(p) for p, f in enumerate(self.files) if f.is_file()))
        if self.probs is None:
            return mine
        return mine & (self.all_bands() if self.probs.complete else set(self.probs.recorded))

    def write_band(
        self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None = None, x0: int = 0
    ) -> None:
        bands = self.check_band(plane, y0, mask, probs, x0)
        if self.probs is not None and probs is not None:
            self.probs.write_probs(bands, self.plane_index(plane), y0, probs)
        with self._lock:
            rows = self._rows.setdefault(plane, {})
            rows[y0] = np.array(mask, copy=True)
            covered = sum(len(r) for r in rows.values())
            if covered < self.height:
                return  # the plane is written when its last band arrives
            del self._rows[plane]
        whole = np.concatenate([rows[y] for y in sorted(rows)])
        from ..predict.outputs import encode_mask_png  # the one palette-PNG encoder of masks

        target = self.files[plane]
        remove_stale_temps(target)
        atomic_write_bytes(target, encode_mask_png(whole, self.card.palette), tag=self.run_id)
        fault_point(BAND_WRITTEN, self.path)
        fault_point(BAND_DONE, self.path)

    def begin(self) -> None:
        if self.probs is not None:
            self.probs.begin()

    def record(self, bands: list[Band]) -> None:
        """The plane files are their own record (each is written whole, atomically)."""
        if self.probs is not None:
            self.probs.record(bands)

    def finish(self) -> None:
        missing = [f for f in self.files if not f.is_file()]
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} plane masks not written yet (the first: {missing[0].name})"
            )
        if self.probs is not None:
            self.probs.check_finished(self.all_bands())
            self.probs.finish()

    def abort(self) -> None:
        with self._lock:
            self._rows.clear()  # an incomplete plane is computed again by the rerun
        if self.probs is not None:
            self.probs.close()
