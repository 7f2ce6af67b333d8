"""Benchmark reports: the machine they ran on, and the JSON + Markdown files the README quotes."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from fcnx.runtime.card import library_versions


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def describe_machine() -> dict[str, object]:
    return {
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "versions": library_versions("fcnx", "tensorflow", "keras", "numpy", "opencv-python-headless"),
    }


def write_report(results: Path, suite: str, rows: list[dict], to_markdown: Callable[[dict], str]) -> dict:
    """Write ``results/SUITE.json`` (rows, date, machine) and ``results/SUITE.md``; print the table."""
    doc = {"suite": suite, "date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "rows": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{suite}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results / f"{suite}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return doc
