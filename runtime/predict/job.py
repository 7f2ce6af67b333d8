"""``predict_folder``: the life of one ``fcnx predict`` job, whoever runs it.

Collect the inputs, refuse an output folder that overlaps them (inputs.py), load the
model, lock the output folder for the run (lock.py) and claim it for the model
(manifest.py), plan the work (name collisions are failures; outputs already there are skipped on a
rerun), run it with a progress bar — on this machine's threads (local.py) or on Ray
Data (ray.py), which only execute the planned tasks and report each file back — then
write ``failures.jsonl`` and ``summary.json``. A runner never repeats any of this.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..backends.base import Backend
from ..backends.registry import load, model_kind
from ..card import library_versions
from .config import PredictConfig
from .failures import FailureLog
from .inputs import Task, check_outputs, collect_inputs
from .local import run_local
from .lock import OutputLock
from .manifest import Manifest, claim_folder, fingerprint, record_outputs, remove_stale_temp_files
from .outputs import output_paths
from .ray import run_on_ray
from .segmenter import Segmenter

EXIT_OK = 0
EXIT_FAILURES = 3  # the run completed, some files failed (see failures.jsonl)


@dataclass
class Counts:
    total: int = 0
    written: int = 0
    skipped: int = 0  # outputs already there from an earlier run of the same model
    failed: int = 0


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, disable=None)
        self.failed = 0
        self.tiles = 0

    def update(self, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.failed = failed
            self._postfix()

    def pieces(self, count: int) -> None:
        """``count`` more tiles (or whole images) through the model: a large image's progress."""
        self.tiles += count
        if self.bar is not None and self.tiles > self.bar.n:  # images of several tiles: show them move
            self._postfix()
            self.bar.refresh()

    def _postfix(self) -> None:
        shown = {"tiles": self.tiles} if self.tiles > self.bar.n else {}
        self.bar.set_postfix(**shown, **({"failed": self.failed} if self.failed else {}), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plan_tasks(planned: list[Task], resume: bool, counts: Counts, failures: FailureLog) -> list[Task]:
    """What to do, decided before the first image is read: name collisions are
    failures, inputs whose outputs all exist (resume) are skipped."""
    claimed: dict[str, str] = {}  # output path -> the input that got it
    tasks = []
    for item, paths in planned:
        first = str(paths[0])
        if first in claimed:
            counts.failed += 1
            failures.record(item.path, "output", f"same output {paths[0]} as {claimed[first]}; rename one")
            continue
        claimed[first] = item.path
        if resume and all(p.is_file() for p in paths):
            counts.skipped += 1
            continue
        tasks.append((item, paths))
    return tasks


def _driver_backend(config: PredictConfig) -> Backend:
    """The model as this process loads it. With Ray the driver only checks the model and
    the flags (an ONNX on the CPU provider, so the driver needs no GPU); the workers load
    their own."""
    if not config.ray:
        return load(config.model, config.backend, config.ort_options())
    backend = "ort-cpu" if model_kind(config.model) == "onnx" else config.backend
    return load(config.model, backend, config.ort_options(threads=1))


def segmenter_for(backend: Backend, config: PredictConfig) -> Segmenter:
    """The Segmenter a predict job runs, from its flags (the Ray actors build the same)."""
    segmenter = Segmenter(backend, config.batch, config.fit, config.tile, config.overlap, config.tta)
    if config.save_probs and not segmenter.has_probs:
        raise ValueError(
            f"--save-probs: {config.model} has no probabilities output (exported with --output mask); "
            "re-export with --output both"
        )
    return segmenter


def predict_folder(config: PredictConfig, backend: Backend | None = None) -> dict[str, Any]:
    """Run the whole job; returns the summary (also written to OUT/summary.json).
    ``backend``: an already loaded model to run on (local runs only)."""
    if config.ray and backend is not None:
        raise ValueError("with ray=True every Ray worker loads the model itself; pass no backend")
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    inputs = collect_inputs(config.inputs)
    out = Path(config.out)
    own_backend = backend is None
    backend = backend or _driver_backend(config)
    try:
        segmenter = segmenter_for(backend, config)
        classes = segmenter.card_classes
        planned = [
            (
                item,
                output_paths(out, item.relative, config.format, config.overlay, config.save_probs, classes),
            )
            for item in inputs.files
        ]
        check_outputs(out, inputs, [p for _, paths in planned for p in paths])  # before anything is written
        if config.ray:
            backend.close()
        with OutputLock(out) as lock:
            stale = remove_stale_temp_files(out)  # safe: holding the lock, no live run owns one
            manifest = Manifest(str(config.model), fingerprint(config.model), segmenter.describe())
            resume, replaced = claim_folder(out, manifest, config.overwrite)
            counts = Counts(total=len(inputs.files))
            failures = FailureLog(out)
            tasks = plan_tasks(planned, resume, counts, failures)
            record_outputs(out, [p for _, paths in tasks for p in paths])  # before any is written
            progress = Progress(len(tasks), config.progress)  # the bar's rate counts real work only

            def report(path: str, stage: str, error: str) -> None:
                if error:
                    counts.failed += 1
                    failures.record(path, stage, error)
                else:
                    counts.written += 1
                progress.update(counts.failed)

            run: dict[str, Any] = {
                "backend": backend.name,
                "provider": backend.provider,
                "backend_notes": list(backend.notes),
                "batch": segmenter.batch_size,
                "fit": segmenter.fit,
                "tile": list(segmenter.tile) if segmenter.tile else None,
                "overlap": segmenter.overlap,
                "tta": segmenter.tta,
            }
            run_started = time.perf_counter()
            interrupted = False
            try:
                if config.ray:
                    run_on_ray(config, segmenter, tasks, report, run, lock.run_id)
                else:
                    run_local(config, segmenter, tasks, report, lock.run_id, progress.pieces)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                progress.close()
                failures.close()
            seconds = time.perf_counter() - run_started
            summary = {
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
                "skipped_inputs": inputs.skipped,
                "replaced_outputs_of_another_model": replaced,
                "stale_temp_files_removed": stale,
                "run_id": lock.run_id,
                "started_at": started_at,
                "wall_seconds": round(time.perf_counter() - started, 3),
                "versions": library_versions(
                    "fcnx", "numpy", "opencv-python-headless", "pillow", "onnxruntime", "onnxruntime-gpu",
                    "tensorrt", "ray",
                ),
            }  # fmt: skip
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    finally:
        if own_backend:
            backend.close()
    if interrupted:
        raise KeyboardInterrupt
    return summary


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
    skipped = summary.get("skipped_inputs") or []
    if skipped:
        shown = "; ".join(skipped[:3]) + (
            f"; and {len(skipped) - 3} more (summary.json)" if len(skipped) > 3 else ""
        )
        lines.append(f"not taken as inputs: {len(skipped)} ({shown})")
    return "\n".join(lines)
