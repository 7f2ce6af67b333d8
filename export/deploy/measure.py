"""Speed of every passing candidate, each setting a row, all timed side by side in one run.

A row is one candidate with one setting (``Setting``: the batch the Segmenter fills, and
for ov-cpu the infer requests in flight) timed through the Segmenter, the path ``fcnx
predict`` takes, on the judging images at their own sizes (tiled where they are larger
than the model's input). ``throughput``: a call segments ``SPEED_IMAGES`` images (at least a batch of them);
the row's speed is images/s. ``latency``: a call segments one image at batch 1; the row's
speed is its p99 in ms. Rows are timed round-robin (``time_side_by_side``), so a slow
minute of the machine hits every row alike: first each candidate's settings beside each
other (``sweep``, one candidate's backends in memory at a time), then every candidate at
its best setting beside the others and the Keras FP32/BF16 baselines (``final``: what the
rule compares; Keras never chosen). The time budget is shared out between the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.bench.timing import TimingConfig, time_side_by_side

SPEED_IMAGES = 4  # images per throughput call, at least (a call fills at least one batch)
THROUGHPUT_BATCHES = (1, 4, 8)
OV_REQUESTS = (None, 1)  # OpenVINO's optimal number of infer requests, or one at a time (latency)
MIN_ROW_SECONDS = 0.5
MAX_ROW_SECONDS = 30.0


@dataclass(frozen=True)
class Setting:
    batch: int
    requests: int | None = None  # ov-cpu: infer requests in flight (None: OpenVINO's optimal number)
    threads: int | None = None  # None: the usable cores

    def label(self) -> str:
        text = f"batch {self.batch}"
        if self.requests is not None:
            text += f", {self.requests} request{'s' if self.requests > 1 else ''}"
        return text


def settings_for(backend: str, objective: str) -> list[Setting]:
    """The settings tried for a backend: batch sizes for throughput (and OpenVINO's infer
    requests), batch 1 for latency."""
    if objective == "latency":
        return [Setting(1, r) for r in OV_REQUESTS] if backend == "ov-cpu" else [Setting(1)]
    return [Setting(b) for b in THROUGHPUT_BATCHES]  # OpenVINO: its optimal requests in flight


@dataclass(frozen=True)
class Row:
    """What is timed: a candidate (or baseline) with one setting."""

    candidate: str  # "ov-cpu int8", "keras fp32"
    backend: str
    artifact: str  # the file it loads (an artifact, or the .keras for baselines)
    setting: Setting
    baseline: bool = False

    @property
    def name(self) -> str:
        return f"{self.candidate} ({self.setting.label()})"

    def key(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "backend": self.backend, "setting": asdict(self.setting),
                "baseline": self.baseline}  # fmt: skip


def _load(row: Row) -> Any:
    from fcnx.runtime.backends.ort import OrtOptions
    from fcnx.runtime.backends.ov import OvOptions
    from fcnx.runtime.backends.registry import load

    s = row.setting
    if row.backend == "ov-cpu":
        options: Any = OvOptions(threads=s.threads, requests=s.requests, batch=s.batch)
    elif row.backend.startswith("keras"):
        options = None
    else:
        options = OrtOptions(threads=s.threads)
    return load(row.artifact, row.backend, options)


def calls_for(
    row: Row, backend: Any, images: list[np.ndarray], objective: str
) -> tuple[Callable[[], object], int]:
    """The timed call of a row, and the images each call segments."""
    from fcnx.runtime.predict.segmenter import Segmenter

    segmenter = Segmenter(backend, row.setting.batch)
    if objective == "latency":
        turn = itertools.count()
        return (lambda: segmenter.predict([images[next(turn) % len(images)]])), 1
    count = max(SPEED_IMAGES, row.setting.batch)
    chosen = (images * count)[:count]
    return (lambda: segmenter.predict(chosen)), len(chosen)


def _load_key(row: Row) -> tuple[Any, ...]:
    """Rows that can share one loaded backend: an onnxruntime session runs any batch; an
    OpenVINO model is compiled for its batch and infer requests."""
    s = row.setting
    return (row.backend, row.artifact, s.threads) + ((s.batch, s.requests) if row.backend == "ov-cpu" else ())


def _time_rows(
    rows: list[Row], images: list[np.ndarray], objective: str, seconds: float, stage: str
) -> list[dict[str, Any]]:
    """``rows`` timed side by side (round-robin) within about ``seconds``; each loaded
    backend closed after. A row that cannot load or run gets status "failed", with why."""
    per_row = min(MAX_ROW_SECONDS, max(MIN_ROW_SECONDS, seconds / max(1, len(rows)) / 1.5))
    config = TimingConfig(warmup=0, min_seconds=per_row, min_calls=2, max_seconds=2 * per_row,
                          window=3, tolerance=0.15, round_seconds=max(0.5, per_row / 3))  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    contenders: dict[str, tuple[Callable[[], object], int]] = {}
    loaded: dict[tuple[Any, ...], Any] = {}
    try:
        for row in rows:
            try:
                key = _load_key(row)
                backend = loaded[key] if key in loaded else loaded.setdefault(key, _load(row))
                call, count = calls_for(row, backend, images, objective)
                call()  # the warm-up call: a row that cannot run fails here, alone
                contenders[row.name] = (call, count)
                results[row.name] = {
                    **row.key(),
                    "stage": stage,
                    "status": "measured",
                    "provider": backend.provider,
                }
            except Exception as exc:  # any backend failure is this row's result
                results[row.name] = {**row.key(), "stage": stage, "status": "failed",
                                     "reason": " ".join(str(exc).split())}  # fmt: skip
        timings = time_side_by_side(contenders, config)
    finally:
        for backend in loaded.values():
            backend.close()
    out = []
    for row in rows:
        result = results[row.name]
        if row.name in timings:
            t = timings[row.name]
            result.update(images_per_second=round(t.images_per_second, 3), p50_ms=round(1e3 * t.percentile(50), 2),
                          p99_ms=round(1e3 * t.percentile(99), 2), calls=len(t.latencies),
                          stable=t.stable(config.window, config.tolerance))  # fmt: skip
        out.append(result)
    return out


def _speed(result: dict[str, Any], objective: str) -> float:
    return result["images_per_second"] if objective == "throughput" else -result["p99_ms"]


def measure(
    rows: list[Row],
    images: list[np.ndarray],
    objective: str,
    seconds: float,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every row's speed, in two stages so that memory holds one candidate's backends at a
    time, not every setting of every candidate: ``sweep``, each candidate's settings timed
    side by side (its best setting found); ``final``, every candidate at its best setting
    and the baselines, timed side by side: the rows the rule compares. ``seconds``: the
    time budget of both."""
    by_candidate: dict[str, list[Row]] = {}
    for row in rows:
        by_candidate.setdefault(row.candidate, []).append(row)
    swept_rows = sum(len(g) for g in by_candidate.values() if len(g) > 1)
    sweep_seconds = 0.6 * seconds * swept_rows / max(1, len(rows))
    swept: list[dict[str, Any]] = []
    finalists: list[Row] = []
    for candidate, group in by_candidate.items():
        if len(group) == 1:
            finalists.append(group[0])
            continue
        log(f"timing {len(group)} settings of {candidate} side by side")
        results = _time_rows(group, images, objective, sweep_seconds * len(group) / swept_rows, "sweep")
        swept += results
        ran = [(r, row) for r, row in zip(results, group) if r["status"] == "measured"]
        finalists.append(max(ran, key=lambda pair: _speed(pair[0], objective))[1] if ran else group[0])
    log(f"timing {len(finalists)} candidates at their best settings side by side")
    final = _time_rows(finalists, images, objective, seconds - sweep_seconds, "final")
    return swept + final


def speed_images(judge: list[Path], channels: int, intensity: str) -> list[np.ndarray]:
    """The judging images at their own sizes, as the model reads them."""
    from fcnx.runtime.images import read_image

    return [read_image(p, channels, intensity=intensity) for p in judge]
