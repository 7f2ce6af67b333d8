"""``fcnx bench``: every model file on every backend that can load it, at every batch
size, timed side by side in one run.

For each batch size all contenders are timed round-robin (bench/timing.py), so the
"x Keras" column is a ratio measured in the same minutes on the same machine. The
machine's ceilings (bench/ceiling.py FP32; bench/ov_ceiling.py FP32, BF16, INT8 through
OpenVINO) are measured in the same run, so every row also says how close it gets to
this machine's matmul peak in its own precision. Backends that keep several batches in
flight (ov-cpu) get images/s from ``infer_stream`` and latencies from one-at-a-time calls. A backend that cannot
load or fails gets a row saying why; the run goes on.

``--pipeline`` times the whole ``fcnx predict`` path (read, decode, infer, encode,
write) over a folder of PNGs against ``Segmenter.predict`` on the same images already
decoded: the price of the file pipeline.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..backends.base import Backend, BackendError, native_size
from ..backends.registry import backend_spec, load, model_kind
from ..card import ModelCard
from ..images import dataset_images, list_images, read_image
from ..predict.config import PredictConfig
from ..predict.job import predict_folder
from ..predict.segmenter import Segmenter
from .ceiling import cpu_ceiling, gpu_ceiling
from .config import BenchConfig, BenchRow
from .machine import describe_machine
from .ov_ceiling import openvino_ceilings
from .timing import Timing, TimingConfig, time_side_by_side


@dataclass
class Contender:
    model: str
    backend: Backend
    card: ModelCard
    images: dict[int, np.ndarray]  # batch size -> the batch it runs


def _gflops(card: ModelCard) -> float | None:
    value = card.export.get("gflops_per_image")
    return float(value) if isinstance(value, (int, float)) else None


def source_images(config: BenchConfig, channels: int, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """``count`` uint8 (H, W, C) images at the model's size: real ones (cycled) or seeded random."""
    if config.data:
        files = dataset_images(config.data, "images to benchmark with")
        decoded = [read_image(p, channels) for p in files]
        out = []
        for i in range(count):
            image = decoded[i % len(decoded)]
            resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            out.append(resized.reshape(size[0], size[1], channels))
        return out
    rng = np.random.default_rng(config.seed)
    return [rng.integers(0, 256, (*size, channels), dtype=np.uint8) for _ in range(count)]


def _status_row(model: str, backend: str, batch: int, status: str, reason: str, **kw: Any) -> BenchRow:
    return BenchRow(model=model, backend=backend, batch=batch, status=status, reason=reason, **kw)


def _describe(card: ModelCard, backend: Backend, size: tuple[int, int]) -> dict[str, Any]:
    return {
        "provider": backend.provider,
        "arch": card.architecture,
        "precision": card.precision,
        "input": f"{size[0]}x{size[1]}x{card.input_channels}",
        "gflops_per_image": _gflops(card),
    }


def _fill(row: BenchRow, timing: Timing, config: TimingConfig, stream: Timing | None = None) -> None:
    """The row's numbers from its timing; with ``stream``, images/s from that one (several
    batches in flight) and the latencies still from the one-at-a-time calls."""
    summary = timing.summary(config)
    row.images_per_second = float(summary["images_per_second"])
    if stream is not None:
        row.images_per_second = float(stream.summary(config)["images_per_second"])
    row.p50_ms, row.p90_ms, row.p99_ms = (float(summary[k]) for k in ("p50_ms", "p90_ms", "p99_ms"))
    row.calls = int(summary["calls"])
    row.stable = bool(summary["stable"])
    row.latencies_ms = [round(1e3 * v, 3) for v in timing.latencies]
    if row.gflops_per_image is not None:
        row.gflops_per_second = round(row.gflops_per_image * row.images_per_second, 1)


def _trial(call: Callable[[], object]) -> str:
    """Run once; the error text if it fails (the row says so and the run goes on)."""
    try:
        call()
    except Exception as exc:  # any backend failure becomes a row, not a crash
        return f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    return ""


def _load_contenders(config: BenchConfig, rows: list[BenchRow]) -> list[Contender]:
    batches = config.batches()
    contenders = []
    for model in dict.fromkeys(config.models):  # each file once, in order
        kind = model_kind(model)
        deployed = _deployed_backend(model, kind, rows)
        if deployed is not None and deployed.name not in config.backend_names():
            rows.append(_status_row(model, deployed.name, 0, "skipped",
                                    f"this DEPLOY/ folder runs on {deployed.name}: add it to --backends"))  # fmt: skip
            deployed.close()
            continue
        for name in config.backend_names():
            if deployed is not None and name == deployed.name:  # a DEPLOY/ folder: its winner's backend
                backend = deployed
            elif deployed is not None or backend_spec(name).kind != kind:
                continue  # each backend runs the files it can load
            else:
                try:
                    backend = load(model, name)
                except (BackendError, ValueError, OSError) as exc:
                    rows.append(_status_row(model, name, 0, "unavailable", str(exc)))  # batch 0: all of them
                    continue
            card = backend.card
            size = native_size(backend, (512, 512))
            images = source_images(config, card.input_channels, size, max(batches))
            runnable = {}
            for b in batches:
                skip = ""
                if backend.fixed_batch and b != backend.max_batch:
                    skip = f"this file has a fixed batch of {backend.max_batch}"
                elif backend.max_batch is not None and b > backend.max_batch:
                    skip = f"over this model's maximum batch of {backend.max_batch}"
                if skip:
                    rows.append(
                        _status_row(model, name, b, "skipped", skip, **_describe(card, backend, size))
                    )
                else:
                    runnable[b] = np.stack(images[:b])
            contenders.append(Contender(model, backend, card, runnable))
    return contenders


def _deployed_backend(model: str, kind: str, rows: list[BenchRow]) -> Backend | None:
    """A DEPLOY/ folder runs on the backend it won on (with its tuned settings): loaded once,
    timed in that backend's rows; when it cannot load here, a row says why."""
    if kind != "deploy":
        return None
    try:
        return load(model)
    except (BackendError, ValueError, OSError) as exc:
        rows.append(_status_row(model, "deploy", 0, "unavailable", str(exc)))
        return None


def _same_network_flops(rows: list[BenchRow]) -> None:
    """A Keras run folder's card has no FLOP count (it is counted on the ONNX graph at
    export): give its rows the count of an ONNX row of the same architecture and size."""
    known = {
        (r.arch, r.input): r.gflops_per_image for r in rows if r.gflops_per_image and r.precision == "fp32"
    }
    for r in rows:
        if r.gflops_per_image is None and (r.arch, r.input) in known and r.images_per_second:
            r.gflops_per_image = known[(r.arch, r.input)]
            r.gflops_per_second = round((r.gflops_per_image or 0) * r.images_per_second, 1)


KERAS_BACKENDS = ("keras", "keras-bf16")


def _keras_ratios(rows: list[BenchRow]) -> None:
    """ "x Keras" against the faster of the Keras FP32 and Keras BF16 rows of the same arch and batch."""
    keras: dict[tuple[str, int], BenchRow] = {}
    for r in rows:
        if r.backend in KERAS_BACKENDS and r.status == "ok" and r.mode == "infer":
            best = keras.get((r.arch, r.batch))
            if best is None or (r.images_per_second or 0) > (best.images_per_second or 0):
                keras[(r.arch, r.batch)] = r
    for r in rows:
        ref = keras.get((r.arch, r.batch))
        if r.status == "ok" and r.mode == "infer" and ref is not None and ref.images_per_second:
            r.vs_keras = round((r.images_per_second or 0) / ref.images_per_second, 3)


def run_infer_rows(config: BenchConfig, contenders: list[Contender]) -> list[BenchRow]:
    rows: list[BenchRow] = []
    timing_config = config.timing()
    for b in config.batches():
        calls: dict[str, tuple[Callable[[], object], int]] = {}
        pending: dict[str, BenchRow] = {}
        for i, c in enumerate(contenders):
            if b not in c.images:
                continue
            batch = c.images[b]
            size = (batch.shape[1], batch.shape[2])
            row = BenchRow(
                model=c.model, backend=c.backend.name, batch=b, **_describe(c.card, c.backend, size)
            )

            def call(backend: Backend = c.backend, x: np.ndarray = batch) -> object:
                return backend.infer(x)

            error = _trial(call)
            if error:
                row.status, row.reason = "failed", error
                rows.append(row)
                continue
            key = f"{i}:{c.backend.name}"
            calls[key], pending[key] = (call, b), row
            if c.backend.requests_in_flight > 1:
                row.in_flight = c.backend.requests_in_flight
                calls[key + ":stream"] = _stream_call(c.backend, batch)
            row.notes = list(c.backend.notes)
        if calls:
            timings = time_side_by_side(calls, timing_config)
            for key, row in pending.items():
                _fill(row, timings[key], timing_config, timings.get(key + ":stream"))
                rows.append(row)
    return rows


def _stream_call(backend: Backend, batch: np.ndarray) -> tuple[Callable[[], object], int]:
    """One timed call that keeps the backend's requests busy: ``infer_stream`` over twice as
    many batches as it has in flight (as OpenVINO's benchmark_app does); images per call."""
    count = 2 * backend.requests_in_flight

    def call() -> object:
        return sum(1 for _ in backend.infer_stream(itertools.repeat(batch, count)))

    return call, count * len(batch)


def _pipeline_folder(
    config: BenchConfig, channels: int, size: tuple[int, int], count: int, folder: Path
) -> Path:
    """The images ``fcnx predict`` reads: --data as is, or seeded random PNGs written once."""
    if config.data:
        return dataset_images(config.data, "images to benchmark with")[0].parent
    folder.mkdir()
    for i, image in enumerate(source_images(config, channels, size, count)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return folder


def _raw_and_pipeline(
    c: Contender, batch: int, folder: Path, decoded: list[np.ndarray], out: Path
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The two calls timed against each other: Segmenter.predict on decoded images, and
    the whole fcnx predict job over the files they came from (same backend, same batch)."""
    segmenter = Segmenter(c.backend, batch_size=batch)
    job = PredictConfig(
        model=c.model, inputs=(str(folder),), out=str(out), batch=batch, overwrite=True, progress=False
    )

    def raw() -> object:
        return segmenter.predict(decoded)

    def pipeline() -> object:
        return predict_folder(job, backend=c.backend)

    return raw, pipeline


def run_pipeline_rows(config: BenchConfig, contenders: list[Contender]) -> list[BenchRow]:
    """Per onnxruntime/TensorRT contender and batch: ``Segmenter.predict`` on decoded
    arrays ("raw") against ``fcnx predict`` over the same files ("pipeline")."""
    rows: list[BenchRow] = []
    timing_config = dataclasses.replace(config.timing(), warmup=1, min_calls=3, window=2)
    with tempfile.TemporaryDirectory(prefix="fcnx-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for i, c in enumerate(contenders):
            if c.backend.name in KERAS_BACKENDS:
                continue
            size = native_size(c.backend, (512, 512))
            folder = _pipeline_folder(
                config, c.card.input_channels, size, 4 * max(config.batches()), tmp / f"images-{i}"
            )
            files = list_images(folder)
            decoded = [read_image(p, c.card.input_channels) for p in files]
            for b in c.images:
                raw, pipeline = _raw_and_pipeline(c, b, folder, decoded, tmp / f"out-{i}-{b}")
                timings = time_side_by_side(
                    {"raw": (raw, len(files)), "pipeline": (pipeline, len(files))}, timing_config
                )
                described = _describe(c.card, c.backend, size)
                raw_row = BenchRow(model=c.model, backend=c.backend.name, batch=b, mode="raw", **described)
                pipe_row = BenchRow(
                    model=c.model, backend=c.backend.name, batch=b, mode="pipeline", **described
                )
                _fill(raw_row, timings["raw"], timing_config)
                _fill(pipe_row, timings["pipeline"], timing_config)
                if raw_row.images_per_second:
                    pipe_row.vs_raw = round((pipe_row.images_per_second or 0) / raw_row.images_per_second, 3)
                rows += [raw_row, pipe_row]
    return rows


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """The whole run: ceiling, contenders, rows. Returns the report (see report.py)."""
    if not config.models:
        raise ValueError("fcnx bench needs at least one model file")
    config.batches(), config.backend_names()  # validate before any slow work
    rows: list[BenchRow] = []
    contenders = _load_contenders(config, rows)
    ceiling: dict[str, Any] = {}
    if config.ceiling:
        ceiling["cpu"] = cpu_ceiling()
        if importlib.util.find_spec("openvino") is not None:
            ceiling["cpu_openvino"] = openvino_ceilings()
        if any(backend_spec(c.backend.name).needs_gpu for c in contenders):
            ceiling["gpu"] = gpu_ceiling()
    try:
        rows += run_infer_rows(config, contenders)
        if config.pipeline:
            rows += run_pipeline_rows(config, contenders)
    finally:
        for c in contenders:
            c.backend.close()
    _same_network_flops(rows)
    for r in rows:
        peak = _peak_for(r, ceiling)
        if peak and r.gflops_per_second is not None:
            r.percent_of_peak = round(100 * r.gflops_per_second / peak, 1)
    _keras_ratios(rows)
    rows.sort(key=lambda r: r.status != "ok")  # timed rows first, in run order; then why others did not run
    return {
        "config": dataclasses.asdict(config),
        "machine": describe_machine(),
        "ceiling": ceiling,
        "providers": sorted({r.provider for r in rows if r.provider}),
        "rows": [r.to_dict() for r in rows],
    }


def _peak_for(row: BenchRow, ceiling: dict[str, Any]) -> float | None:
    """The matmul ceiling of the row's device in the row's own precision: on the CPU, FP32
    (and FP16, which CPUs compute in FP32) from the better of numpy, onnxruntime and
    OpenVINO, BF16 and INT8 from OpenVINO's; none when that precision's was not measured
    (a percentage of another precision's peak would mislead)."""
    if backend_spec(row.backend).needs_gpu:
        value = (ceiling.get("gpu") or {}).get("peak_gflops") if row.precision != "int8" else None
        return float(value) if isinstance(value, (int, float)) else None
    return cpu_peaks(ceiling).get("fp32" if row.precision == "fp16" else row.precision)


def cpu_peaks(ceiling: dict[str, Any]) -> dict[str, float]:
    """{precision: GFLOP/s} of this run's CPU ceilings (fp32 the best of every engine's)."""
    peaks: dict[str, float] = {}
    openvino = (ceiling.get("cpu_openvino") or {}).get("peaks", {})
    for precision, part in openvino.items():
        if isinstance(part.get("peak_gflops"), (int, float)):
            peaks[precision] = float(part["peak_gflops"])
    fp32 = (ceiling.get("cpu") or {}).get("peak_gflops")
    if isinstance(fp32, (int, float)):
        peaks["fp32"] = max(float(fp32), peaks.get("fp32", 0.0))
    return peaks
