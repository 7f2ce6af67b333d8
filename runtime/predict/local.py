"""The local runner of a predict job: a pipeline of threads, not a loop.

::

    reader threads            main thread                writer threads
    read + decode + prepare -> batch + infer (backend) -> restore size + encode + atomic write
          (bounded window)                                    (bounded window)

Readers and writers are thread pools with a bounded number of images in flight, so
memory stays flat however many files there are, and OpenCV/Pillow/onnxruntime all
release the GIL, so decoding and encoding overlap inference. Each file's outcome goes
to ``report(path, stage, error)`` (error "" when written); one bad file never stops
the run. Planning, failures and the summary are the job's (job.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import read_image
from .config import PredictConfig
from .failures import Report, describe_error
from .inputs import InputFile, Task
from .outputs import write_outputs
from .segmenter import Prepared, Segmenter


@dataclass(frozen=True)
class _Decoded:
    item: InputFile
    paths: list[Path]
    prepared: Prepared | None = None
    image: np.ndarray | None = None  # kept for overlays only
    error: str = ""


def bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterator[Any], window: int
) -> Iterator[Any]:
    """``pool.map`` that keeps at most ``window`` tasks in flight (``Executor.map`` submits
    everything up front, which on a million files is a million queued tasks), in order."""
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def run_local(
    config: PredictConfig, segmenter: Segmenter, tasks: list[Task], report: Report, run_id: str = ""
) -> None:
    palette = segmenter.card.palette

    def read(task: Task) -> _Decoded:
        item, paths = task
        try:
            image = read_image(item.path, segmenter.card.input_channels)
            return _Decoded(
                item, paths, segmenter.prepare(image, item.path), image if config.overlay else None
            )
        except Exception as exc:  # one bad file never stops the run
            return _Decoded(item, paths, error=describe_error(exc))

    def write(job: tuple[_Decoded, dict[str, np.ndarray]]) -> tuple[_Decoded, str]:
        decoded, outputs = job
        try:
            assert decoded.prepared is not None
            mask = segmenter.restore(decoded.prepared, outputs).mask
            write_outputs(decoded.paths, mask, palette, decoded.image, run_id)
            return decoded, ""
        except Exception as exc:
            return decoded, describe_error(exc)

    def good(decoded: Iterator[_Decoded]) -> Iterator[tuple[_Decoded, Prepared]]:
        for d in decoded:
            if d.error:
                report(d.item.path, "read", d.error)
            else:
                assert d.prepared is not None
                yield d, d.prepared

    window = max(2 * segmenter.batch_size, 4 * config.workers)
    with (
        ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-read") as readers,
        ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-write") as writers,
    ):
        decoded = bounded_map(readers, read, iter(tasks), window)
        inferred = ((d, outputs) for d, _, outputs in segmenter.stream(good(decoded)))
        for d, error in bounded_map(writers, write, inferred, window):
            report(d.item.path, "write", error)
