"""``fcnx predict --ray`` for stacks, volumes and huge images: their regions as Ray actor calls.

::

    driver                         RegionWorker actors (--workers)            driver
    open each input's header,      the model loaded once each; per region:    record each finished
    start its output (begin),  ->  read its own window of the input,      ->  region's bands in the
    plan regions (regions.py)      segment it, write its own chunks into      journal; finish each
    minus those already done       OUT's partial output, durable             input (pyramid, rename)

Only region descriptions and small reports travel through Ray: no pixels pass through the
driver or the object store (``object_store_peak_bytes`` in the summary says what was
there). The output is byte-identical to a local run's, with any number of workers: the
same tiles reach each pixel, in the same order (regions.py).

What survives what:

- a worker process or node that dies: Ray restarts the actor (up to ``RESTARTS`` times,
  elsewhere if its node is gone, the model loaded again) and runs its queued regions
  again (``max_task_retries``); a region that raised is tried again up to ``ATTEMPTS``
  times; a retried region rewrites exactly its own chunks (each removed, then written).
- a region that still fails fails alone: ``failures.jsonl`` names the input and each
  failed region's bounds and reason; the other regions finish and stay durable; the exit
  code says so; a rerun computes only what is missing.
- a killed driver: the journal holds every region a worker reported; the rerun (``fcnx
  predict --ray`` again) skips them. A worker whose run is gone (OUT's owner is another
  run) stops before its next band instead of writing into the new run's output.

Memory per worker is the local run's for one region: the tile rows in flight and
``WRITES_IN_FLIGHT`` bands of one column strip (windowed), or two planes read ahead
(whole planes); ``--batch`` is each worker's; ``--read-ahead`` does not apply (a region
reads its next tile row while the model runs). On a multi-node cluster the inputs, the
model and OUT must be on a filesystem every node sees, and fcnx installed on every node.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.ort import OrtOptions
from ..backends.registry import load
from ..intensity import Note, NoteCounter
from .config import PredictConfig
from .lock import check_owner
from .regions import Region, TimedSource
from .segmenter import Segmenter
from .volumes import ArrayPlan, ArrayRun, admit, make_writer, windowed

RESTARTS = 3  # an actor whose process or node died is started again this many times
ATTEMPTS = 3  # a region is run at most this many times (a dead actor's retries count)
IN_FLIGHT = 2  # regions queued on each actor, so it never waits for the driver
SAMPLE_SECONDS = 1.0  # how often the driver reads the object store's use

Report = Callable[..., None]  # (path, stage, error, regions=None): job.py's report


@dataclass(frozen=True)
class ArrayJob:
    """What a worker needs for the regions of one array input: paths (absolute) and the
    output's geometry, never pixels."""

    path: str  # the input (an HDF5 input: FILE.h5:/dataset)
    plan: ArrayPlan  # its output (format, target)
    band: int
    strip: int
    windowed: bool
    run_id: str
    out: str  # OUT, whose owner file says whether this run still owns it


class RegionWorker:
    """A Ray actor: the model loaded once, then one region after another (``run``)."""

    def __init__(self, config: PredictConfig, batch: int, options: OrtOptions) -> None:
        self.config = config
        self.backend: Backend = load(config.model, config.backend, options)
        self.segmenter = Segmenter(self.backend, batch, config.fit, config.tile, config.overlap, config.tta)
        self.label = f"{self.backend.name} ({self.backend.provider})"

    def run(self, job: ArrayJob, region: Region) -> dict[str, Any]:
        """Segment ``region`` into the output; returns the bands it made durable, the planes
        that failed, the 16-bit mapping's first note, and what it cost."""
        import ray

        from ..arrays.readers import open_array

        started = time.perf_counter()
        check_owner(Path(job.out), job.run_id)
        notes = NoteCounter()
        pieces = [0]

        def count(n: int) -> None:
            pieces[0] += n

        with open_array(job.path, self.config.axes, self.config.level) as raw:
            source = TimedSource(raw)
            card = self.segmenter.card
            writer = make_writer(
                job.plan, source.info, card, self.config.save_probs, job.run_id, job.band, job.strip, False
            )
            before = writer.done()
            run = ArrayRun(
                self.config, self.segmenter, source, writer, count, notes, job.windowed,
                lambda: check_owner(Path(job.out), job.run_id),
            )  # fmt: skip
            try:
                run.run([region])
            finally:
                writer.abort()  # closes its files; a region worker journals nothing
            written = (writer.done() - before) & set(region.bands(job.band, job.strip))
        return {
            "bands": sorted(written),
            "failed": {plane: f"{run.where(plane)}{why}" for plane, why in run.failed.items()},
            "note": notes.first[1] if notes.first else "",
            "backend": self.label,
            "node": ray.get_runtime_context().get_node_id()[:12],
            "cost": {
                "seconds": round(time.perf_counter() - started, 3),
                "pixels": region.pixels,
                "tiles": pieces[0],
                "write_seconds": round(run.write_seconds, 3),
                **source.cost(),
            },
        }


@dataclass
class _Input:
    """The driver's view of one array input being run."""

    job: ArrayJob
    plan: ArrayPlan
    writer: Any  # MaskWriter (journaling)
    regions: int  # all of them
    todo: int  # not yet done before this run
    open: int  # not yet resolved in this run
    failed: list[tuple[Region, str]]
    failed_planes: dict[int, str]


class _ObjectStore:
    """Samples the object store's use across the cluster while regions run: the peak."""

    PATTERN = re.compile(r"Plasma memory usage (\d+) MiB, (\d+) objects")

    def __init__(self) -> None:
        self.peak_bytes: int | None = None
        self.peak_objects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="fcnx-object-store", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            from ray._private.internal_api import memory_summary
        except ImportError:  # a Ray without it: the summary says None
            return
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                found = self.PATTERN.search(memory_summary(stats_only=True))
            except Exception:  # a cluster going down while sampling: keep the peak so far
                continue
            if found:
                used, objects = int(found[1]) << 20, int(found[2])
                self.peak_bytes = max(self.peak_bytes or 0, used)
                self.peak_objects = max(self.peak_objects, objects)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_regions(
    ray: Any,
    config: PredictConfig,
    segmenter: Segmenter,
    plans: list[ArrayPlan],
    report: Report,
    run: dict[str, Any],
    run_id: str,
    cpus: float,
    notes: Note | None = None,
    started: float | None = None,
) -> None:
    """The array inputs of a ``--ray`` job, region by region on ``config.workers`` actors
    (``cpus`` CPUs each); each input's outcome to ``report``, the regions' counts and
    costs into ``run["ray"]["regions"]`` (``started``: the run's start, perf_counter, from
    which ``seconds_to_first_result`` counts: Ray's fixed cost)."""
    started = time.perf_counter() if started is None else started
    from ..arrays.readers import open_array

    out = str(Path(config.out).resolve())
    inputs: list[_Input] = []
    queue: deque[tuple[_Input, Region, int]] = deque()  # (input, region, attempts so far)
    for plan in plans:
        try:
            with open_array(plan.item.path, config.axes, config.level) as source:
                info = source.info
                by_windows = windowed(info)
                writer = make_writer(plan, info, segmenter.card, config.save_probs, run_id)
                admit(segmenter, info, bool(config.save_probs), writer.strip)
                writer.begin()
                whole = ArrayRun(config, segmenter, source, writer, None, None, by_windows)
                regions = whole.regions(config.workers)
        except Exception as exc:
            report(plan.item.path, "read", " ".join((str(exc) or type(exc).__name__).split()))
            continue
        done = writer.done()
        todo = [r for r in regions if not set(r.bands(writer.band, writer.strip)) <= done]
        absolute = replace(plan, target=Path(plan.target).resolve())
        job = ArrayJob(
            str(Path(plan.item.path).resolve()), absolute, writer.band, writer.strip, by_windows, run_id, out
        )
        state = _Input(job, plan, writer, len(regions), len(todo), len(todo), [], {})
        inputs.append(state)
        queue.extend((state, region, 0) for region in todo)
    counts = {"total": sum(s.regions for s in inputs), "done_before": sum(s.regions - s.todo for s in inputs)}
    counts.update(run=0, failed=0, retried=0)
    cost = {
        "seconds": 0.0,
        "read_seconds": 0.0,
        "write_seconds": 0.0,
        "pixels": 0,
        "pixels_read": 0,
        "tiles": 0,
    }
    driver_seconds = 0.0
    stats: dict[str, Any] = {**counts, "cost": cost}
    run.setdefault("ray", {})["regions"] = stats
    for state in inputs:
        if not state.todo:
            _finish(state, report)
    if not queue:
        return

    worker = ray.remote(RegionWorker).options(
        num_cpus=cpus,
        num_gpus=config.gpus_per_worker,
        max_restarts=RESTARTS,
        max_task_retries=ATTEMPTS - 1,
        scheduling_strategy="SPREAD",
    )
    on_workers = replace(config, model=str(Path(config.model).resolve()))
    options = config.ort_options(threads=config.threads or max(1, int(cpus)))

    def start_actor() -> Any:
        return worker.remote(on_workers, segmenter.batch_size, options)

    actors = [start_actor() for _ in range(config.workers)]
    replacements = RESTARTS * config.workers  # new actors for ones Ray gave up on
    jobs = {id(state): ray.put(state.job) for state in inputs}
    flight: dict[Any, tuple[_Input, Region, int, int]] = {}  # ref -> (input, region, attempts, actor)
    load = [0] * len(actors)
    store = _ObjectStore()
    nodes: set[str] = set()
    labels: set[str] = set()
    first: tuple[float, int] | None = None  # seconds to the first region's result, and its pixels
    try:
        while queue or flight:
            while queue and min(load) < IN_FLIGHT:
                a = load.index(min(load))
                state, region, attempts = queue.popleft()
                flight[actors[a].run.remote(jobs[id(state)], region)] = (state, region, attempts, a)
                load[a] += 1
            ready, _ = ray.wait(list(flight), num_returns=1)
            ref = ready[0]
            state, region, attempts, a = flight.pop(ref)
            load[a] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # Ray gave up on this actor: another one
                if replacements > 0:
                    replacements -= 1
                    actors[a] = start_actor()
                    for key, (s, r, n, b) in list(flight.items()):  # its other regions went with it
                        if b == a:
                            del flight[key]
                            queue.appendleft((s, r, n))
                    load[a] = 0
                error = _reason(exc)
            except ray.exceptions.RayError as exc:  # the region's own error (RayTaskError)
                error = _reason(exc)
            else:
                error = ""
            handled = time.perf_counter()
            if error:
                if attempts + 1 < ATTEMPTS:
                    counts["retried"] += 1
                    queue.append((state, region, attempts + 1))
                    continue
                state.failed.append((region, error))
                counts["failed"] += 1
            else:
                state.writer.record([tuple(b) for b in result["bands"]])
                for plane, why in result["failed"].items():
                    state.failed_planes.setdefault(int(plane), why)
                if result["failed"]:
                    state.failed.append((region, next(iter(result["failed"].values()))))
                    counts["failed"] += 1
                if result["note"] and notes is not None:
                    notes(state.plan.item.path, result["note"])
                if first is None:
                    first = (time.perf_counter() - started, result["cost"]["pixels"])
                nodes.add(result["node"])
                labels.add(result["backend"])
                for key in cost:
                    cost[key] += result["cost"][key]
                counts["run"] += 1
            state.open -= 1
            driver_seconds += time.perf_counter() - handled  # per region: not the input's finish below
            if state.open == 0:
                _finish(state, report)
            stats.update(counts)
    finally:
        store.stop()
        for state in inputs:
            if state.open:
                state.writer.abort()  # what is journaled stays for the rerun
        for actor in actors:
            ray.kill(actor)
        stats.update(
            counts,
            nodes=len(nodes),
            driver_seconds_per_region=round(driver_seconds / max(1, counts["run"] + counts["failed"]), 5),
            object_store_peak_bytes=store.peak_bytes,
            object_store_peak_objects=store.peak_objects,
            seconds_to_first_result=None if first is None else round(first[0], 3),
            pixels_in_first_result=None if first is None else first[1],
        )
        for key, value in cost.items():
            cost[key] = round(value, 3) if isinstance(value, float) else value
        if labels:
            run["provider"] = ", ".join(
                sorted(labels | set(filter(None, run.get("provider", "").split(", "))))
            )


def _finish(state: _Input, report: Report) -> None:
    """One input's regions are all resolved: finish its output, or report what failed."""
    path = state.plan.item.path
    if state.failed:
        state.writer.abort()
        region, why = min(state.failed)
        more = f" ({len(state.failed)} of {state.regions} regions failed)" if len(state.failed) > 1 else ""
        regions = [{**r.bounds(), "reason": w} for r, w in sorted(state.failed)]
        stage = "read" if state.failed_planes else "infer"  # a plane that cannot be read, as a local run says
        report(path, stage, f"{region.describe()}: {why}{more}", regions=regions)
        return
    try:
        state.writer.finish()
    except Exception as exc:
        state.writer.abort()
        report(path, "write", " ".join((str(exc) or type(exc).__name__).split()))
        return
    report(path, "", "")


def _reason(exc: BaseException) -> str:
    """A Ray error as one line: the region's own exception's last line, or what happened."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:300]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]


__all__ = ["ArrayJob", "RegionWorker", "run_regions"]
