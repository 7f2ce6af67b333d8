"""Dynamic batching: concurrent requests' images share one model call.

Each image waits at most ``max_delay`` seconds after the first image of its batch arrived,
or until ``max_batch`` images are queued, then the batch runs on a worker thread (one batch
at a time: the model already uses every core) while the event loop keeps accepting. Each
image gets its own result back, never another's: results are matched by position in the
batch, and a batch that fails is retried image by image, so one image's failure is its own
request's error only. A request that arrives alone (no other arrived within the last
batch's compute time before it: one client at a time) runs at once, since waiting for
company that is not coming would only add latency. Sizes may differ within a batch; the Segmenter groups same-shape
images into one backend call and tiles the large ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..predict.plans import Output

RunBatch = Callable[[Sequence[np.ndarray], bool], list[Output]]
# (queue seconds of each image, compute seconds, batch size): the metrics hook
Observe = Callable[[list[float], float, int], None]


def warm_batches(max_batch: int) -> list[int]:
    """The engine batch sizes to run before ready: every size up to 8, then powers of two, and the max."""
    sizes = set(range(1, min(max_batch, 8) + 1)) | {max_batch}
    sizes |= {1 << k for k in range(4, max_batch.bit_length()) if 1 << k < max_batch}
    return sorted(sizes)


@dataclass
class _Job:
    image: np.ndarray
    probs: bool
    future: asyncio.Future[Output]
    queued: float = field(default_factory=time.perf_counter)
    alone: bool = False  # no other request arrived within one batch's compute time before it


class Batcher:
    def __init__(
        self, run: RunBatch, max_batch: int, max_delay: float, observe: Observe | None = None
    ) -> None:
        if max_batch < 1 or max_delay < 0:
            raise ValueError(f"max_batch must be >= 1 and max_delay >= 0, got {max_batch} and {max_delay}")
        self.run = run
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.observe = observe
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcnx-batch")
        self._busy = 0  # images taken from the queue and not answered yet
        self._last_arrival = -float("inf")
        self._last_compute = 0.0  # seconds the last batch took

    async def submit(self, image: np.ndarray, probs: bool = False) -> Output:
        """The image's mask (and probabilities when ``probs``), once its batch has run."""
        if self._queue is None:  # created on the serving loop, on first use
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        job = _Job(image, probs, asyncio.get_running_loop().create_future())
        job.alone = job.queued - self._last_arrival >= self._last_compute
        self._last_arrival = job.queued
        self._queue.put_nowait(job)
        return await job.future

    @property
    def pending(self) -> int:
        """Images queued or running."""
        return (self._queue.qsize() if self._queue is not None else 0) + self._busy

    async def _collect(self, queue: asyncio.Queue[_Job]) -> list[_Job]:
        jobs = [await queue.get()]
        if jobs[0].alone and queue.empty():  # no sign of concurrent requests: waiting would only add latency
            return jobs
        deadline = time.perf_counter() + self.max_delay
        while len(jobs) < self.max_batch:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return jobs

    async def _serve(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect(self._queue)
            self._busy = len(jobs)
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_each, jobs)
            finally:
                self._busy = 0
                self._last_compute = time.perf_counter() - started
            if self.observe is not None:
                self.observe([started - j.queued for j in jobs], time.perf_counter() - started, len(jobs))
            for job, output in zip(jobs, outputs):
                if job.future.done():  # the request went away (client closed): nothing to answer
                    continue
                if isinstance(output, Exception):
                    job.future.set_exception(output)
                else:
                    job.future.set_result(output)

    def _run_each(self, jobs: list[_Job]) -> list[Output | Exception]:
        """One call for the batch; if it fails, one call per image, so each image's error is its own."""
        probs = any(j.probs for j in jobs)
        try:
            results: list[Output | Exception] = list(self.run([j.image for j in jobs], probs))
        except Exception:
            if len(jobs) == 1:
                raise
            results = []
            for job in jobs:
                try:
                    results.append(self.run([job.image], job.probs)[0])
                except Exception as exc:  # this image's own failure
                    results.append(exc)
        return [
            r if isinstance(r, Exception) or j.probs else Output(r.mask, None) for j, r in zip(jobs, results)
        ]

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued image is answered (graceful shutdown); False on timeout."""
        deadline = time.perf_counter() + timeout
        while self.pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
