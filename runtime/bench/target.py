"""A server speaking the Open Inference Protocol as ``fcnx bench --url`` sees it: its URL,
a pool of Triton clients, its own description, and the queue/compute split read from its
Prometheus page before and after a row (fcnx serve's ``fcnx_*`` series, Triton's
``nv_inference_*``)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import BenchRow


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


def served_row(
    target: Target, info: dict[str, Any], images: list[np.ndarray], mode: str, **values: Any
) -> BenchRow:
    h, w, c = images[0].shape
    return BenchRow(model=f"{target.url}/{target.model}", backend=f"served-{target.protocol}", batch=1, mode=mode,
                    provider=f"{info['server']} ({info['platform'] or 'platform not given'})", input=f"{h}x{w}x{c}",
                    **values)  # fmt: skip
