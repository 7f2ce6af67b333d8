"""``fcnx serve`` as users run it: real server subprocesses, Triton's own tritonclient over REST
and gRPC, masks byte-identical to ``fcnx predict`` of the same images."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from ..fakes import THRESHOLD_ONNX
from ..reliability.runs import CLI, predict_command, run
from .servers import Server, infer, running, start_server, wait_ready

if importlib.util.find_spec("kserve") is None:  # found, not imported: its protos clash with tritonclient's
    pytest.skip('fcnx serve needs the serve extra: pip install "fcnx[serve]"', allow_module_level=True)
http = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def threshold(images: np.ndarray) -> np.ndarray:
    return (images[..., 0] > 127).astype(np.uint8)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The threshold model (mask = pixel > 127), batches of up to 8 gathered for 30 ms."""
    with running(
        THRESHOLD_ONNX, "--max-batch", "8", "--max-queue-delay-ms", "30", "--max-pixels", "4000000"
    ) as s:
        yield s


def test_round_trips_match_fcnx_predict(tiny_onnx: Path, tmp_path: Path) -> None:
    """A real trained FCN (64x64 card): a 64x64 image runs whole, 150x230 and 200x97 run as tiles;
    REST and gRPC masks are byte-identical to fcnx predict's, and probs come on request."""
    rng = np.random.default_rng(3)
    images = {"whole": rng.integers(0, 256, (64, 64), np.uint8), "tiled": rng.integers(0, 256, (150, 230), np.uint8),
              "narrow": rng.integers(0, 256, (200, 97), np.uint8)}  # fmt: skip
    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in images.items():
        cv2.imwrite(str(folder / f"{name}.png"), image)
    done = run(predict_command(folder, tmp_path / "out", "--format", "npy", model=tiny_onnx))
    assert done.returncode == 0, done.stderr
    with running(tiny_onnx, "--name", "tiny") as s:
        status, meta = s.get("/v2/models/tiny")
        assert status == 200 and meta["parameters"]["card"]["input_height"] == 64
        assert [i["name"] for i in meta["inputs"]] == ["image"]
        assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"mask": "UINT8", "probs": "FP32"}
        config = http.InferenceServerClient(s.http).get_model_config("tiny")  # Triton's config extension
        assert config["input"] == [{"name": "image", "data_type": "TYPE_UINT8", "dims": [-1, -1, 1]}]
        assert json.loads(config["parameters"]["fcnx_card"]["string_value"])["input_height"] == 64
        for name, image in images.items():
            expected = np.load(tmp_path / "out" / f"{name}.npy")
            batch = image[None, ..., None]
            for module, url in ((http, s.http), (grpc, s.grpc)):
                got = infer(module, url, "tiny", batch, outputs=("mask", "probs"))
                assert got["mask"].dtype == np.uint8 and got["mask"].shape == (1, *image.shape)
                np.testing.assert_array_equal(
                    got["mask"][0], expected, err_msg=f"{name} over {module.__name__}"
                )
                assert got["probs"].dtype == np.float32 and got["probs"].shape == (1, *image.shape, 2)
                np.testing.assert_array_equal(got["probs"][0].argmax(-1), expected)


def test_json_and_binary_bodies_and_many_images_per_request(server: Server) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 50, 1), np.uint8)
    got = infer(http, server.http, server.name, images)["mask"]
    np.testing.assert_array_equal(got, threshold(images))
    body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 3, 1],
                        "data": [0, 128, 255, 127, 200, 3]}]}  # fmt: skip
    status, answer = server.post(f"/v2/models/{server.name}/infer", json.dumps(body).encode())
    assert status == 200, answer
    assert answer["outputs"][0]["name"] == "mask" and answer["outputs"][0]["data"] == [0, 1, 1, 0, 1, 0]


def test_concurrent_clients_are_batched_and_get_their_own_masks(server: Server) -> None:
    before_batches = server.metric("fcnx_batch_size_count")
    before_images = server.metric("fcnx_batch_size_sum")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (1, 33 + i, 47, 1), np.uint8) for i in range(16)]

    def one(i: int) -> bool:
        module, url = (http, server.http) if i % 2 else (grpc, server.grpc)
        return bool(np.array_equal(infer(module, url, server.name, images[i])["mask"], threshold(images[i])))

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(16)))
    batches = server.metric("fcnx_batch_size_count") - before_batches
    assert server.metric("fcnx_batch_size_sum") - before_images == 16
    assert batches < 16, "concurrent requests never shared a batch"
    assert (
        server.metric("fcnx_queue_seconds_count") >= 16 and server.metric("fcnx_compute_seconds_count") >= 1
    )


def _binary(shape: list[int], payload: bytes, datatype: str = "UINT8", name: str = "image",
            size: int | None = None, outputs: list[str] | None = None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    head = {"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                        "parameters": {"binary_data_size": len(payload) if size is None else size}}]}  # fmt: skip
    if outputs:
        head["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    text = json.dumps(head).encode()
    return text + payload, {"Inference-Header-Content-Length": str(len(text))}


BAD = {
    "float32 pixels": _binary([1, 4, 4, 1], bytes(64), datatype="FP32"),
    "three channels": _binary([1, 4, 4, 3], bytes(48)),
    "no batch axis": _binary([4, 4, 1], bytes(16)),
    "wrong input name": _binary([1, 4, 4, 1], bytes(16), name="input_1"),
    "body shorter than its header": _binary([1, 64, 64, 1], bytes(100)),
    "binary size past the end": _binary([1, 4, 4, 1], bytes(16), size=4096),
    "over --max-pixels": _binary([1, 3000, 3000, 1], bytes(16)),
    "unknown output": _binary([1, 4, 4, 1], bytes(16), outputs=["logits"]),
    "garbage": (b"\x89PNG\r\n\x1a\n\x00garbage", {}),
    "garbage with a header": (b"{not json" + bytes(20), {"Inference-Header-Content-Length": "9"}),
    "header longer than body": (b"{}", {"Inference-Header-Content-Length": "999"}),
}


def test_bad_requests_get_400_while_a_good_client_keeps_getting_masks(server: Server) -> None:
    stop = threading.Event()
    good: list[bool] = []
    rng = np.random.default_rng(2)

    def client() -> None:
        while not stop.is_set():
            image = rng.integers(0, 256, (1, 31, 29, 1), np.uint8)
            good.append(
                bool(np.array_equal(infer(http, server.http, server.name, image)["mask"], threshold(image)))
            )

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for what, (body, headers) in BAD.items():
            status, answer = server.post(f"/v2/models/{server.name}/infer", body, headers)
            assert status == 400, f"{what}: {status} {answer}"
            assert isinstance(answer, dict) and "\n" not in answer["error"] and answer["error"], what
        status, answer = server.post("/v2/models/nosuchmodel/infer", *BAD["garbage"])
        assert status == 404
        with pytest.raises(Exception, match="channel"):  # the same check over gRPC: INVALID_ARGUMENT
            infer(grpc, server.grpc, server.name, np.zeros((1, 8, 8, 3), np.uint8))
    finally:
        stop.set()
        thread.join()
    assert good and all(good)
    assert server.process.poll() is None


def test_bad_request_messages_say_what_was_wrong(server: Server) -> None:
    cases = ("float32 pixels", "three channels", "over --max-pixels", "body shorter than its header")
    messages = {
        what: server.post(f"/v2/models/{server.name}/infer", *BAD[what])[1]["error"] for what in cases
    }
    assert "UINT8" in messages["float32 pixels"]
    assert "3 channel" in messages["three channels"] and "takes 1" in messages["three channels"]
    assert "--max-pixels" in messages["over --max-pixels"]
    assert "4096" in messages["body shorter than its header"]


def test_readiness_is_false_until_the_model_is_warm(tmp_path: Path) -> None:
    gate = tmp_path / "load"  # the load waits for this file (FCNX_SERVE_LOAD_GATE, a test hook)
    server = start_server(THRESHOLD_ONNX, env={"FCNX_SERVE_LOAD_GATE": str(gate)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                live = server.get("/v2/health/live")[0]
                break
            except OSError:
                time.sleep(0.05)
        assert live == 200
        assert server.get("/v2/health/ready")[0] == 503
        assert server.get(f"/v2/models/{server.name}/ready")[0] == 503
        body, headers = _binary([1, 4, 4, 1], bytes(16))
        assert server.post(f"/v2/models/{server.name}/infer", body, headers)[0] == 503
        gate.touch()
        wait_ready(server)
        assert server.get(f"/v2/models/{server.name}/ready")[0] == 200
    finally:
        server.process.terminate()
        server.process.wait(timeout=60)


def test_sigterm_finishes_requests_in_flight_then_exits_0() -> None:
    """Requests held in the batching queue (a 4 s delay) when SIGTERM comes all get their masks;
    the process then exits 0 and a request after it is refused."""
    server = start_server(THRESHOLD_ONNX, "--max-batch", "16", "--max-queue-delay-ms", "4000")
    try:
        wait_ready(server)
        rng = np.random.default_rng(4)
        images = [rng.integers(0, 256, (1, 300, 200, 1), np.uint8) for _ in range(6)]
        assert server.post(f"/v2/models/{server.name}/infer", *BAD["garbage"])[0] == 400  # logged quietly
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(infer, http if i % 2 else grpc, server.http if i % 2 else server.grpc,
                                   server.name, images[i]) for i in range(6)]  # fmt: skip
            time.sleep(1.5)  # all six sent and queued (the first waits 4 s for others)
            server.process.send_signal(signal.SIGTERM)
            results = [f.result(timeout=60) for f in futures]
        for image, result in zip(images, results):
            np.testing.assert_array_equal(result["mask"], threshold(image))
        assert server.process.wait(timeout=60) == 0, server.process.stderr.read()
        lines = server.process.stderr.read().splitlines()  # quiet: fcnx's own lines only, no library noise
        assert lines and all(line.startswith("fcnx serve: ") for line in lines), lines
        assert "stopping" in lines[-2] and lines[-1] == "fcnx serve: stopped"
        with pytest.raises((InferenceServerException, ConnectionRefusedError)):  # nothing listens any more
            infer(http, server.http, server.name, images[0])
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_a_model_that_cannot_load_exits_1_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    server = start_server(broken)
    try:
        code = server.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    stderr = server.process.stderr.read()
    assert code == 1
    assert f"error: {broken}" in stderr


def test_bench_url_drives_the_server_with_loadgen_and_a_sweep(server: Server, tmp_path: Path) -> None:
    """The plumbing, not the speed: LoadGen's SingleStream and Offline runs judged VALID, a
    sweep of 1 and 2 clients, the server's queue/compute split read from /metrics."""
    out = tmp_path / "bench"
    done = run([*CLI, "bench", "--url", f"http://{server.http}", "--model", server.name, "--scenarios",
                "single-stream,offline,concurrency", "--concurrency", "1,2", "--min-seconds", "1", "--max-seconds",
                "8", "--warmup", "2", "--size", "64x64", "--out", str(out), "--no-plots"], timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == [
        "LoadGen SingleStream",
        "concurrency 1",
        "concurrency 2",
        "LoadGen Offline",
    ]
    for row in rows:
        assert row["status"] == "ok" and row["images_per_second"] > 0 and row["p90_ms"] > 0, row
        assert row["provider"].endswith("(fcnx_ort-cpu)") and row["input"] == "64x64x1"
        assert row["queue_ms"] is not None and row["compute_ms"] > 0 and row["server_batch"] >= 1
    assert rows[0]["stable"] is True and rows[3]["stable"] is True, [r["notes"] for r in rows]
    assert "LoadGen SingleStream" in (out / "bench.md").read_text()
