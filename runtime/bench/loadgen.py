"""MLPerf LoadGen runs against a server (``fcnx bench --url``): LoadGen schedules and times
the queries of SingleStream, Server (its peak search) and Offline and judges each run; this
module is its SUT, a pool of Triton clients, and the reader of its summary and detail logs."""

from __future__ import annotations

import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import BenchRow
from .target import Clients, Target, scrape, served_row, server_split

LOADGEN_SCENARIOS = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline"}


@dataclass(frozen=True)
class LoadGenSettings:
    min_seconds: float
    max_seconds: float
    latency_ms: float = 50.0  # one request's latency, measured first: sizes what LoadGen pre-generates
    qps: float = 10.0  # Offline: the expected throughput; Server: where the peak search starts
    p99_ms: float | None = None  # Server: the latency bound
    clients: int = 16  # the SUT's request pool (Server, Offline)


# The fewest queries for LoadGen's early-stopping p99 estimate (it asks for 662 when every
# query is under the bound); fewer and a Server run is INVALID whatever its latencies
SERVER_MIN_QUERIES = 700
SINGLE_STREAM_MIN_QUERIES = 100  # its p90 estimate needs 64
PEAK = re.compile(r"Found peak performance field: ([0-9.]+)")  # LoadGen's detail log, after its search
THROUGHPUT_LINE = {"single-stream": "QPS w/o loadgen overhead", "offline": "Samples per second",
                   "server": "Completed samples per second"}  # fmt: skip


def loadgen_row(target: Target, info: dict[str, Any], images: list[np.ndarray], scenario: str,
                settings: LoadGenSettings) -> BenchRow:  # fmt: skip
    """One LoadGen run of ``scenario`` against the server; the row holds LoadGen's own numbers."""
    import mlperf_loadgen as lg

    pool = Clients(target)
    executor = ThreadPoolExecutor(settings.clients if scenario != "single-stream" else 1)
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def answer(sample: Any) -> None:
        try:
            seconds = pool.infer(images[sample.index][None])
            with lock:
                latencies.append(seconds)
        except Exception as exc:  # the run goes on; the row says it failed
            errors.append(f"{type(exc).__name__}: {exc}")
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0)])

    def issue(samples: list[Any]) -> None:
        for sample in samples:
            executor.submit(answer, sample)

    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, LOADGEN_SCENARIOS[scenario])
    test.mode = lg.TestMode.PerformanceOnly
    test.min_duration_ms = int(settings.min_seconds * 1000)
    test.max_duration_ms = int(settings.max_seconds * 1000)
    test.min_query_count = 1
    # LoadGen pre-generates min_duration x the expected rate queries and the run is INVALID if they
    # finish before min_duration: expect twice the measured rate, max_duration ends it
    if scenario == "single-stream":
        test.single_stream_expected_latency_ns = int(settings.latency_ms / 2 * 1e6)
        test.min_query_count = SINGLE_STREAM_MIN_QUERIES
    elif scenario == "offline":
        test.offline_expected_qps = 2 * settings.qps
    else:  # the peak search: from a QPS that meets the bound, doubling, then bisecting
        test.mode = lg.TestMode.FindPeakPerformance
        test.min_query_count = SERVER_MIN_QUERIES
        test.server_target_qps = settings.qps
        test.server_target_latency_ns = int((settings.p99_ms or 2 * settings.latency_ms) * 1e6)
        test.server_target_latency_percentile = 0.99
        test.server_find_peak_qps_decimals_of_precision = 0  # to 1 QPS: each step is >= 700 queries
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(len(images), len(images), lambda indices: None, lambda indices: None)
    metrics = target.metrics_url()
    with tempfile.TemporaryDirectory(prefix="fcnx-loadgen-") as outdir:
        output = lg.LogOutputSettings()
        output.outdir = outdir
        output.copy_summary_to_stdout = False
        log = lg.LogSettings()
        log.log_output = output
        log.enable_trace = False
        before = scrape(metrics)
        try:
            lg.StartTestWithLogSettings(sut, qsl, test, log)
        finally:
            executor.shutdown(wait=True)
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        after = scrape(metrics)
        summary = parse_summary((Path(outdir) / "mlperf_log_summary.txt").read_text())
        peak = PEAK.search((Path(outdir) / "mlperf_log_detail.txt").read_text(errors="replace"))
        summary["peak_qps"] = float(peak.group(1)) if peak else None
    row = served_row(target, info, images, f"LoadGen {LOADGEN_SCENARIOS[scenario]}", calls=len(latencies),
               **server_split(before, after), latencies_ms=[round(1e3 * x, 3) for x in latencies])  # fmt: skip
    row.p50_ms, row.p90_ms, row.p99_ms = (summary.get(f"{q:.2f} percentile latency (ns)", 0) / 1e6 or None
                                          for q in (50, 90, 99))  # fmt: skip
    throughput = summary.get(THROUGHPUT_LINE[scenario])
    row.images_per_second = throughput if isinstance(throughput, float) else None
    row.stable = summary.get("valid")
    if scenario == "server":  # the search's answer: the peak, and whether its p99 met the bound there
        row.stable = (
            summary["peak_qps"] is not None and summary.get("Performance constraints satisfied") == "Yes"
        )
    row.notes = [f"LoadGen {summary.get('version', '')}: {summary.get('result', '?')}",
                 *(f"{k}: {v}" for k, v in summary.items() if k in SUMMARY_NOTES)]  # fmt: skip
    if scenario == "server":
        row.notes.append(f"p99 bound {test.server_target_latency_ns / 1e6:.1f} ms")
        row.notes.append(f"peak QPS found: {summary['peak_qps']}" if summary["peak_qps"] else "no peak found")
    if errors:
        row.status, row.reason = "failed", f"{len(errors)} request(s) failed, first: {errors[0]}"
    return row


SUMMARY_NOTES = ("Scheduled samples per second", "Completed samples per second", "Samples per second",
                 "QPS w/o loadgen overhead", "target_qps", "Min duration satisfied", "Min queries satisfied",
                 "Early stopping satisfied", "Performance constraints satisfied")  # fmt: skip


def parse_summary(text: str) -> dict[str, Any]:
    """LoadGen's mlperf_log_summary.txt: "key : value" lines, numbers as numbers, plus
    ``valid`` and ``result``."""
    summary: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        try:
            summary[key] = float(value)
        except ValueError:
            summary[key] = value
    result = str(summary.get("Result is", ""))
    summary["result"] = result or "no result line"
    summary["valid"] = result == "VALID"
    return summary
