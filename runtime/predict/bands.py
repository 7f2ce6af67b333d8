"""The rows an array input's plane finishes, as the whole bands its writer takes.

``Bands`` gathers a plane's finished rows (of one column strip) into bands of the writer's
height and hands each on once, skipping bands a killed run already made durable;
``BandWrites`` runs the writer's ``write_band`` on one thread, at most
``WRITES_IN_FLIGHT`` bands waiting, so the model does not wait for compression and fsyncs
and memory stays bounded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..arrays.band_writer import Band
from ..arrays.writers import MaskWriter

WRITES_IN_FLIGHT = 2

Write = Callable[[int, int, int, np.ndarray, np.ndarray | None], None]  # (plane, y0, x0, mask, probs)


class Bands:
    """One plane's finished rows in (any run of consecutive rows, top to bottom, of the
    columns ``x0 .. x0 + width``), whole bands out to ``write(plane, y0, x0, mask, probs)``,
    one per column strip of ``strip`` columns (the last band of a plane may be shorter).
    Bands in ``done`` are not written again."""

    def __init__(
        self,
        plane: int,
        height: int,
        band: int,
        done: set[Band],
        write: Write,
        columns: tuple[int, int],
        strip: int,
    ) -> None:
        self.plane, self.height, self.band = plane, height, band
        self.done, self.write = done, write
        self.columns, self.strip = columns, strip
        self._start: int | None = None  # the row the buffered rows begin at
        self._masks: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._rows = 0

    def rows(self, y0: int, mask: np.ndarray, probs: np.ndarray | None) -> None:
        if self._start is None:
            if y0 % self.band:
                raise ValueError(f"plane {self.plane}: rows start at {y0}, not on a band border")
            self._start = y0
        elif y0 != self._start + self._rows:
            raise ValueError(
                f"plane {self.plane}: rows {y0}.. do not follow rows ..{self._start + self._rows}"
            )
        self._masks.append(mask)
        if probs is not None:
            self._probs.append(probs)
        self._rows += len(mask)
        while self._rows and (self._rows >= self.band or self._start + self._rows >= self.height):
            self._flush(min(self.band, self._rows))

    def _flush(self, n: int) -> None:
        assert self._start is not None
        mask = np.concatenate(self._masks) if len(self._masks) > 1 else self._masks[0]
        probs = (
            (np.concatenate(self._probs) if len(self._probs) > 1 else self._probs[0]) if self._probs else None
        )
        x0, x1 = self.columns
        for x in range(x0, x1, self.strip):
            if (self.plane, self._start, x) not in self.done:
                cut = slice(x - x0, min(x1, x + self.strip) - x0)
                self.write(
                    self.plane, self._start, x, mask[:n, cut], None if probs is None else probs[:n, cut]
                )
        self._masks = [mask[n:]] if n < len(mask) else []
        self._probs = [probs[n:]] if probs is not None and n < len(probs) else []
        self._start += n
        self._rows -= n

    @property
    def complete(self) -> bool:
        return self._start is not None and self._start >= self.height and not self._rows


class BandWrites:
    """A writer's ``write_band`` on one thread, at most ``WRITES_IN_FLIGHT`` bands waiting:
    the model does not wait for compression and fsyncs, and memory stays bounded.
    ``before_write()`` runs before each band is handed on (it may raise to stop the run)."""

    def __init__(self, writer: MaskWriter, before_write: Callable[[], None] | None = None) -> None:
        self.writer, self.before_write = writer, before_write
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fcnx-band")
        self._waiting: deque[Future[None]] = deque()
        self.seconds = 0.0  # spent in write_band (on the writer thread)

    def __call__(self, plane: int, y0: int, x0: int, mask: np.ndarray, probs: np.ndarray | None) -> None:
        while len(self._waiting) >= WRITES_IN_FLIGHT:
            self._waiting.popleft().result()
        if self.before_write is not None:
            self.before_write()
        mask = np.ascontiguousarray(mask)  # a strip of whole-plane rows: its own copy, not a view
        probs = None if probs is None else np.ascontiguousarray(probs)
        self._waiting.append(self._pool.submit(self._write, plane, y0, mask, probs, x0))

    def _write(self, plane: int, y0: int, mask: np.ndarray, probs: np.ndarray | None, x0: int) -> None:
        started = time.perf_counter()
        self.writer.write_band(plane, y0, mask, probs, x0)
        self.seconds += time.perf_counter() - started

    def drain(self) -> None:
        while self._waiting:
            self._waiting.popleft().result()

    def close(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
