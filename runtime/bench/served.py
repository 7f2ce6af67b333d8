"""``fcnx bench --url``: a server speaking the Open Inference Protocol (``fcnx serve``, or a
Triton serving ``fcnx export triton``'s repository) under load, as its users see it. This
module runs the scenarios in order, each sized by the one before:

- MLPerf LoadGen's SingleStream, Server (peak search) and Offline (``loadgen.py``);
- perf_analyzer's concurrency sweep (here): N clients each sending a request as soon as the last
  came back; throughput and p50/p90/p99 per N.
- the server-side split of a request's time from its Prometheus page (``target.py``).

Rows are ``BenchRow``s, so they go into the same bench.json/CSV/Markdown/plots as in-process
rows. Needs ``tritonclient`` and ``mlcommons-loadgen`` (``pip install "fcnx[serve]"``); never
KServe itself (its gRPC protos clash with tritonclient's in one process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .config import BenchRow
from .loadgen import LoadGenSettings, loadgen_row
from .target import Clients, Target, describe_server, scrape, served_row, server_split
from .timing import percentile

SCENARIOS = ("single-stream", "server", "offline", "concurrency")
SERVER_ATTEMPTS = 3  # a start QPS that misses the bound: LoadGen's search finds no peak; start lower


def concurrency_row(
    target: Target, info: dict[str, Any], images: list[np.ndarray], clients: int, seconds: float, warmup: int
) -> BenchRow:
    """``clients`` threads, each sending one image per request back to back for ``seconds``."""
    pool = Clients(target)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def loop(i: int) -> None:
        for k in range(warmup):
            pool.infer(images[(i + k) % len(images)][None])
        barrier.wait()
        k = 0
        while not stop.is_set():
            latencies[i].append(pool.infer(images[(i + k) % len(images)][None]))
            k += 1

    barrier = threading.Barrier(clients + 1)
    metrics = target.metrics_url()
    with ThreadPoolExecutor(clients) as executor:
        futures = [executor.submit(loop, i) for i in range(clients)]
        barrier.wait()
        before, started = scrape(metrics), time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - started
    after = scrape(metrics)
    flat = [x for per in latencies for x in per]
    return served_row(target, info, images, f"concurrency {clients}", concurrency=clients, calls=len(flat),
                images_per_second=round(len(flat) / elapsed, 3), **_percentiles(flat),
                **server_split(before, after), latencies_ms=[round(1e3 * x, 3) for x in flat])  # fmt: skip


def _percentiles(seconds: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(1e3 * percentile(seconds, q), 2) for q in (50, 90, 99)}


def run_served(
    target: Target, images: list[np.ndarray], scenarios: list[str], concurrency: list[int],
    min_seconds: float, max_seconds: float, warmup: int, p99_ms: float | None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[BenchRow]:  # fmt: skip
    """Every scenario asked for, each sized by what came before: a warm-up measures one
    request's latency (LoadGen's SingleStream expectation); SingleStream's p90 bounds the
    Server run (2x by default); the sweep's best throughput is Offline's expectation and,
    halved, where the Server peak search starts."""
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError(
            f"--scenarios: unknown {', '.join(unknown) or '(none)'}; from {', '.join(SCENARIOS)}"
        )
    info = describe_server(target)
    pool = Clients(target)
    warm = [pool.infer(images[i % len(images)][None]) for i in range(max(warmup, 3))]
    latency = 1e3 * float(np.median(warm))
    clients = max(concurrency) if concurrency else 16
    rows: list[BenchRow] = []
    single: BenchRow | None = None
    if "single-stream" in scenarios or ("server" in scenarios and p99_ms is None):
        progress("LoadGen SingleStream")
        single = loadgen_row(
            target, info, images, "single-stream", LoadGenSettings(min_seconds, max_seconds, latency)
        )
        rows.append(single)
        latency = single.p90_ms or latency
    best = 0.0
    if "concurrency" in scenarios:
        for n in concurrency:
            progress(f"concurrency {n}")
            rows.append(concurrency_row(target, info, images, n, min_seconds, warmup))
            best = max(best, rows[-1].images_per_second or 0.0)
    best = best or 1e3 / latency
    if "offline" in scenarios:
        progress("LoadGen Offline")
        rows.append(loadgen_row(target, info, images, "offline",
                                LoadGenSettings(min_seconds, max_seconds, latency, best, None, clients)))  # fmt: skip
    if "server" in scenarios:
        bound = p99_ms or 2 * latency
        progress(f"LoadGen Server: the peak QPS with p99 <= {bound:.1f} ms (LoadGen's search)")
        start = best / 2
        for _ in range(SERVER_ATTEMPTS):  # LoadGen's search needs a start that meets the bound
            row = loadgen_row(target, info, images, "server",
                              LoadGenSettings(min_seconds, max_seconds, latency, start, bound, clients))  # fmt: skip
            row.notes.append(f"peak search started at {start:.2f} QPS")
            if "no peak found" not in row.notes or row.status != "ok":
                break
            start /= 3
        rows.append(row)
    if "single-stream" not in scenarios and single is not None:  # measured only for the bound
        rows.remove(single)
    return rows


def served_report(config: Any) -> dict[str, Any]:
    """``fcnx bench --url``: the report (same shape as the in-process one) of a served model."""
    import dataclasses

    from .machine import describe_machine
    from .run import source_images

    target = Target.parse(config.url, config.model, config.metrics_url)
    scenarios = [s.strip() for s in config.scenarios.split(",") if s.strip()]
    try:
        concurrency = sorted({int(c) for c in config.concurrency.split(",") if c.strip()})
        h, w = (int(v) for v in config.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--concurrency takes integers like 1,2,4 and --size HxW, got {config.concurrency!r}, "
                         f"{config.size!r}") from None  # fmt: skip
    if not concurrency or min(concurrency) < 1 or h < 1 or w < 1:
        raise ValueError("--concurrency and --size take positive numbers")
    info = describe_server(target)
    channels = int(info["inputs"][0]["shape"][-1]) if info["inputs"] else 1
    images = source_images(config, channels, (h, w), 16)
    rows = run_served(target, images, scenarios, concurrency, config.min_seconds, config.max_seconds,
                      config.warmup, config.p99_ms, progress=lambda line: print(f"  {line}", flush=True))  # fmt: skip
    return {
        "config": dataclasses.asdict(config),
        "machine": describe_machine("tritonclient", "mlcommons-loadgen"),
        "ceiling": {},
        "server": info["server"],
        "providers": sorted({r.provider for r in rows}),
        "rows": [r.to_dict() for r in rows],
    }
