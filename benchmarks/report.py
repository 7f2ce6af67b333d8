"""Benchmark reports: the machine they ran on, and the JSON + Markdown files the docs quote."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from fcnx.runtime.bench.machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared"


def suite_parser(doc: str | None, suite: str) -> argparse.ArgumentParser:
    """The flags every suite has: --data (the membrane slices), --work (runs/SUITE), --results,
    --render (only the Markdown again, from the results JSON)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "membrane")
    parser.add_argument("--work", type=Path, default=RESULTS.parents[1] / "runs" / suite)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the Markdown from the results JSON"
    )
    return parser


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
