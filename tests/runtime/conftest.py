"""Fixtures shared by the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local 2-CPU Ray cluster for the module (starting Ray takes seconds); skips without Ray."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "fcnx[ray]"')
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
