"""``fcnx export triton``'s repository in a real Triton Inference Server, driven by the same
client as ``fcnx serve``. Triton's onnxruntime/OpenVINO/TensorRT backends ship only in
NVIDIA's container (tritonserver is not on PyPI), so this runs where ``tritonserver`` is on
PATH and is skipped, with that reason, everywhere else."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcnx.export.triton import TritonRepoConfig, write_repository

from ..reliability.runs import predict_command, run
from .servers import free_port, infer

TRITON = shutil.which("tritonserver")
pytestmark = pytest.mark.skipif(
    TRITON is None,
    reason="tritonserver is not on PATH: Triton's backends come in NVIDIA's container "
    "(nvcr.io/nvidia/tritonserver), not from pip",
)


def test_triton_serves_the_repository_with_masks_identical_to_fcnx_predict(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    http = pytest.importorskip("tritonclient.http")
    grpc = pytest.importorskip("tritonclient.grpc")
    write_repository(TritonRepoConfig(model=str(tiny_onnx), repo=str(tmp_path / "repo"), name="fcn"))
    image = np.random.default_rng(5).integers(
        0, 256, (64, 64), np.uint8
    )  # the model's size: Triton does not tile
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), image)
    assert (
        run(predict_command(tmp_path / "in", tmp_path / "out", "--format", "npy", model=tiny_onnx)).returncode
        == 0
    )
    expected = np.load(tmp_path / "out" / "a.npy")
    ports = [free_port() for _ in range(3)]
    assert TRITON is not None
    server = subprocess.Popen([TRITON, "--model-repository", str(tmp_path / "repo"), f"--http-port={ports[0]}",
                               f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"tritonserver did not become ready: {server.stderr.read() if server.stderr else ''}")
        for module, port in ((http, ports[0]), (grpc, ports[1])):
            got = infer(module, f"127.0.0.1:{port}", "fcn", image[None, ..., None])["mask"]
            np.testing.assert_array_equal(got[0], expected)
    finally:
        server.terminate()
        server.wait(timeout=60)
