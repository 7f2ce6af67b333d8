"""``fcnx predict``: segment folders of images with a pipeline, not a loop.

::

    reader threads            main thread                writer threads
    read + decode + prepare -> batch + infer (backend) -> restore size + encode + atomic write
          (bounded window)                                    (bounded window)

Readers and writers are thread pools with a bounded number of images in flight, so
memory stays flat however many files there are, and OpenCV/Pillow/onnxruntime all
release the GIL, so decoding and encoding overlap inference. A file that cannot be
read, decoded or written is recorded in ``failures.jsonl`` with the reason and the
run goes on. Outputs keep the inputs' relative paths; a rerun resumes (see
manifest.py). ``summary.json`` says what happened and how fast.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .backend import Backend
from .card import library_versions
from .flags import opt
from .images import ImageError, read_image
from .inputs import InputFile, collect_inputs
from .load import BACKENDS, load
from .manifest import Manifest, claim_folder, fingerprint, remove_stale_temp_files
from .ort_backend import OrtOptions
from .outputs import FORMATS, output_paths, write_outputs
from .segmenter import FITS, Prepared, Segmenter

EXIT_OK = 0
EXIT_FAILURES = 3  # the run completed, some files failed (see failures.jsonl)


@dataclass(frozen=True)
class PredictConfig:
    model: str = opt("", "a .onnx, .engine, .keras file or training run folder", cli=False)
    inputs: tuple[str, ...] = opt((), "folders, globs, image files or text files of paths", cli=False)
    out: str = opt("", "output folder", cli=False)
    batch: int | None = opt(None, "images per inference batch (default: 8, or the model's fixed batch)")
    backend: str = opt("auto", "inference backend", choices=BACKENDS)
    workers: int = opt(
        2, "threads reading/decoding and (as many) encoding/writing images; with --ray: model replicas"
    )
    format: str = opt("png", "mask file format: palette PNG of class ids, or .npy", choices=FORMATS)
    overlay: bool = opt(False, "also write IMAGE.overlay.jpg: the image tinted by class")
    overwrite: bool = opt(False, "redo every output, also those of another model in OUT")
    fit: str = opt("auto", "fitting images to a fixed-size model: resize, or pad (letterbox)", choices=FITS)
    progress: bool = opt(True, "progress bar on the terminal")
    threads: int | None = opt(None, "onnxruntime CPU threads (default: the usable cores)")
    cuda_graph: bool = opt(False, "ort-cuda: replay a captured CUDA graph (fixed-batch exports only)")
    trt_cache: str | None = opt(
        None, "ort-trt: engine and timing cache folder (default: .trt-cache next to the ONNX)", metavar="DIR"
    )

    ray: bool = opt(False, 'run on Ray Data (pip install "fcnx[ray]"): a local cluster, or --address')
    address: str | None = opt(
        None,
        "--ray: the cluster to join, e.g. ray://head:10001 or auto (default: start a local one)",
        metavar="ADDR",
    )
    gpus_per_worker: float = opt(0.0, "--ray: GPUs per model replica (Ray actor)")
    cpus_per_worker: float | None = opt(
        None, "--ray: CPUs per model replica (default: a local cluster's cores / --workers, else 1)"
    )

    def ort_options(self) -> OrtOptions:
        return OrtOptions(threads=self.threads, cuda_graph=self.cuda_graph, trt_cache=self.trt_cache)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {self.batch}")
        if not self.ray:
            given = [f for f in ("address", "cpus_per_worker") if getattr(self, f) is not None]
            given += ["gpus_per_worker"] if self.gpus_per_worker else []
            if given:
                flags = ", ".join("--" + f.replace("_", "-") for f in given)
                raise ValueError(f"{flags} only apply with --ray")
        if self.gpus_per_worker < 0 or (self.cpus_per_worker is not None and self.cpus_per_worker <= 0):
            raise ValueError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")


@dataclass
class Counts:
    total: int = 0
    written: int = 0
    skipped: int = 0  # outputs already there from an earlier run of the same model
    failed: int = 0


class FailureLog:
    """``failures.jsonl``, one JSON object per failed file, streamed to a temp file in
    OUT and put in place at the end (also after an interrupt)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "failures.jsonl"
        self._context = atomic_path(self.path)
        self._tmp = self._context.__enter__()
        self._file = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.count = 0

    def record(self, path: str, stage: str, reason: str) -> None:
        self._file.write(json.dumps({"path": path, "stage": stage, "reason": reason}) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()
        self._context.__exit__(None, None, None)


@dataclass(frozen=True)
class _Decoded:
    item: InputFile
    paths: list[Path]
    prepared: Prepared | None = None
    image: np.ndarray | None = None  # kept for overlays only
    error: str = ""


def _bounded_map(
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


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ImageError):
        return exc.reason
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, disable=None)

    def update(self, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if failed:
                self.bar.set_postfix(failed=failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def predict_folder(config: PredictConfig, backend: Backend | None = None) -> dict[str, Any]:
    """Run the whole job; returns the summary (also written to OUT/summary.json).
    With ``config.ray`` the same job runs on Ray Data (fcnx.runtime.ray)."""
    if config.ray:
        if backend is not None:
            raise ValueError("with ray=True every Ray worker loads the model itself; pass no backend")
        from .ray import predict_with_ray

        return predict_with_ray(config)
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    items = collect_inputs(config.inputs)
    out = Path(config.out)
    own_backend = backend is None
    backend = backend or load(config.model, config.backend, config.ort_options())
    try:
        segmenter = Segmenter(backend, config.batch, config.fit)
        manifest, resume, stale = open_output(config, segmenter.fit)
        counts, seconds, interrupted = _run(config, segmenter, items, out, resume)
    finally:
        if own_backend:
            backend.close()
    run = {
        "backend": backend.name,
        "provider": backend.provider,
        "backend_notes": list(getattr(backend, "notes", [])),
        "batch": segmenter.batch_size,
        "fit": segmenter.fit,
    }
    summary = build_summary(config, counts, seconds, interrupted, manifest, stale, started, started_at, run)
    return finish(summary, out, interrupted)


def open_output(config: PredictConfig, fit: str) -> tuple[Manifest, bool, int]:
    """Create OUT, claim it for this model (resume: True when it already holds this
    model's outputs), and remove temp files an interrupted run left."""
    out = Path(config.out)
    manifest = Manifest(str(config.model), fingerprint(config.model), fit)
    out.mkdir(parents=True, exist_ok=True)
    resume = claim_folder(out, manifest, config.overwrite)
    return manifest, resume, remove_stale_temp_files(out)


def build_summary(
    config: PredictConfig,
    counts: Counts,
    seconds: float,
    interrupted: bool,
    manifest: Manifest,
    stale: int,
    started: float,
    started_at: str,
    run: dict[str, Any],
) -> dict[str, Any]:
    """summary.json. ``run`` is what the runner knows: backend, provider, backend_notes,
    batch, fit (and for Ray, the cluster)."""
    return {
        "counts": asdict(counts),
        "seconds": round(seconds, 3),
        "images_per_second": round(counts.written / seconds, 3) if seconds > 0 else None,
        "interrupted": interrupted,
        "out": str(config.out),
        "model": str(config.model),
        "model_sha256": manifest.model_sha256,
        **run,
        "workers": config.workers,
        "format": config.format,
        "overlay": config.overlay,
        "stale_temp_files_removed": stale,
        "started_at": started_at,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "versions": library_versions(
            "fcnx", "numpy", "opencv-python-headless", "pillow", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "ray",
        ),
    }  # fmt: skip


def finish(summary: dict[str, Any], out: Path, interrupted: bool) -> dict[str, Any]:
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    return summary


def plan_jobs(
    items: list[InputFile],
    out: Path,
    config: PredictConfig,
    resume: bool,
    counts: Counts,
    failures: FailureLog,
) -> list[tuple[InputFile, list[Path]]]:
    """What to do, decided before the first image is read: name collisions are
    failures, inputs whose outputs all exist (resume) are skipped."""
    claimed: dict[str, str] = {}  # output path -> the input that got it
    jobs = []
    for item in items:
        paths = output_paths(out, item.relative, config.format, config.overlay)
        first = str(paths[0])
        if first in claimed:
            counts.failed += 1
            failures.record(item.path, "output", f"same output {paths[0]} as {claimed[first]}; rename one")
            continue
        claimed[first] = item.path
        if resume and all(p.is_file() for p in paths):
            counts.skipped += 1
            continue
        jobs.append((item, paths))
    return jobs


def _run(
    config: PredictConfig, segmenter: Segmenter, items: list[InputFile], out: Path, resume: bool
) -> tuple[Counts, float, bool]:
    counts = Counts(total=len(items))
    failures = FailureLog(out)
    palette = segmenter.card.palette

    def read(job: tuple[InputFile, list[Path]]) -> _Decoded:
        item, paths = job
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
            write_outputs(decoded.paths, mask, palette, decoded.image)
            return decoded, ""
        except Exception as exc:
            return decoded, describe_error(exc)

    def good(decoded: Iterator[_Decoded]) -> Iterator[tuple[_Decoded, Prepared]]:
        for d in decoded:
            if d.error:
                counts.failed += 1
                failures.record(d.item.path, "read", d.error)
                progress.update(counts.failed)
            else:
                assert d.prepared is not None
                yield d, d.prepared

    jobs = plan_jobs(items, out, config, resume, counts, failures)
    window = max(2 * segmenter.batch_size, 4 * config.workers)
    progress = Progress(len(jobs), config.progress)  # the bar's rate counts real work only
    started = time.perf_counter()
    interrupted = False
    try:
        with (
            ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-read") as readers,
            ThreadPoolExecutor(config.workers, thread_name_prefix="fcnx-write") as writers,
        ):
            decoded = _bounded_map(readers, read, iter(jobs), window)
            inferred = ((d, outputs) for d, _, outputs in segmenter.stream(good(decoded)))
            for d, error in _bounded_map(writers, write, inferred, window):
                if error:
                    counts.failed += 1
                    failures.record(d.item.path, "write", error)
                else:
                    counts.written += 1
                progress.update(counts.failed)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        failures.close()
    return counts, time.perf_counter() - started, interrupted


def exit_code(summary: dict[str, Any]) -> int:
    return EXIT_FAILURES if summary["counts"]["failed"] else EXIT_OK


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    rate = summary["images_per_second"]
    lines = [
        f"{c['written']} written, {c['skipped']} already done, {c['failed']} failed of {c['total']} "
        f"in {summary['seconds']:.1f} s ({rate or 0:.2f} images/s) on {summary['backend']} "
        f"({summary['provider']}), batch {summary['batch']}",
        f"outputs: {summary['out']}",
    ]
    if c["failed"]:
        lines.append(f"failures: {Path(summary['out']) / 'failures.jsonl'}")
    return "\n".join(lines)
