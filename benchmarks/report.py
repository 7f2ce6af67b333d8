"""Benchmark reports: the machine they ran on, and the JSON + Markdown files the README quotes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from fcnx.runtime.machine import describe_machine


def write_report(results: Path, suite: str, rows: list[dict], to_markdown: Callable[[dict], str]) -> dict:
    """Write ``results/SUITE.json`` (rows, date, machine) and ``results/SUITE.md``; print the table."""
    doc = {"suite": suite, "date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "rows": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{suite}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results / f"{suite}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return doc
