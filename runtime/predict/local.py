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

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..images import Header, read_header, read_image
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


def bounded_map(
    pool: ThreadPoolExecutor,
    fn: Callable[[Any], Any],
    items: Iterator[Any],
    window: int,
    budget: int | None = None,
    cost: Callable[[Any], int] | None = None,
) -> Iterator[Any]:
    """``pool.map`` that keeps at most ``window`` tasks in flight (``Executor.map`` submits
    everything up front, which on a million files is a million queued tasks), and at most
    ``budget`` bytes by ``cost(item)`` (always at least one task), in order."""
    pending: deque[tuple[Future[Any], int]] = deque()
    held = 0
    for item in items:
        size = cost(item) if cost is not None else 0
        while pending and (len(pending) >= window or (budget is not None and held + size > budget)):
            future, freed = pending.popleft()
            held -= freed
            yield future.result()
        pending.append((pool.submit(fn, item), size))
        held += size
    while pending:
        yield pending.popleft()[0].result()


def run_local(
    config: PredictConfig,
    segmenter: Segmenter,
    tasks: list[Task],
    report: Report,
    run_id: str = "",
    pieces: Callable[[int], None] | None = None,
) -> None:
    """Run the planned tasks; ``report`` gets each file's outcome, ``pieces`` the count of
    tiles (or whole images) each batch took through the model."""
    palette = segmenter.card.palette
    probs_bytes = 2 if config.save_probs else 0  # kept as float16
    channels = segmenter.card.input_channels

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
            image = read_image(item.path, channels, config.max_pixels, admit)
            return _Decoded(item, paths, segmenter.plan(image, item.path), image if config.overlay else None)
        except Exception as exc:  # one bad file never stops the run
            return _Decoded(item, paths, error=describe_error(exc))

    def read_cost(task: Task) -> int:
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
    budget = config.read_ahead << 20
    with (
        ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-read") as readers,
        ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-write") as writers,
    ):
        decoded = bounded_map(readers, read, iter(tasks), window, budget, read_cost)
        for d, error in bounded_map(writers, write, inferred(decoded), window, budget, write_cost):
            report(d.item.path, "write", error)
