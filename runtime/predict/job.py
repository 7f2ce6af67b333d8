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
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..backends.base import Backend
from ..backends.registry import load, model_kind
from ..card import library_versions
from ..intensity import NoteCounter, note_line
from ..names import shown
from .config import PredictConfig
from .failures import FailureLog
from .inputs import InputFile, Task, check_outputs, collect_inputs
from .local import run_local
from .lock import OutputLock
from .manifest import (
    Manifest,
    claim_folder,
    fingerprint,
    record_outputs,
    remove_outputs,
    remove_stale_temp_files,
)
from .memory import check_batch
from .outputs import OVERLAY_SUFFIX, output_paths
from .ray import run_on_ray
from .segmenter import Segmenter
from .volumes import array_summary, plan_arrays, segment_array

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
        tiles = {"tiles": self.tiles} if self.tiles > self.bar.n else {}
        self.bar.set_postfix(**tiles, **({"failed": self.failed} if self.failed else {}), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _kinds(paths: list[Path]) -> list[str]:
    """What each file of ``output_paths`` holds: the mask first, then an overlay, then
    probabilities."""
    return ["mask" if i == 0 else "overlay" if p.name.endswith(OVERLAY_SUFFIX) and i == 1 else "probabilities"
            for i, p in enumerate(paths)]  # fmt: skip


def plan_tasks(
    out: Path, planned: list[Task], resume: bool, counts: Counts, failures: FailureLog
) -> list[Task]:
    """What to do, decided before the first image is read: an input any of whose outputs
    (mask, overlay, probabilities) is also an output of an earlier input, or would be a
    file where an earlier one needs a folder (or the reverse), is a failure naming both; so
    is one that a link inside OUT would send outside it. Inputs whose outputs all exist
    (resume) are skipped."""
    claimed: dict[Path, tuple[str, str]] = {}  # output -> (what it holds, the input it is for)
    folders: dict[Path, str] = {}  # folders below OUT that outputs need -> an input needing it
    root = os.path.realpath(out)
    leaves: dict[Path, str] = {}  # an output's folder -> where it really is, when outside OUT

    def outside(folder: Path) -> str:
        if folder not in leaves:
            real = os.path.realpath(folder)
            leaves[folder] = "" if real == root or real.startswith(root + os.sep) else real
        return leaves[folder]

    tasks = []
    for item, paths in planned:
        clash = ""
        for kind, path in zip(_kinds(paths), paths, strict=True):
            parents = [p for p in path.relative_to(out).parents if p != Path(".")]
            if real := outside(path.parent):  # a link in OUT: writing through it would leave OUT
                clash = (
                    f"its {kind} {shown(path)} would be written outside OUT, through a link to {shown(real)}"
                )
            elif path in claimed:
                other_kind, other = claimed[path]
                clash = f"its {kind} {shown(path)} is also the {other_kind} of {shown(other)}"
            elif path in folders:
                clash = f"its {kind} {shown(path)} is a folder of the outputs of {shown(folders[path])}"
            elif blocked := next((out / p for p in parents if out / p in claimed), None):
                owner = claimed[blocked][1]
                clash = (
                    f"its {kind} {shown(path)} needs a folder where {shown(blocked)} of {shown(owner)} goes"
                )
            if clash:
                break
        if clash:
            counts.failed += 1
            failures.record(
                item.path, "output", clash if "through a link" in clash else f"{clash}; rename one"
            )
            continue
        for kind, path in zip(_kinds(paths), paths, strict=True):
            claimed[path] = (kind, item.path)
            for parent in path.relative_to(out).parents:
                folders.setdefault(out / parent, item.path)
        if resume and all(_complete(p) for p in paths):
            counts.skipped += 1
            continue
        tasks.append((item, paths))
    return tasks


def _complete(path: Path) -> bool:
    """An output in place is complete: files and array outputs' folders are put there whole."""
    return path.is_file() or (path.suffix == ".zarr" and path.is_dir() and not path.is_symlink())


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
        check_batch(segmenter)  # once, up front: not the same failure for every image
        classes = segmenter.card_classes
        arrays = [item for item in inputs.files if item.array]
        unopened: list[tuple[InputFile, str]] = []  # array inputs that cannot be opened
        array_plans = plan_arrays(config, out, arrays, lambda item, why: unopened.append((item, why)))
        planned: list[Task] = [
            (
                item,
                output_paths(out, item.relative, config.format, config.overlay, config.save_probs, classes),
            )
            for item in inputs.files
            if not item.array
        ]
        planned += [(plan.item, plan.outputs) for plan in array_plans]
        check_outputs(out, inputs, [p for _, paths in planned for p in paths])  # before anything is written
        if config.ray:
            backend.close()
        with OutputLock(out) as lock:
            stale = remove_stale_temp_files(out)  # safe: holding the lock, no live run owns one
            manifest = Manifest(str(config.model), fingerprint(config.model), segmenter.describe())
            resume, replaced = claim_folder(out, manifest, config.overwrite)
            counts = Counts(total=len(inputs.files))
            failures = FailureLog(out)
            for item, why in unopened:
                counts.failed += 1
                failures.record(item.path, "read", why)
            tasks = plan_tasks(out, planned, resume, counts, failures)
            image_tasks = [task for task in tasks if not task[0].array]
            formats = {id(plan.item): plan for plan in array_plans}
            array_tasks = [formats[id(item)] for item, _ in tasks if item.array]
            record_outputs(out, [p for _, paths in tasks for p in paths])  # before any is written
            progress = Progress(len(tasks), config.progress)  # the bar's rate counts real work only

            def report(
                path: str, stage: str, error: str, regions: list[dict[str, Any]] | None = None
            ) -> None:
                if error:
                    counts.failed += 1
                    failures.record(path, stage, error, regions)
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
            notes = NoteCounter()  # the 16-bit mapping's warnings: counted, the first kept
            run_started = time.perf_counter()
            interruption: KeyboardInterrupt | None = None  # Ctrl-C, or the CLI's SIGTERM
            try:
                if not resume:  # --overwrite computes array outputs again, as it does image files
                    for plan in array_tasks:
                        remove_outputs([*plan.outputs, plan.target])
                if config.ray:
                    run_on_ray(config, segmenter, image_tasks, report, run, lock.run_id, notes, array_tasks)
                else:
                    run_local(config, segmenter, image_tasks, report, lock.run_id, progress.pieces, notes)
                    for plan in array_tasks:
                        segment_array(config, segmenter, plan, report, lock.run_id, progress.pieces, notes)
            except KeyboardInterrupt as exc:
                interruption = exc
            finally:
                progress.close()
                failures.close()
            seconds = time.perf_counter() - run_started
            summary = {
                "counts": asdict(counts),
                "seconds": round(seconds, 3),
                "images_per_second": round(counts.written / seconds, 3) if seconds > 0 else None,
                "interrupted": interruption is not None,
                "out": str(config.out),
                "model": str(config.model),
                "model_sha256": manifest.model_sha256,
                **run,
                "workers": config.workers,
                "format": config.format,
                "overlay": config.overlay,
                "arrays": array_summary(array_plans),
                "intensity": {
                    "mapping": config.intensity_for(segmenter.card),
                    "from": "--intensity" if config.intensity else "model card",
                    "warnings": notes.to_dict(),
                },
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
    if interruption is not None:
        raise interruption
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
        f"outputs: {shown(summary['out'])}",
    ]
    if c["failed"]:
        lines.append(f"failures: {shown(Path(summary['out']) / 'failures.jsonl')}")
    skipped = summary.get("skipped_inputs") or []
    if skipped:
        listed = "; ".join(shown(s) for s in skipped[:3]) + (
            f"; and {len(skipped) - 3} more (summary.json)" if len(skipped) > 3 else ""
        )
        lines.append(f"not taken as inputs: {len(skipped)} ({listed})")
    warning = note_line(summary.get("intensity", {}).get("warnings", {}), shown)
    if warning:
        lines.append(warning)
    return "\n".join(lines)
