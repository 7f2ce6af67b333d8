"""Speed of every passing candidate, each setting a row, all timed side by side in one run.

A row is one candidate with one setting (``Setting``: the batch the Segmenter fills, and
for ov-cpu the infer requests in flight) timed through the Segmenter, the path ``fcnx
predict`` takes, on the judging images at their own sizes (tiled where they are larger
than the model's input). ``throughput``: a call segments ``SPEED_IMAGES`` images; the
row's speed is images/s. ``latency``: a call segments one image at batch 1; the row's
speed is its p99 in ms. The rows are timed round-robin (``time_side_by_side``), so a
slow minute of the machine hits every row alike; the Keras FP32/BF16 baselines are rows
too, never chosen. The time budget is shared out between the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.bench.timing import TimingConfig, time_side_by_side

SPEED_IMAGES = 8  # images per throughput call (the batch fills across them)
THROUGHPUT_BATCHES = (1, 4, 8, 16)
OV_REQUESTS = (None, 1)  # OpenVINO's optimal number of infer requests, or one at a time
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
    if backend == "ov-cpu":
        return [Setting(b, r) for b in THROUGHPUT_BATCHES for r in OV_REQUESTS if not (r == 1 and b == 1)]
    return [Setting(b) for b in THROUGHPUT_BATCHES]


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
        turn = iter(range(10**9))
        return (lambda: segmenter.predict([images[next(turn) % len(images)]])), 1
    chosen = (images * SPEED_IMAGES)[:SPEED_IMAGES]
    return (lambda: segmenter.predict(chosen)), len(chosen)


def measure(
    rows: list[Row],
    images: list[np.ndarray],
    objective: str,
    seconds: float,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Each row's speed (the rows that cannot load or run get status "failed", with why),
    timed side by side within about ``seconds`` in all."""
    per_row = min(MAX_ROW_SECONDS, max(MIN_ROW_SECONDS, seconds / max(1, len(rows)) / 1.5))
    config = TimingConfig(warmup=1, min_seconds=per_row, min_calls=3, max_seconds=2 * per_row,
                          window=3, tolerance=0.15, round_seconds=max(0.5, per_row / 3))  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    contenders: dict[str, tuple[Callable[[], object], int]] = {}
    loaded = []
    try:
        for row in rows:
            try:
                backend = _load(row)
                loaded.append(backend)
                call, count = calls_for(row, backend, images, objective)
                call()  # a row that cannot run fails here, alone
                contenders[row.name] = (call, count)
                results[row.name] = {**row.key(), "status": "measured", "provider": backend.provider}
            except Exception as exc:
                results[row.name] = {**row.key(), "status": "failed", "reason": " ".join(str(exc).split())}
        log(f"timing {len(contenders)} rows side by side, ~{per_row:.0f} s each")
        timings = time_side_by_side(contenders, config)
    finally:
        for backend in loaded:
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


def speed_images(judge: list[Path], channels: int, intensity: str) -> list[np.ndarray]:
    """The judging images at their own sizes, as the model reads them."""
    from fcnx.runtime.images import read_image

    return [read_image(p, channels, intensity=intensity) for p in judge]
