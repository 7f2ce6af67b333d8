"""The array inputs of a predict job: stacks, volumes and gigapixel planes (runtime/arrays).

Each array input is segmented plane by plane and its masks go to one chunked output
(``--output-format``: a multi-page TIFF, or an OME-Zarr label image) band by band, each
band durable before the next is counted, so a killed run's rerun computes only the bands
it lacks (``MaskWriter.done()``) and the finished output is byte-identical.

A plane goes one of two ways:

- **whole** (at most ``WHOLE_PLANE_PIXELS``, e.g. the 512 x 512 slices of an EM stack): read
  whole, planned and run exactly as an image file of the same pixels (``Segmenter.plan``),
  so page i of a stack's masks equals ``fcnx predict`` of slice i as a PNG; consecutive
  planes share batches.
- **windowed** (larger): ``Segmenter.plan_window`` (windows.py) reads one row of tiles at a time (with
  its overlap) and hands finished rows on as soon as no later tile touches them; memory is
  the tile rows in flight plus one output band, whatever the plane's height. A writer that
  writes by columns (OME-Zarr) cuts a wider plane into column strips (``MaskWriter.strip``)
  segmented one after the other, so memory does not grow with the width either.

Rows become whole bands of ``BAND_ROWS`` rows (``Bands``, bands.py), written on one writer thread
while the model runs (at most ``WRITES_IN_FLIGHT`` bands waiting). A plane that cannot be
read or run fails alone: the other planes go on, their bands stay durable, and the input
is reported failed naming the plane (a rerun computes only what is missing).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays.band_writer import Band
from ..arrays.source import ArrayInfo, ArraySource
from ..arrays.writers import OUTPUT_FORMATS, MaskWriter, mask_files, output_path, probs_path
from ..card import ModelCard
from ..images import Header, to_uint8
from ..intensity import Note
from ..names import shown
from .bands import WRITES_IN_FLIGHT, Bands, BandWrites
from .config import PredictConfig
from .inputs import InputFile
from .memory import available_bytes, describe, image_bytes, window_bytes
from .plans import Output, Plan
from .regions import Region, plan_regions
from .segmenter import Segmenter

WHOLE_PLANE_PIXELS = 4096 * 4096  # planes up to this are read whole (an image file's path)
BAND_ROWS = 512  # rows per output band: the unit of writing, durability and resume

Report = Callable[[str, str, str], None]  # (input, stage, error or "")


def output_format(config: PredictConfig, info_format: str, planes: int, pixels: int) -> str:
    """``--output-format``, or for ``auto``: a TIFF stack of planes that are read whole gets
    a multi-page TIFF (the ISBI layout round-trips); Zarr, HDF5 and huge planes get an
    OME-Zarr label image."""
    if config.output_format != "auto":
        return config.output_format
    return "tiff" if "tiff" in info_format and pixels <= WHOLE_PLANE_PIXELS else "zarr"


def array_outputs(
    out: Path, item: InputFile, fmt: str, probs: bool, info: ArrayInfo
) -> tuple[Path, list[Path]]:
    """Where the masks of one array input go (the writer's path), and every output it
    makes: its masks (one entry, or a PNG per plane), then its probabilities (``--save-probs``)."""
    target = output_path(out, item.relative, fmt)
    plane_shape = tuple(info.shape[info.axes.index(a)] for a in info.plane_axes)
    files = mask_files(target, fmt, info.plane_axes, plane_shape)
    return target, [*files, probs_path(target)] if probs else files


@dataclass(frozen=True)
class ArrayPlan:
    """One array input, opened and checked before anything is written."""

    item: InputFile
    format: str  # the output format
    target: Path  # the writer's path: the output, or the base of a PNG sequence
    outputs: list[Path]  # every file or folder it writes (what --overwrite removes, resume checks)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def windowed(info: ArrayInfo) -> bool:
    """Whether the planes of an array input are read by windows (else whole)."""
    return info.height * info.width > WHOLE_PLANE_PIXELS


def admit(segmenter: Segmenter, info: ArrayInfo, probs: bool, strip: int) -> None:
    """Refuse, before any pixel is read, an input whose planes would not fit in the memory
    available (an out-of-memory kill is not a failure a run can record). ``strip``: the
    width of the column strips a windowed plane is segmented in."""
    header = Header(info.width, info.height, np.dtype(info.dtype).itemsize * info.channels)
    probs_bytes = 2 if probs else 0
    if windowed(info):
        strip_header = Header(min(strip, info.width), info.height, header.bytes_per_pixel)
        need = window_bytes(segmenter, strip_header, BAND_ROWS, WRITES_IN_FLIGHT + 1, probs_bytes)
    else:  # a plane being read ahead, one in the model, one being written
        need = image_bytes(segmenter, header, probs_bytes) + 2 * header.pixels * header.bytes_per_pixel
    free = available_bytes()
    if free is not None and need > free:
        how = "by windows" if windowed(info) else "whole"
        raise ValueError(
            f"planes of {info.width}x{info.height} read {how} need about {describe(need)} to segment "
            f"({segmenter.describe()}, batch {segmenter.batch_size}); {describe(free)} is available"
        )


class ArrayRun:
    """Segment one array input into its writer (see the module's doc), or some of its
    regions (regions.py: what a Ray worker runs). ``by_windows``: how its planes are read
    (default: by their size); ``before_write``: called before each band is written (a Ray
    worker checks there that its run still owns the output)."""

    def __init__(
        self,
        config: PredictConfig,
        segmenter: Segmenter,
        source: ArraySource,
        writer: MaskWriter,
        pieces: Callable[[int], None] | None,
        note: Note | None,
        by_windows: bool | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.config, self.segmenter, self.source, self.writer = config, segmenter, source, writer
        self.pieces, self.note = pieces, note
        self.info = source.info
        self.windowed = by_windows if by_windows is not None else windowed(self.info)
        self.before_write = before_write
        self.intensity = config.intensity_for(segmenter.card)
        self.probs = bool(config.save_probs)
        self.failed: dict[int, str] = {}  # plane -> why
        self.write_seconds = 0.0  # spent writing bands (on the writer thread)

    def where(self, plane: int) -> str:
        label = self.info.plane_label(plane)
        return f"{label}: " if label else ""

    def regions(self, workers: int = 0, region_pixels: int | None = None) -> list[Region]:
        """This input's regions (regions.py); ``workers=0``: the local run's, a whole plane's
        strip or all planes at once."""
        info, writer = self.info, self.writer
        return plan_regions(
            info.planes, info.height, info.width, writer.band, writer.strip, self.windowed, workers,
            region_pixels,
        )  # fmt: skip

    def run(self, regions: list[Region] | None = None) -> None:
        """Segment ``regions`` (default: all of them), each from its first band not yet done."""
        done = self.writer.done()
        writes = BandWrites(self.writer, self.before_write)
        finished = False
        try:
            for region in self.regions() if regions is None else regions:
                self._region(region, done, writes)
            writes.drain()
            finished = True
        finally:
            writes.close(wait=finished)
            self.write_seconds += writes.seconds

    def _region(self, region: Region, done: set[Band], writes: BandWrites) -> None:
        band, strip = self.writer.band, self.writer.strip
        missing = [b for b in region.bands(band, strip) if b not in done]
        if not missing:
            return
        if not self.windowed:
            self._whole_planes(sorted({p for p, _, _ in missing}), done, writes)
        elif region.planes[0] not in self.failed:  # a plane that failed in one strip fails whole
            self._windowed_rows(region, min(y for _, y, _ in missing), done, writes)

    def _whole_planes(self, planes: list[int], done: set[Band], writes: BandWrites) -> None:
        """Planes read whole, one read ahead on a thread, sharing the model's batches."""
        origin = str(self.info.spec)

        def read(plane: int) -> Plan | str:
            try:
                image = self.source.read_plane(plane)
                where = f"{origin} {self.info.plane_label(plane)}".strip()
                image = to_uint8(image, where, self.intensity, None, self.note)
                return self.segmenter.plan(image, where)
            except Exception as exc:  # one bad plane fails alone
                return _describe(exc)

        def items() -> Iterator[tuple[int, Plan]]:
            with ThreadPoolExecutor(1, thread_name_prefix="fcnx-plane") as reader:
                ahead = deque(reader.submit(read, p) for p in planes[:2])
                following = iter(planes[2:])
                for plane in planes:
                    plan = ahead.popleft().result()
                    nxt = next(following, None)
                    if nxt is not None:
                        ahead.append(reader.submit(read, nxt))
                    if isinstance(plan, str):
                        self.failed[plane] = plan
                    else:
                        yield plane, plan

        stream = self.segmenter.stream(items(), self.probs, np.float16, self.pieces)
        columns = (0, self.info.width)
        for plane, _, result in stream:
            if isinstance(result, Exception):
                self.failed[plane] = _describe(result)
                continue
            assert isinstance(result, Output)
            bands = Bands(plane, self.info.height, self.writer.band, done, writes, columns, self.writer.strip)
            bands.rows(0, result.mask, result.probs)

    def _windowed_rows(self, region: Region, from_row: int, done: set[Band], writes: BandWrites) -> None:
        """Rows ``from_row ..`` of a region of a plane too large to hold (a column strip of
        it, or all its columns), by rows of tiles: only the tile rows reaching into them run."""
        plane, (_, to_row), columns = region.planes[0], region.rows, region.columns
        height, width = self.info.height, self.info.width
        try:
            bands = Bands(plane, to_row, self.writer.band, done, writes, columns, self.writer.strip)
            plan = self.segmenter.plan_window(
                self.source,
                plane,
                bands.rows,
                from_row,
                self.intensity,
                self.note,
                columns if columns != (0, width) else None,
                to_row if to_row < height else None,
            )
            for _, _, result in self.segmenter.stream([(plane, plan)], self.probs, np.float16, self.pieces):
                if isinstance(result, Exception):
                    raise result
            if not bands.complete:
                raise RuntimeError(f"plane {plane}: the tiles ended before row {to_row}")
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # a window that cannot be read or run: this plane fails
            self.failed.setdefault(plane, _describe(exc))


def make_writer(
    plan: ArrayPlan,
    info: ArrayInfo,
    card: ModelCard,
    save_probs: str | None,
    run_id: str,
    band: int | None = None,
    strip: int | None = None,
    journal: bool = True,
) -> MaskWriter:
    """The writer of an array input's masks (its format's, at ``plan.target``). A Ray
    worker's (``journal=False``) writes its region's chunks into the output its driver
    started and leaves the journal to the driver."""
    return OUTPUT_FORMATS[plan.format](
        plan.target,
        info.planes,
        info.height,
        info.width,
        band or BAND_ROWS,
        card,
        probs="float16" if save_probs == "npy" else "uint8" if save_probs else None,
        run_id=run_id,
        plane_axes=info.plane_axes,
        plane_shape=tuple(info.shape[info.axes.index(a)] for a in info.plane_axes),
        strip=strip,
        journal=journal,
    )


def failure_line(run: ArrayRun) -> str:
    """The one line an input with failed planes is reported with: the first, and how many."""
    plane = min(run.failed)
    more = f" ({len(run.failed)} of {run.info.planes} planes failed)" if len(run.failed) > 1 else ""
    return f"{run.where(plane)}{run.failed[plane]}{more}"


def segment_array(
    config: PredictConfig,
    segmenter: Segmenter,
    plan: ArrayPlan,
    report: Report,
    run_id: str = "",
    pieces: Callable[[int], None] | None = None,
    note: Note | None = None,
) -> None:
    """One array input, start to finish (or to a one-line failure naming the plane)."""
    from ..arrays.readers import open_array  # the readers: only when there are array inputs

    item = plan.item
    try:
        source = open_array(item.path, config.axes, config.level)
    except Exception as exc:
        report(item.path, "read", _describe(exc))
        return
    with source:
        info = source.info
        try:
            admit(
                segmenter, info, bool(config.save_probs), OUTPUT_FORMATS[plan.format].strip_width(info.width)
            )
        except ValueError as exc:
            report(item.path, "read", _describe(exc))
            return
        try:
            writer = make_writer(plan, info, segmenter.card, config.save_probs, run_id)
        except Exception as exc:
            report(item.path, "write", _describe(exc))
            return
        run = ArrayRun(config, segmenter, source, writer, pieces, note)
        finished = False
        try:
            run.run()
            if run.failed:
                report(item.path, "read", failure_line(run))
                return
            writer.finish()
            finished = True
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            report(item.path, "write", f"{shown(plan.target)}: {_describe(exc)}")
            return
        finally:
            if not finished:  # what is durable stays for a rerun
                writer.abort()
    report(item.path, "", "")


def plan_arrays(
    config: PredictConfig, out: Path, items: list[InputFile], failed: Callable[[InputFile, str], None]
) -> list[ArrayPlan]:
    """Open each array input once (read-only, headers only) to choose its output; one that
    cannot be opened goes to ``failed`` and the others go on."""
    plans = []
    for item in items:
        from ..arrays.readers import open_array  # the readers: only when there are array inputs

        try:
            with open_array(item.path, config.axes, config.level) as source:
                info = source.info
                fmt = output_format(config, info.format, info.planes, info.height * info.width)
        except Exception as exc:
            failed(item, _describe(exc))
            continue
        plans.append(ArrayPlan(item, fmt, *array_outputs(out, item, fmt, bool(config.save_probs), info)))
    return plans


def array_summary(plans: list[ArrayPlan]) -> list[dict[str, Any]]:
    return [{"input": p.item.path, "output": str(p.target), "format": p.format} for p in plans]
