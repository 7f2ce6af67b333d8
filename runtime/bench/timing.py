"""Timing that survives a noisy machine: warm-up, then timed calls until a minimum time
and count, and until the last two windows of calls agree (``stable``); several
contenders timed round-robin in one run, so their ratio is measured side by side
(a slow minute on the machine hits all of them, not one). ``best_seconds`` (the
ceiling's measure: the fastest call) runs on the same loop, ``time_calls``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 3  # untimed calls first (graph compilation, allocator, caches)
    min_seconds: float = 10.0  # timed seconds per contender, at least
    min_calls: int = 10
    max_seconds: float = 120.0  # give up waiting for stability after this long
    window: int = 5  # calls per stability window
    tolerance: float = 0.10  # the last two windows' mean latencies within 10 %
    round_seconds: float = 2.0  # round-robin slice per contender


@dataclass
class Timing:
    images_per_call: int
    latencies: list[float] = field(default_factory=list)  # seconds per call

    @property
    def seconds(self) -> float:
        return float(sum(self.latencies))

    @property
    def images_per_second(self) -> float:
        return self.images_per_call * len(self.latencies) / self.seconds if self.latencies else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)

    def stable(self, window: int, tolerance: float) -> bool:
        return windows_agree(self.latencies, window, tolerance)

    def summary(self, config: TimingConfig) -> dict[str, float | int | bool]:
        return {
            "calls": len(self.latencies),
            "images_per_second": round(self.images_per_second, 3),
            "p50_ms": round(1e3 * self.percentile(50), 2),
            "p90_ms": round(1e3 * self.percentile(90), 2),
            "p99_ms": round(1e3 * self.percentile(99), 2),
            "stable": self.stable(config.window, config.tolerance),
        }


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def windows_agree(latencies: list[float], window: int, tolerance: float) -> bool:
    """The mean of the last ``window`` calls and of the ``window`` before within ``tolerance``."""
    if len(latencies) < 2 * window:
        return False
    last = float(np.mean(latencies[-window:]))
    before = float(np.mean(latencies[-2 * window : -window]))
    return abs(last - before) <= tolerance * min(last, before)


def _done(t: Timing, config: TimingConfig) -> bool:
    if t.seconds >= config.max_seconds:
        return True
    enough = t.seconds >= config.min_seconds and len(t.latencies) >= config.min_calls
    return enough and t.stable(config.window, config.tolerance)


def time_calls(
    call: Callable[[], object], timing: Timing, until: Callable[[], bool], clock: Callable[[], float]
) -> None:
    """The one timing loop: call and record each call's seconds until ``until()`` says stop."""
    while not until():
        start = clock()
        call()
        timing.latencies.append(clock() - start)


def best_seconds(
    call: Callable[[], object],
    seconds: float,
    min_calls: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The fastest of repeated calls: one untimed warm-up, then calls until ``seconds``
    have been spent and at least ``min_calls`` were made (the best run is the one the
    machine's noise disturbed least)."""
    call()
    timing = Timing(1)
    time_calls(call, timing, lambda: timing.seconds >= seconds and len(timing.latencies) >= min_calls, clock)
    return min(timing.latencies)


def _deadline(clock: Callable[[], float], seconds: float) -> Callable[[], bool]:
    end = clock() + seconds
    return lambda: clock() >= end


def time_side_by_side(
    contenders: dict[str, tuple[Callable[[], object], int]],
    config: TimingConfig | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time ``{name: (call, images per call)}`` round-robin: each takes ``round_seconds``
    turns until every one is done (min time, min calls, stable or max time)."""
    config = config or TimingConfig()
    timings = {name: Timing(images) for name, (_, images) in contenders.items()}
    for call, _ in contenders.values():
        for _ in range(config.warmup):
            call()
    while not all(_done(timings[name], config) for name in contenders):
        for name, (call, _) in contenders.items():
            timing = timings[name]
            if _done(timing, config):
                continue
            time_calls(call, timing, _deadline(clock, config.round_seconds), clock)
    return timings
