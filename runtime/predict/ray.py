"""Ray Data batch segmentation: ``fcnx predict --ray`` and its building blocks.

::

    file list -> read_images -----------> SegmentationPredictor -----------> write_masks --> driver
                 (tasks: read, decode)    (actors: the model loaded once     (tasks: atomic     (counts,
                                           each; prepare, infer, restore)     mask/overlay)      failures)

The same reading, preparing, inference, restoring and writing code as a local
``fcnx predict`` runs in every stage, so the outputs are byte-identical; only the
scheduling is Ray's. Stacks, volumes and huge images go by regions instead
(ray_regions.py): no pixels through the object store. Ray is imported only when a Ray function runs (``pip install
"fcnx[ray]"``). On a multi-node cluster, the inputs, the model and OUT must be on a
filesystem every node sees, and fcnx must be installed on every node.

The stages are public, for your own Ray pipelines::

    import ray
    from fcnx.runtime import SegmentationPredictor, read_images

    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(read_images, fn_kwargs={"channels": 1}, batch_size=8)  # tiled like fcnx predict
    ds = ds.map_batches(
        SegmentationPredictor,
        fn_constructor_kwargs={"model": "model.onnx"},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=8,
        num_gpus=0,
    )
    for row in ds.iter_rows():  # row["path"], row["mask"] (uint8 class ids), row["error"]
        ...
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import MissingExtra
from ..backends.ort import OrtOptions, usable_cores
from ..backends.registry import load
from ..images import MAX_PIXELS, read_image
from ..intensity import Note, NoteCounter
from .config import PredictConfig
from .failures import Report, describe_error
from .inputs import Task
from .outputs import output_paths, write_outputs
from .plans import Plan
from .ray_regions import run_regions
from .segmenter import Segmenter
from .volumes import ArrayPlan

__all__ = ["SegmentationPredictor", "read_images", "run_on_ray", "write_masks"]

READ_WRITE_CPUS = 0.5  # per read/write task: decoding and encoding are light next to inference


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of arrays (np.array would try to stack same-shape ones)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _column(batch: dict[str, np.ndarray], name: str, default: str = "") -> list[str]:
    n = len(next(iter(batch.values())))
    return [str(v) for v in batch[name]] if name in batch else [default] * n


def read_images(
    batch: dict[str, np.ndarray], channels: int, max_pixels: int = MAX_PIXELS, intensity: str = "full"
) -> dict[str, np.ndarray]:
    """Ray Data stage: ``path`` -> ``image`` (uint8 (H, W, C), C = ``channels``, EXIF
    orientation applied, bomb-guarded, 16-bit mapped by ``intensity``), ``error`` ("" or
    why the file is unreadable), ``stage`` and ``note`` ("" or the mapping's warning
    about the image). A bad file gets an empty image and its reason; the batch goes on."""
    images, errors, notes = [], [], []
    for path in _column(batch, "path"):
        said = NoteCounter()
        try:
            images.append(read_image(path, channels, max_pixels, None, intensity, said))
            errors.append("")
        except Exception as exc:  # one bad file never stops the run
            images.append(np.zeros((0, 0, channels), np.uint8))
            errors.append(describe_error(exc))
        notes.append(said.first[1] if said.first else "")
    return {
        **batch,
        "image": _objects(images),
        "error": np.array(errors),
        "stage": np.array(["read"] * len(errors)),
        "note": np.array(notes),
    }


class SegmentationPredictor:
    """Ray Data actor: loads the model once, then segments batches of ``image`` rows.

    Adds ``mask`` (uint8 (H, W) class ids at each image's own size), ``error`` and
    ``stage`` ("read" for an image that could not be prepared, like a local run), and
    ``backend`` (and with ``probs=True`` ``probs``, (H, W, K) for ``--save-probs``); drops
    ``image`` unless ``keep_image``; tiles like ``fcnx predict``. Rows that arrive with an
    ``error`` pass through with an empty mask. Arguments are those of
    ``fcnx.runtime.load`` and ``Segmenter``.
    """

    def __init__(
        self,
        model: str,
        backend: str = "auto",
        batch: int | None = None,
        fit: str = "auto",
        threads: int | None = None,
        keep_image: bool = False,
        ort_options: OrtOptions | None = None,
        tile: str = "auto",
        overlap: int | None = None,
        tta: str = "off",
        probs: bool = False,
    ) -> None:
        options = ort_options or OrtOptions(threads=threads)
        self.probs = probs
        self.backend = load(model, backend, options)
        self.segmenter = Segmenter(self.backend, batch, fit, tile, overlap, tta)
        self.keep_image = keep_image
        self.label = f"{self.backend.name} ({self.backend.provider})"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = list(batch["image"])
        errors = _column(batch, "error")
        stages = _column(batch, "stage", "read")
        masks: list[np.ndarray] = [np.zeros((0, 0), np.uint8)] * len(images)
        probs: list[np.ndarray | None] = [None] * len(images)
        paths = _column(batch, "path", "<array>")
        plans: list[tuple[int, Plan]] = []
        for i, image in enumerate(images):
            if errors[i]:
                continue
            try:
                plans.append((i, self.segmenter.plan(np.asarray(image), paths[i])))
            except Exception as exc:
                errors[i], stages[i] = describe_error(exc), "read"
        results = self.segmenter.stream(self.segmenter.by_shape(plans), self.probs, np.float16)
        for i, _, result in results:
            if isinstance(result, Exception):
                errors[i], stages[i] = describe_error(result), "infer"
            else:
                masks[i], probs[i] = result.mask, result.probs
        out = {k: v for k, v in batch.items() if k != "image" or self.keep_image}
        if self.probs:
            out["probs"] = _objects(probs)
        out.update(
            mask=_objects(masks),
            error=np.array(errors),
            stage=np.array(stages),
            backend=np.array([self.label] * len(images)),
        )
        return out


def write_masks(
    batch: dict[str, np.ndarray],
    out: str,
    format: str,
    overlay: bool,
    palette: tuple[tuple[int, int, int], ...],
    run_id: str = "",
    probs: str | None = None,
    classes: int = 0,
) -> dict[str, np.ndarray]:
    """Ray Data stage: write each row's ``mask`` (and overlay of its ``image``) under
    ``out`` at its ``relative`` path, atomically. Returns status rows only: ``path``,
    ``error``, ``stage``, ``backend``, ``note``, so no pixels travel back to the driver."""
    errors = _column(batch, "error")
    stages = _column(batch, "stage", "read")
    paths = _column(batch, "path")
    for i, relative in enumerate(_column(batch, "relative")):
        if errors[i]:
            continue
        try:
            image = batch["image"][i] if overlay else None
            files = output_paths(Path(out), relative, format, overlay, probs, classes)
            kept = batch["probs"][i] if probs else None
            write_outputs(files, batch["mask"][i], palette, image, run_id, kept)
        except Exception as exc:
            errors[i], stages[i] = describe_error(exc), "write"
    return {
        "path": np.array(paths),
        "error": np.array(errors),
        "stage": np.array(stages),
        "backend": np.array(_column(batch, "backend")),
        "note": np.array(_column(batch, "note")),
    }


# -- fcnx predict --ray -------------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise MissingExtra('--ray needs Ray Data, which is not installed: pip install "fcnx[ray]"') from None
    return ray


def _cpus_per_worker(config: PredictConfig, cluster_cpus: float, started_here: bool) -> float:
    """CPUs each model replica reserves (and its onnxruntime threads). A local cluster
    fcnx started shares this machine's cores among the replicas; on a cluster we joined,
    each takes one CPU or its share, leaving one CPU for the read and write tasks."""
    if config.cpus_per_worker is not None:
        return config.cpus_per_worker
    if started_here and joins(config) is None:
        return _local_share(config)
    return min(1.0, max(0.25, (cluster_cpus - 2 * READ_WRITE_CPUS) / config.workers))


def _local_share(config: PredictConfig) -> float:
    """A local cluster's CPUs per replica: --cpus-per-worker, or this machine's cores shared."""
    return config.cpus_per_worker or max(1.0, usable_cores() / config.workers)


def _check_fits(config: PredictConfig, cpus: float, cluster: dict[str, float]) -> None:
    """Ray would wait forever for resources a cluster does not have: say so instead."""
    need_cpus = config.workers * cpus + 2 * READ_WRITE_CPUS
    if need_cpus > cluster.get("CPU", 0.0) + 1e-9:
        raise ValueError(
            f"--workers {config.workers} x {cpus:g} CPUs (+ {2 * READ_WRITE_CPUS:g} for reading and writing) "
            f"needs {need_cpus:g} CPUs; the Ray cluster has {cluster.get('CPU', 0.0):g}: lower --workers or "
            "--cpus-per-worker"
        )
    need_gpus = config.workers * config.gpus_per_worker
    if need_gpus > cluster.get("GPU", 0.0) + 1e-9:
        raise ValueError(
            f"--workers {config.workers} x --gpus-per-worker {config.gpus_per_worker:g} needs {need_gpus:g} "
            f"GPUs; the Ray cluster has {cluster.get('GPU', 0.0):g}"
        )


def joins(config: PredictConfig) -> str | None:
    """The cluster ``--ray`` joins: ``--address``, else ``RAY_ADDRESS`` (what ``ray job submit``
    sets), else None: fcnx starts a local cluster of its own. Never the cluster that
    happens to run on this machine (Ray's own default), whose CPUs fcnx would not know."""
    return config.address or os.environ.get("RAY_ADDRESS") or None


def _start(ray: Any, config: PredictConfig) -> bool:
    """Join the cluster ``joins`` names or start a local one (unless Ray is already up in
    this process, as in tests or a notebook). Returns True when this call started Ray."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    address = joins(config)
    if address is None:
        # Ray's CPU count is for scheduling: room for every replica plus one read and one write task.
        cpus = _local_share(config)
        kwargs["num_cpus"] = int(np.ceil(config.workers * cpus + 2 * READ_WRITE_CPUS))
    kwargs["address"] = address or "local"
    ray.init(**kwargs)
    return True


def run_on_ray(
    config: PredictConfig,
    segmenter: Segmenter,
    tasks: list[Task],
    report: Report,
    run: dict[str, Any],
    run_id: str = "",
    notes: Note | None = None,
    arrays: list[ArrayPlan] | None = None,
) -> None:
    """The Ray runner of a predict job (job.py plans it, claims OUT and writes the summary):
    the planned image files through a Ray Data pipeline, the array inputs (``arrays``) by
    regions on actors (ray_regions.py), each input's outcome to ``report``, the 16-bit
    mapping's remarks to ``notes``, and what the summary says about the cluster into ``run``."""
    ray = import_ray()
    run.update(backend="ray", provider="-", backend_notes=[])
    if not tasks and not arrays:
        return
    run_started = time.perf_counter()
    started_ray = _start(ray, config)
    labels: set[str] = set()
    first_row = 0.0
    try:
        cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
        cpus = _cpus_per_worker(config, cluster.get("CPU", 0.0), started_ray)
        run["ray"] = {
            "address": joins(config) or "local",
            "cluster_resources": cluster,
            "replicas": config.workers,
            "cpus_per_replica": cpus,
            "gpus_per_replica": config.gpus_per_worker,
            "version": ray.__version__,
            "seconds_to_first_result": None,
        }
        _check_fits(config, cpus, cluster)
        if arrays:
            run_regions(ray, config, segmenter, arrays, report, run, run_id, cpus, notes, run_started)
        if not tasks:
            return
        ray.data.DataContext.get_current().enable_progress_bars = False  # fcnx shows its own
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled"
        # Workers get absolute paths (their working folder is not ours); reports keep the user's.
        shown = {str(Path(item.path).resolve()): item.path for item, _ in tasks}
        rows = [{"path": str(Path(item.path).resolve()), "relative": item.relative} for item, _ in tasks]
        for row in _dataset(ray, rows, config, segmenter, cpus, run_id).iter_rows():
            first_row = first_row or time.perf_counter()
            if row["backend"]:
                labels.add(row["backend"])
                run["provider"] = ", ".join(sorted(labels))
            if row["note"] and notes is not None:
                notes(shown.get(row["path"], row["path"]), row["note"])
            report(shown.get(row["path"], row["path"]), row["stage"], row["error"])
    finally:
        if first_row and "ray" in run:
            # cluster start, actors up and models loaded, first batch through: Ray's fixed cost
            run["ray"]["seconds_to_first_result"] = round(first_row - run_started, 3)
        if started_ray:
            ray.shutdown()


def _dataset(
    ray: Any,
    rows: list[dict[str, str]],
    config: PredictConfig,
    segmenter: Segmenter,
    cpus: float,
    run_id: str,
) -> Any:
    batch = segmenter.batch_size
    channels, palette = segmenter.card.input_channels, segmenter.card.palette
    dataset = ray.data.from_items(rows)
    dataset = dataset.map_batches(
        read_images,
        fn_kwargs={
            "channels": channels,
            "max_pixels": config.max_pixels,
            "intensity": config.intensity_for(segmenter.card),
        },
        batch_size=batch,
        num_cpus=READ_WRITE_CPUS,
    )
    options = config.ort_options(threads=config.threads or max(1, int(cpus)))
    dataset = dataset.map_batches(
        SegmentationPredictor,
        fn_constructor_kwargs={
            "model": str(Path(config.model).resolve()),
            "backend": config.backend,
            "batch": segmenter.batch_size,
            "fit": config.fit,
            "tile": config.tile,
            "overlap": config.overlap,
            "tta": config.tta,
            "keep_image": config.overlay,
            "probs": bool(config.save_probs),
            "ort_options": options,
        },
        compute=ray.data.ActorPoolStrategy(size=config.workers),
        batch_size=batch,
        num_cpus=cpus,
        num_gpus=config.gpus_per_worker,
    )
    return dataset.map_batches(
        write_masks,
        fn_kwargs={
            "out": str(Path(config.out).resolve()),
            "format": config.format,
            "overlay": config.overlay,
            "palette": palette,
            "run_id": run_id,
            "probs": config.save_probs,
            "classes": segmenter.card_classes,
        },
        batch_size=batch,
        num_cpus=READ_WRITE_CPUS,
    )
