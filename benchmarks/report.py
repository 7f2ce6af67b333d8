"""Benchmark reports: the machine they ran on, and the JSON + Markdown files the README quotes."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fcnx.runtime.bench.machine import describe_machine


def write_report(results: Path, suite: str, rows: list[dict], to_markdown: Callable[[dict], str]) -> dict:
    """Write ``results/SUITE.json`` (rows, date, machine) and ``results/SUITE.md``; print the table."""
    doc = {"suite": suite, "date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "rows": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{suite}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (results / f"{suite}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return doc


def write_bench_results(results: Path, suite: str, report: dict, columns: list[tuple[str, str]]) -> None:
    """An ``fcnx bench`` report as the suite's results: SUITE.json (everything, latencies
    included), SUITE.csv, SUITE.md (the README's table: ``columns`` of the timed rows,
    then the machine and ceiling line), SUITE-throughput.png and SUITE-latency.png."""
    from fcnx.runtime.bench.report import describe_run, plot, to_csv

    results.mkdir(parents=True, exist_ok=True)
    report = {"suite": suite, "date": time.strftime("%Y-%m-%d"), **report}
    (results / f"{suite}.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / f"{suite}.csv").write_text(to_csv(report))
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in report["rows"]:
        cells = []
        for key, _ in columns:
            value = Path(row["model"]).name if key == "file" else row.get(key)
            if key == "status" and value != "ok":
                value = f"{value}: {row.get('reason', '')[:80]}"
            elif key == "stable":
                value = "yes" if value else ("no" if value is False else "-")
            elif isinstance(value, float):
                value = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
            cells.append("-" if value is None or value == "" else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + f"\n\n{describe_run(report)} Date: {report['date']}.\n"
    (results / f"{suite}.md").write_text(text)
    with tempfile.TemporaryDirectory() as tmp:
        for path in plot(report, Path(tmp)):
            shutil.copyfile(path, results / f"{suite}-{path.name}")
    print(text)
