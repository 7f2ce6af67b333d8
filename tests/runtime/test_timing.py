"""The timing harness with a fake clock: percentiles, stability, round-robin."""

from __future__ import annotations

import pytest

from fcnx.runtime.bench.timing import Timing, TimingConfig, percentile, time_side_by_side, windows_agree


def test_percentiles_against_a_known_sample() -> None:
    sample = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(sample, 50) == pytest.approx(50.5)
    assert percentile(sample, 90) == pytest.approx(90.1)
    assert percentile(sample, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match=r"^percentile of no values$"):
        percentile([], 50)


def test_stability_needs_two_agreeing_windows() -> None:
    assert not windows_agree([1.0] * 9, 5, 0.1)
    assert windows_agree([1.0] * 5 + [1.05] * 5, 5, 0.1)
    assert not windows_agree([1.0] * 5 + [1.2] * 5, 5, 0.1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_times_every_contender_until_done() -> None:
    clock = FakeClock()
    calls = {"fast": 0, "slow": 0}

    def make(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            calls[name] += 1
            clock.now += seconds

        return call

    config = TimingConfig(warmup=2, min_seconds=3.0, min_calls=10, round_seconds=1.0)
    timings = time_side_by_side(
        {"fast": (make("fast", 0.1), 8), "slow": (make("slow", 0.4), 8)}, config, clock
    )
    fast, slow = timings["fast"], timings["slow"]
    assert fast.seconds >= 3.0 and len(fast.latencies) >= 10 and len(slow.latencies) >= 10
    assert calls["fast"] == len(fast.latencies) + 2  # warm-up calls are not timed
    assert fast.images_per_second == pytest.approx(80.0) and slow.images_per_second == pytest.approx(20.0)
    assert fast.summary(config)["stable"] is True and fast.summary(config)["p50_ms"] == pytest.approx(100.0)


def test_unstable_contender_stops_at_max_seconds() -> None:
    clock = FakeClock()
    step = iter(range(10**6))

    def noisy() -> None:  # 0.1, 1.0, 0.1, ...: windows of 3 never agree
        clock.now += 0.1 if next(step) % 2 == 0 else 1.0

    config = TimingConfig(warmup=0, min_seconds=1.0, max_seconds=20.0, window=3, tolerance=0.01)
    t = time_side_by_side({"noisy": (noisy, 1)}, config, clock)["noisy"]
    assert 20.0 <= t.seconds <= 20.0 + config.round_seconds + 1.0 and not t.summary(config)["stable"]
    assert isinstance(t, Timing)
