"""The parts of fcnx serve and fcnx bench --url that need no server: request checks, the
dynamic batcher, LoadGen's summary and the /metrics split."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest

from fcnx.runtime.bench.loadgen import parse_summary
from fcnx.runtime.bench.target import Target, server_split
from fcnx.runtime.predict.plans import Output
from fcnx.runtime.serve.batcher import Batcher, warm_batches
from fcnx.runtime.serve.tensors import BadRequest, Signature

SIGNATURE = Signature(channels=1, classes=2, outputs=("mask", "probs"), max_pixels=10_000)


@pytest.mark.parametrize(
    ("names", "datatype", "shape", "message"),
    [
        (["image"], "FP32", [1, 8, 8, 1], "must be UINT8"),
        (["input_1"], "UINT8", [1, 8, 8, 1], "one input named 'image'"),
        (["image", "extra"], "UINT8", [1, 8, 8, 1], "one input named 'image'"),
        ([], "", [], "got none"),
        (["image"], "UINT8", [8, 8, 1], "[N, H, W, C]"),
        (["image"], "UINT8", [1, 0, 8, 1], "positive"),
        (["image"], "UINT8", [1, 8, 8, 3], "3 channel(s)"),
        (["image"], "UINT8", [1, 200, 200, 1], "--max-pixels"),
        (["image"], "UINT8", [500, 90, 90, 1], "split it"),
    ],
)
def test_requests_that_are_not_an_image_batch_are_refused_in_one_line(
    names, datatype, shape, message
) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)) as info:
        SIGNATURE.check_input(names, datatype, shape)
    assert "\n" not in str(info.value)


def test_decode_checks_the_data_fills_the_declared_shape() -> None:
    good = np.arange(16, dtype=np.uint8)
    assert SIGNATURE.decode([1, 4, 4, 1], lambda: good).shape == (1, 4, 4, 1)
    for read in (
        lambda: good[:10],
        lambda: np.arange(16, dtype=np.int64),
        lambda: (_ for _ in ()).throw(ValueError()),
    ):
        with pytest.raises(BadRequest, match="16 UINT8 values"):
            SIGNATURE.decode([1, 4, 4, 1], read)


def test_outputs_default_to_the_mask_and_unknown_ones_are_refused() -> None:
    assert SIGNATURE.requested(None) == ("mask",)
    assert SIGNATURE.requested(["probs", "mask", "probs"]) == ("probs", "mask")
    with pytest.raises(BadRequest, match="unknown output 'logits'"):
        SIGNATURE.requested(["logits"])
    mask_only = Signature(1, 2, ("mask",), 100)
    with pytest.raises(BadRequest, match="gives mask"):
        mask_only.requested(["probs"])
    inputs, outputs = SIGNATURE.metadata()
    assert inputs == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 1]}]
    assert outputs[1] == {"name": "probs", "datatype": "FP32", "shape": [-1, -1, -1, 2]}


def _fake_run(calls: list[int], fail_on: int | None = None):
    def run(images, probs):
        calls.append(len(images))
        if fail_on is not None and any(int(i[0, 0]) == fail_on for i in images):
            raise RuntimeError(f"image {fail_on} cannot run")
        return [Output(np.full(i.shape[:2], i[0, 0], np.uint8), np.zeros((*i.shape[:2], 2), np.float32) if probs
                       else None) for i in images]  # fmt: skip

    return run


def test_concurrent_images_share_batches_and_each_gets_its_own_result() -> None:
    calls: list[int] = []
    observed: list[tuple[int, float]] = []
    batcher = Batcher(_fake_run(calls), max_batch=4, max_delay=0.05,
                      observe=lambda queued, compute, size: observed.append((size, max(queued))))  # fmt: skip

    async def main() -> list[Output]:
        images = [np.full((3, 5), i, np.uint8) for i in range(10)]
        return await asyncio.gather(*(batcher.submit(image, probs=i == 3) for i, image in enumerate(images)))

    outputs = asyncio.run(main())
    batcher.close()
    assert [int(o.mask[0, 0]) for o in outputs] == list(range(10))
    assert outputs[3].probs is not None and all(o.probs is None for i, o in enumerate(outputs) if i != 3)
    assert calls == [4, 4, 2] and [size for size, _ in observed] == [4, 4, 2]


def test_a_failing_image_fails_its_own_request_only() -> None:
    calls: list[int] = []
    batcher = Batcher(_fake_run(calls, fail_on=2), max_batch=8, max_delay=0.05)

    async def main() -> list[object]:
        images = [np.full((2, 2), i, np.uint8) for i in range(4)]
        return await asyncio.gather(*(batcher.submit(image) for image in images), return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    assert isinstance(results[2], RuntimeError) and "image 2" in str(results[2])
    assert [int(r.mask[0, 0]) for i, r in enumerate(results) if i != 2] == [0, 1, 3]
    assert calls == [4, 1, 1, 1, 1]  # the batch, then one call per image


def test_drain_waits_for_queued_images() -> None:
    release = threading.Event()

    def slow(images, probs):
        release.wait(5)
        return [Output(np.zeros(i.shape[:2], np.uint8), None) for i in images]

    batcher = Batcher(slow, max_batch=2, max_delay=0.0)

    async def main() -> tuple[bool, bool]:
        tasks = [asyncio.ensure_future(batcher.submit(np.zeros((2, 2), np.uint8))) for _ in range(3)]
        await asyncio.sleep(0.05)
        early = await batcher.drain(0.1)
        release.set()
        done = await batcher.drain(5)
        await asyncio.gather(*tasks)
        return early, done

    early, done = asyncio.run(main())
    batcher.close()
    assert (early, done) == (False, True)


SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : FindPeakPerformance
Completed samples per second    : 24.99
Result is : VALID
  Performance constraints satisfied : Yes
90.00 percentile latency (ns)   : 23360000
99.00 percentile latency (ns)   : 38350000
target_qps : 25
"""


def test_loadgen_summary_is_read_as_numbers_and_a_verdict() -> None:
    summary = parse_summary(SUMMARY)
    assert summary["valid"] is True and summary["Completed samples per second"] == 24.99
    assert summary["99.00 percentile latency (ns)"] == 38350000 and summary["Scenario"] == "Server"
    assert parse_summary(SUMMARY.replace("VALID", "INVALID"))["valid"] is False
    assert parse_summary("")["result"] == "no result line"


def test_server_split_from_fcnx_and_triton_metrics() -> None:
    before = {"fcnx_queue_seconds_sum": 1.0, "fcnx_queue_seconds_count": 10, "fcnx_compute_seconds_sum": 2.0,
              "fcnx_compute_seconds_count": 5, "fcnx_batch_size_sum": 10, "fcnx_batch_size_count": 5}  # fmt: skip
    after = {"fcnx_queue_seconds_sum": 1.5, "fcnx_queue_seconds_count": 20, "fcnx_compute_seconds_sum": 3.0,
             "fcnx_compute_seconds_count": 7, "fcnx_batch_size_sum": 20, "fcnx_batch_size_count": 7}  # fmt: skip
    assert server_split(before, after) == {"server_batch": 5.0, "queue_ms": 50.0, "compute_ms": 500.0}
    triton = {"nv_inference_queue_duration_us": 8000.0, "nv_inference_count": 8, "nv_inference_exec_count": 2,
              "nv_inference_compute_infer_duration_us": 40000.0}  # fmt: skip
    assert server_split({}, triton) == {"server_batch": 4.0, "queue_ms": 1.0, "compute_ms": 20.0}
    assert server_split({}, {}) == {}


def test_target_urls() -> None:
    assert Target.parse("http://127.0.0.1:8000", "m").metrics_url() == "http://127.0.0.1:8002/metrics"
    assert Target.parse("http://h:8080/", "m").metrics_url() == "http://h:8080/metrics"
    assert Target.parse("grpc://h:8081", "m").metrics_url() is None
    assert (
        Target.parse("grpc://h:8081", "m", "http://h:8080/metrics").metrics_url() == "http://h:8080/metrics"
    )
    for bad in ("localhost:8000", "ftp://h:1", "http://h"):
        with pytest.raises(ValueError, match="--url"):
            Target.parse(bad, "m")
    with pytest.raises(ValueError, match="--model"):
        Target.parse("http://h:1", "")


def test_every_batch_size_the_batcher_forms_is_warmed() -> None:
    assert warm_batches(1) == [1] and warm_batches(4) == [1, 2, 3, 4]
    assert warm_batches(32) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32] and warm_batches(20)[-2:] == [16, 20]


def test_this_process_never_imports_kserve() -> None:
    """KServe's gRPC protos and tritonclient's share names: one process holds only one of them
    (the server runs in its own process; these tests and fcnx bench --url use tritonclient)."""
    import sys

    assert "kserve" not in sys.modules


def test_a_request_arriving_alone_does_not_wait_for_company() -> None:
    """One client at a time runs at once; a burst still waits up to the delay and shares a batch."""
    calls: list[int] = []
    batcher = Batcher(_fake_run(calls), max_batch=8, max_delay=0.5)

    async def main() -> list[float]:
        waits = []
        for _ in range(2):
            started = time.perf_counter()
            await batcher.submit(np.zeros((2, 2), np.uint8))
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)  # longer than a batch takes: the next request is alone too
        await asyncio.gather(*(batcher.submit(np.full((2, 2), i, np.uint8)) for i in range(3)))
        return waits

    waits = asyncio.run(main())
    batcher.close()
    assert max(waits) < 0.25 and calls == [1, 1, 3]


def test_the_server_search_s_peak_is_read_from_loadgen_s_detail_log() -> None:
    from fcnx.runtime.bench.loadgen import PEAK

    line = ':::MLLOG {"key": "generic_message", "value": "FindPeakPerformance: Found peak performance field: 940.78125"'
    match = PEAK.search("...\n" + line + "\n...")
    assert match is not None and float(match.group(1)) == 940.78125
    assert PEAK.search("FindPeakPerformance: Check validity of the base settings field: 1.32") is None
