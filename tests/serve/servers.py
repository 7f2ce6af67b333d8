"""Real ``fcnx serve`` subprocesses on loopback, a free port each."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..reliability.runs import _default_signals

CLI = [sys.executable, "-m", "fcnx.runtime.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    http: str  # host:port, as tritonclient.http takes it
    grpc: str
    name: str

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict | bytes]:
        request = urllib.request.Request(f"http://{self.http}{path}", data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                data = r.read()
                return r.status, json.loads(data) if r.headers.get(
                    "content-type"
                ) == "application/json" else data
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def metric(self, name: str) -> float:
        """The sum of a Prometheus series' samples (all labels)."""
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10) as r:
            lines = r.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name
        )

    def ready(self) -> bool:
        try:
            return self.get("/v2/health/ready")[0] == 200
        except OSError:
            return False


def start_server(model: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    import os

    http, grpc = free_port(), free_port()
    command = [*CLI, "serve", str(model), "--http-port", str(http), "--grpc-port", str(grpc), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})}, preexec_fn=_default_signals)  # fmt: skip
    name = extra[extra.index("--name") + 1] if "--name" in extra else model.name.split(".")[0]
    return Server(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", name)


def wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"fcnx serve exited with {server.process.returncode}: {server.process.stderr.read()}")
        if server.ready():
            return
        time.sleep(0.1)
    pytest.fail("fcnx serve did not become ready")


@contextmanager
def running(model: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = start_server(model, *extra, env=env)
    try:
        wait_ready(server)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def infer(
    client_module: Any, url: str, model: str, images: np.ndarray, outputs: tuple[str, ...] = ("mask",)
) -> dict[str, np.ndarray]:
    """One tritonclient request (HTTP or gRPC module): the outputs asked for, as arrays."""
    client = client_module.InferenceServerClient(url)
    tensor = client_module.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    wanted = [client_module.InferRequestedOutput(name) for name in outputs]
    result = client.infer(model, [tensor], outputs=wanted)
    return {name: result.as_numpy(name) for name in outputs}
