"""``fcnx bench``'s configuration (one field per flag) and its result rows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..backends.registry import BACKEND_NAMES
from ..card import reject_unknown_keys
from ..flags import opt
from .timing import TimingConfig


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = opt((), ".keras / run folders, .onnx (any precision), .engine", cli=False)
    backends: str = opt(
        "keras,keras-bf16,ort-cpu,ov-cpu",
        "comma-separated: keras, keras-bf16, ort-cpu, ort-cuda, ort-trt, ov-cpu, trt",
    )
    batch: str = opt("1,8", "comma-separated batch sizes")
    data: str | None = opt(
        None, "time real images from this folder (image/ inside, or images)", metavar="DIR"
    )
    pipeline: bool = opt(False, "also time the whole fcnx predict path (decode, infer, encode) vs raw")
    out: str = opt("fcnx-bench", "folder for bench.json/.csv/.md and the plots", metavar="DIR")
    min_seconds: float = opt(10.0, "timed seconds per row, at least")
    max_seconds: float = opt(120.0, "stop waiting for stable timings after this long per row")
    warmup: int = opt(3, "untimed calls before timing")
    ceiling: bool = opt(True, "measure this machine's matmul peak in the same run")
    plots: bool = opt(True, "write throughput.png and latency.png (needs matplotlib)")
    seed: int = opt(0, "seed for the random images")
    url: str | None = opt(None, "bench a server instead: http://HOST:PORT or grpc://HOST:PORT (Open Inference "
                          "Protocol: fcnx serve, Triton)", metavar="URL")  # fmt: skip
    model: str = opt("", "with --url: the model's name on the server", metavar="NAME")
    scenarios: str = opt("single-stream,server,offline,concurrency",
                         "with --url: MLPerf LoadGen scenarios and/or the concurrency sweep")  # fmt: skip
    concurrency: str = opt("1,2,4,8,16", "with --url: clients of the concurrency sweep")
    p99_ms: float | None = opt(
        None, "with --url: the Server scenario's p99 bound (default: 2x SingleStream p90)"
    )
    size: str = opt("512x512", "with --url and no --data: random images of this HxW")
    metrics_url: str | None = opt(None, "with --url: the server's Prometheus page (default: /metrics on an http "
                                  "--url; Triton's :8002 beside :8000)", metavar="URL")  # fmt: skip

    def __post_init__(self) -> None:
        if self.min_seconds < 0 or self.max_seconds <= 0 or self.min_seconds > self.max_seconds:
            raise ValueError(
                f"--min-seconds must be >= 0 and at most --max-seconds (> 0), got {self.min_seconds} and "
                f"{self.max_seconds}"
            )
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")

    def batches(self) -> list[int]:
        try:
            values = [int(v) for v in self.batch.split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"--batch takes comma-separated integers like 1,8,32, got {self.batch!r}"
            ) from None
        if not values or min(values) < 1:
            raise ValueError(f"--batch takes positive integers, got {self.batch!r}")
        return values

    def backend_names(self) -> list[str]:
        names = [b.strip() for b in self.backends.split(",") if b.strip()]
        unknown = [b for b in names if b not in BACKEND_NAMES]
        if unknown or not names:
            raise ValueError(
                f"--backends: unknown {', '.join(unknown) or '(none)'}; from {', '.join(BACKEND_NAMES)}"
            )
        return names

    def timing(self) -> TimingConfig:
        return TimingConfig(warmup=self.warmup, min_seconds=self.min_seconds, max_seconds=self.max_seconds)


@dataclass
class BenchRow:
    model: str
    backend: str
    batch: int
    mode: str = "infer"  # infer: backend.infer on a ready batch; raw / pipeline: see --pipeline
    status: str = "ok"  # ok | unavailable | failed | skipped
    reason: str = ""
    provider: str = ""
    arch: str = ""
    precision: str = ""
    input: str = ""  # HxWxC timed
    images_per_second: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    calls: int = 0
    stable: bool | None = None
    gflops_per_image: float | None = None
    gflops_per_second: float | None = None
    percent_of_peak: float | None = None
    vs_keras: float | None = None  # images/s over the faster same-arch keras / keras-bf16 row at this batch
    vs_raw: float | None = None  # pipeline rows: images/s over the raw row
    in_flight: int = 1  # batches in flight while images/s was timed (infer_stream); latencies: one at a time
    concurrency: int | None = None  # served rows: clients sending back to back
    queue_ms: float | None = None  # served rows, from the server's /metrics: mean queue wait per image
    compute_ms: float | None = None  # ... mean compute time per batch
    server_batch: float | None = None  # ... mean images per batch the server ran
    notes: list[str] = field(default_factory=list)  # the backend's own: compiles and model cache
    latencies_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        reject_unknown_keys(cls, data, "bench row: unknown keys")
        return cls(**data)
