"""Benchmark reports: the machine they ran on, and the JSON + Markdown files the README quotes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from fcnx.runtime.bench.machine import describe_machine


def write_report(
    results: Path, suite: str, rows: list[dict] | dict[str, list[dict]], to_markdown: Callable[[dict], str]
) -> dict:
    """Write ``results/SUITE.json`` (rows, date, machine) and ``results/SUITE.md``; print the table."""
    doc = {"suite": suite, "date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "rows": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{suite}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results / f"{suite}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return doc


def write_bench_results(results: Path, suite: str, report: dict, columns: list[tuple[str, str]]) -> None:
    """An ``fcnx bench`` report as the suite's results, written by fcnx bench's own report
    code: SUITE.json, SUITE.csv, SUITE.md (``columns``), SUITE-throughput.png, SUITE-latency.png."""
    from fcnx.runtime.bench.report import markdown, write_report

    report = {"suite": suite, "date": time.strftime("%Y-%m-%d"), **report}
    write_report(report, results, stem=suite, columns=columns, plot_prefix=f"{suite}-")
    print(markdown(report, columns))
