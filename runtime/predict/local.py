"""The local runner of a predict job: a pipeline of threads, not a loop.

::

    reader threads            main thread                          writer threads
    read + decode + plan  ->  tiles/images batched + infer  ->   encode + atomic write
    (bounded in bytes)        + blend/restore (segmenter.py)     (bounded in bytes)

Readers and writers are thread pools with a bounded number of images and of bytes in
flight (``--read-ahead``; at least one image), so memory stays flat however many and
however large the files are, and OpenCV/Pillow/onnxruntime all release the GIL, so
decoding and encoding overlap inference. An image whose buffers would not fit in the
memory available is refused from its header, before it is decoded (memory.py). Each file's outcome goes
to ``report(path, stage, error)`` (error "" when written); one bad file never stops
the run. Planning, failures and the summary are the job's (job.py).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..images import Header, read_header, read_image
from ..intensity import Note
from .config import PredictConfig
from .failures import Report, describe_error
from .inputs import InputFile, Task
from .memory import available_bytes, describe, image_bytes
from .outputs import write_outputs
from .plans import Output, Plan
from .segmenter import Segmenter


@dataclass(frozen=True)
class _Decoded:
    item: InputFile
    paths: list[Path]
    plan: Plan | None = None
    image: np.ndarray | None = None  # kept for overlays only
    error: str = ""


class ByteBudget:
    """Bytes held by the tasks in flight, granted in submission order: a task waits for
    its turn, then until it fits (or nothing else is held: a large image always goes,
    alone). Granting in order is what keeps it deadlock-free: every earlier task already
    holds its bytes and a thread (the pool runs tasks first in, first out), so it finishes
    and its bytes come back when its result is taken."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._turn = 0
        self._closed = False
        self._cond = threading.Condition()

    def take(self, ticket: int, size: int) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._closed
                    or (self._turn == ticket and (self.held == 0 or self.held + size <= self.limit))
                )
            )
            self.held += size
            self._turn += 1
            self._cond.notify_all()

    def give(self, size: int) -> None:
        with self._cond:
            self.held -= size
            self._cond.notify_all()

    def close(self) -> None:
        """Stop waiting (the run is over or interrupted): waiting tasks go on at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def bounded_map(
    pool: ThreadPoolExecutor,
    fn: Callable[[Any], Any],
    items: Iterator[Any],
    window: int,
    budget: ByteBudget | None = None,
    cost: Callable[[Any], int] | None = None,
) -> Iterator[Any]:
    """``pool.map`` that keeps at most ``window`` tasks in flight (``Executor.map`` submits
    everything up front, which on a million files is a million queued tasks), in order.
    With a ``budget``, each task first weighs its item (``cost``, in the worker: a file's
    header is read there, not on the caller's thread) and waits for its bytes."""

    def task(ticket: int, item: Any) -> tuple[Any, int]:
        size = cost(item) if cost is not None else 0
        if budget is not None:
            budget.take(ticket, size)
        return fn(item), size

    pending: deque[Future[tuple[Any, int]]] = deque()

    def oldest() -> Any:
        result, size = pending.popleft().result()
        if budget is not None:
            budget.give(size)
        return result

    for ticket, item in enumerate(items):
        if len(pending) >= window:
            yield oldest()
        pending.append(pool.submit(task, ticket, item))
    while pending:
        yield oldest()


def run_local(
    config: PredictConfig,
    segmenter: Segmenter,
    tasks: list[Task],
    report: Report,
    run_id: str = "",
    pieces: Callable[[int], None] | None = None,
    notes: Note | None = None,
) -> None:
    """Run the planned tasks; ``report`` gets each file's outcome, ``pieces`` the count of
    tiles (or whole images) each batch took through the model, ``notes`` the remarks of
    the 16-bit mapping (intensity.py) about an image, from the reader threads."""
    palette = segmenter.card.palette
    probs_bytes = 2 if config.save_probs else 0  # kept as float16
    channels = segmenter.card.input_channels
    intensity = config.intensity_for(segmenter.card)

    def admit(header: Header) -> None:
        need = image_bytes(segmenter, header, probs_bytes, config.overlay)
        free = available_bytes()
        if free is not None and need > free:
            raise MemoryError(
                f"{header.width}x{header.height} needs about {describe(need)} to segment "
                f"({segmenter.describe()}, batch {segmenter.batch_size}); {describe(free)} is available"
            )

    def read(task: Task) -> _Decoded:
        item, paths = task
        try:
            image = read_image(item.path, channels, config.max_pixels, admit, intensity, notes)
            return _Decoded(item, paths, segmenter.plan(image, item.path), image if config.overlay else None)
        except Exception as exc:  # one bad file never stops the run
            return _Decoded(item, paths, error=describe_error(exc))

    def read_cost(task: Task) -> int:  # in a reader thread
        header = read_header(task[0].path)
        return header.pixels * (header.bytes_per_pixel + channels) if header else 0

    def write(job: tuple[_Decoded, Output]) -> tuple[_Decoded, str]:
        decoded, output = job
        try:
            write_outputs(decoded.paths, output.mask, palette, decoded.image, run_id, output.probs)
            return decoded, ""
        except Exception as exc:
            return decoded, describe_error(exc)

    def write_cost(job: tuple[_Decoded, Output]) -> int:
        decoded, output = job
        arrays = (output.mask, output.probs, decoded.image)
        return sum(a.nbytes for a in arrays if a is not None)

    def good(decoded: Iterator[_Decoded]) -> Iterator[tuple[_Decoded, Plan]]:
        for d in decoded:
            if d.error:
                report(d.item.path, "read", d.error)
            else:
                assert d.plan is not None
                yield d, d.plan

    def inferred(decoded: Iterator[_Decoded]) -> Iterator[tuple[_Decoded, Output]]:
        results = segmenter.stream(good(decoded), bool(config.save_probs), np.float16, pieces)
        for d, _, result in results:
            if isinstance(result, Exception):
                report(d.item.path, "infer", describe_error(result))
            else:
                yield replace(d, plan=None), result  # the writers need the input only for an overlay

    window = max(2 * segmenter.batch_size, 4 * config.workers)
    read_budget, write_budget = ByteBudget(config.read_ahead << 20), ByteBudget(config.read_ahead << 20)
    readers = ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-read")
    writers = ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-write")
    finished = False
    try:
        decoded = bounded_map(readers, read, iter(tasks), window, read_budget, read_cost)
        for d, error in bounded_map(writers, write, inferred(decoded), window, write_budget, write_cost):
            report(d.item.path, "write", error)
        finished = True
    finally:  # an interrupted run: no task left waiting for bytes, none queued, none waited for
        read_budget.close()
        write_budget.close()
        for pool in (readers, writers):
            pool.shutdown(wait=finished, cancel_futures=not finished)
