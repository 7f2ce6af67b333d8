"""``fcnx bench --url``: a server speaking the Open Inference Protocol (``fcnx serve``, or a
Triton serving ``fcnx export triton``'s repository) under load, as its users see it.

- MLPerf LoadGen scenarios: SingleStream (one query at a time: p90 latency), Server (Poisson
  arrivals; LoadGen's peak search finds the highest QPS whose p99 stays under a bound) and
  Offline (every sample at once: throughput). LoadGen schedules, times and judges each run
  (its summary's "Result is VALID"); this module is its SUT: a pool of Triton clients.
- perf_analyzer's concurrency sweep: N clients each sending a request as soon as the last
  came back; throughput and p50/p90/p99 per N.
- The server-side split of a request's time read from its Prometheus ``/metrics`` (fcnx
  serve's ``fcnx_*`` series or Triton's ``nv_inference_*``), before and after each row.

Rows are ``BenchRow``s, so they go into the same bench.json/CSV/Markdown/plots as in-process
rows. Needs ``tritonclient`` and ``mlcommons-loadgen`` (``pip install "fcnx[serve]"``); never
KServe itself (its gRPC protos clash with tritonclient's in one process).
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import BenchRow
from .timing import percentile

SCENARIOS = ("single-stream", "server", "offline", "concurrency")


@dataclass(frozen=True)
class Target:
    url: str  # http://HOST:PORT or grpc://HOST:PORT
    model: str
    metrics: str | None = None  # the server's Prometheus page, when not the default

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")

    @classmethod
    def parse(cls, url: str, model: str, metrics: str | None = None) -> Target:
        if not re.fullmatch(r"(http|grpc)://[^/\s]+:\d+/?", url):
            raise ValueError(f"--url takes http://HOST:PORT or grpc://HOST:PORT, got {url!r}")
        if not model:
            raise ValueError("--url needs --model NAME: the model's name on the server")
        return cls(url, model, metrics)

    def module(self) -> Any:
        if self.protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        return module

    def metrics_url(self) -> str | None:
        """fcnx serve: /metrics on its REST port; Triton: port 8002 beside an 8000 REST port."""
        if self.metrics:
            return self.metrics
        if self.protocol != "http":
            return None
        host, port = self.address.rsplit(":", 1)
        return f"http://{host}:{8002 if port == '8000' else port}/metrics"


class Clients:
    """One Triton client per thread (the HTTP client is not safe across threads)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.module = target.module()
        self._local = threading.local()

    def client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.module.InferenceServerClient(self.target.address)
        return client

    def infer(self, images: np.ndarray) -> float:
        """One request with ``images`` (N, H, W, C) uint8; its latency in seconds. The mask is
        read back (decoded), as a client must."""
        tensor = self.module.InferInput("image", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        started = time.perf_counter()
        result = self.client().infer(
            self.target.model, [tensor], outputs=[self.module.InferRequestedOutput("mask")]
        )
        mask = result.as_numpy("mask")
        seconds = time.perf_counter() - started
        if mask is None or mask.shape != images.shape[:3]:
            raise RuntimeError(
                f"{self.target.url}: the mask came back as {None if mask is None else mask.shape}"
            )
        return seconds


def describe_server(target: Target) -> dict[str, Any]:
    """The server's and the model's own description: name, version, platform, inputs."""
    client = Clients(target).client()
    server = client.get_server_metadata()
    model = client.get_model_metadata(target.model)
    if not isinstance(server, dict):  # gRPC: protobuf messages
        from google.protobuf.json_format import MessageToDict

        server, model = MessageToDict(server), MessageToDict(model)
    return {"server": f"{server.get('name', '?')} {server.get('version', '')}".strip(),
            "platform": model.get("platform", ""), "inputs": model.get("inputs", []),
            "parameters": model.get("parameters", {})}  # fmt: skip


# Prometheus series per server: (sum, count, scale to ms) for queue time per image and
# compute time per batch; (images, batches) for the mean batch size
SERIES: dict[str, dict[str, Any]] = {
    "fcnx": {"queue": ("fcnx_queue_seconds_sum", "fcnx_queue_seconds_count", 1e3),
             "compute": ("fcnx_compute_seconds_sum", "fcnx_compute_seconds_count", 1e3),
             "batch": ("fcnx_batch_size_sum", "fcnx_batch_size_count")},
    "triton": {"queue": ("nv_inference_queue_duration_us", "nv_inference_count", 1e-3),
               "compute": ("nv_inference_compute_infer_duration_us", "nv_inference_exec_count", 1e-3),
               "batch": ("nv_inference_count", "nv_inference_exec_count")},
}  # fmt: skip


def scrape(url: str | None) -> dict[str, float]:
    """Every sample of a Prometheus text page, summed over labels; {} when there is none."""
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            key = name.split("{", 1)[0]
            try:
                values[key] = values.get(key, 0.0) + float(value)
            except ValueError:
                continue
    return values


def server_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean queue ms per image, compute ms per batch and images per batch between two scrapes."""
    for series in SERIES.values():
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        if series["batch"][1] not in after or not delta.get(series["batch"][1]):
            continue
        (qs, qc, qk), (cs, cc, ck), (bi, bb) = series["queue"], series["compute"], series["batch"]
        split = {"server_batch": round(delta[bi] / delta[bb], 2)}
        if delta.get(qc):
            split["queue_ms"] = round(qk * delta[qs] / delta[qc], 2)
        if delta.get(cc):
            split["compute_ms"] = round(ck * delta[cs] / delta[cc], 2)
        return split
    return {}


def _row(
    target: Target, info: dict[str, Any], images: list[np.ndarray], mode: str, **values: Any
) -> BenchRow:
    h, w, c = images[0].shape
    return BenchRow(model=f"{target.url}/{target.model}", backend=f"served-{target.protocol}", batch=1, mode=mode,
                    provider=f"{info['server']} ({info['platform'] or 'platform not given'})", input=f"{h}x{w}x{c}",
                    **values)  # fmt: skip


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
    return _row(target, info, images, f"concurrency {clients}", concurrency=clients, calls=len(flat),
                images_per_second=round(len(flat) / elapsed, 3), **_percentiles(flat),
                **server_split(before, after), latencies_ms=[round(1e3 * x, 3) for x in flat])  # fmt: skip


def _percentiles(seconds: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(1e3 * percentile(seconds, q), 2) for q in (50, 90, 99)}


# -- MLPerf LoadGen ----------------------------------------------------------------------------------

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
SERVER_ATTEMPTS = 3  # a start QPS that misses the bound: LoadGen's search finds no peak; start lower
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
    row = _row(target, info, images, f"LoadGen {LOADGEN_SCENARIOS[scenario]}", calls=len(latencies),
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
