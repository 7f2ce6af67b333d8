"""``fcnx bench`` results: the terminal table, bench.json (round-trips), bench.csv,
bench.md, and the plots (throughput vs batch size per backend; latency distribution)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, atomic_write_text
from .config import BenchRow
from .machine import describe_flags

COLUMNS = [
    ("model", "model"), ("backend", "backend"), ("precision", "prec"), ("mode", "mode"), ("batch", "batch"),
    ("images_per_second", "img/s"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"),
    ("gflops_per_second", "GFLOP/s"), ("percent_of_peak", "% peak"), ("vs_keras", "x Keras"),
    ("vs_raw", "x raw"), ("stable", "stable"), ("status", "status"),
]  # fmt: skip

# fcnx bench --url: a server under load (runtime/bench/served.py); "valid" is LoadGen's verdict
SERVED_COLUMNS = [
    ("model", "model"), ("backend", "client"), ("mode", "scenario"), ("concurrency", "clients"),
    ("images_per_second", "img/s"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"),
    ("queue_ms", "queue ms"), ("compute_ms", "compute ms/batch"), ("server_batch", "server batch"),
    ("stable", "valid"), ("status", "status"),
]  # fmt: skip


Columns = list[tuple[str, str]]  # (BenchRow field, or "file" for the model's file name; title)


def rows_of(report: dict[str, Any]) -> list[BenchRow]:
    return [BenchRow.from_dict(r) for r in report["rows"]]


def cell(row: BenchRow, key: str) -> str:
    if key == "file":
        return Path(row.model).name or row.model
    if key == "model":
        return _model_label(row)
    value = getattr(row, key)
    if key == "batch" and value == 0:
        return "all"
    if key == "status" and row.status != "ok":
        return f"{row.status}: {row.reason[:60]}"
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _model_label(row: BenchRow) -> str:
    path = Path(row.model)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def table(report: dict[str, Any], markdown: bool = False, columns: Columns = COLUMNS) -> str:
    rows = rows_of(report)
    header = [title for _, title in columns]
    body = [[cell(r, k) for k, _ in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)


def describe_run(report: dict[str, Any]) -> str:
    machine = report["machine"]
    parts = [f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB"]
    if machine.get("cpu_flags"):
        parts.append(f"CPU flags: {describe_flags(machine['cpu_flags'])}")
    if machine.get("gpus"):
        parts.append(", ".join(machine["gpus"]))
    versions = machine.get("versions", {})
    shown = ("onnxruntime", "onnxruntime-gpu", "tensorflow", "keras", "tensorrt", "openvino")
    libs = ", ".join(f"{k} {v}" for k, v in versions.items() if k in shown)
    text = f"Machine: {'; '.join(parts)}. {libs}."
    if report.get("date"):
        text += f" Date: {report['date']}."
    cpu = report.get("ceiling", {}).get("cpu")
    if cpu:
        text += (
            f" CPU FP32 matmul ceiling measured in the same run: {cpu['peak_gflops']:.0f} GFLOP/s "
            f"(numpy {cpu['numpy_gflops']:.0f}, onnxruntime {cpu['onnxruntime_gflops']:.0f})."
        )
    peaks = report.get("ceiling", {}).get("cpu_openvino", {}).get("peaks", {})
    if peaks:
        ceilings = [
            f"{p.upper()} {v['peak_gflops']:.0f}"
            if "peak_gflops" in v
            else f"{p.upper()} not measured ({v['reason']})"
            for p, v in peaks.items()
        ]
        text += (
            f" Per-precision matmul ceilings through OpenVINO (GFLOP/s, INT8 GOP/s): {', '.join(ceilings)}."
        )
    gpu = report.get("ceiling", {}).get("gpu")
    if gpu and gpu.get("peak_gflops"):
        text += f" GPU FP16 matmul ceiling: {gpu['peak_gflops']:.0f} GFLOP/s."
    return text


def markdown(report: dict[str, Any], columns: Columns = COLUMNS) -> str:
    return f"{table(report, markdown=True, columns=columns)}\n\n{describe_run(report)}\n"


def to_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    fields = [k for k in BenchRow.__dataclass_fields__ if k != "latencies_ms"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow(row)
    return buffer.getvalue()


def plot(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """PREFIXthroughput.png (images/s vs batch, or vs clients for a server, a line per model x backend) and
    PREFIXlatency.png (the per-call latency distribution of every timed row); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows_of(report) if r.status == "ok" and r.images_per_second]
    served = any(r.concurrency for r in rows)  # fcnx bench --url: throughput over clients, not batch
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if served:
            if r.concurrency:
                lines.setdefault(f"{_model_label(r)} {r.backend}", []).append(
                    (r.concurrency, r.images_per_second or 0)
                )
            continue
        label = f"{_model_label(r)} {r.backend}" + ("" if r.mode == "infer" else f" ({r.mode})")
        lines.setdefault(label, []).append((r.batch, float(r.images_per_second or 0)))
    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients" if served else "batch size")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput")
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    written.append(_save(fig, out / f"{prefix}throughput.png"))
    plt.close(fig)

    timed = [r for r in rows if r.latencies_ms]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.35 * len(timed) + 1)))
    if timed:
        ax.boxplot([r.latencies_ms for r in timed], orientation="horizontal", whis=(1, 99), showfliers=False)
        ax.set_yticks(range(1, len(timed) + 1))
        ax.set_yticklabels([f"{_model_label(r)} {r.backend} {r.mode} b{r.batch}" for r in timed], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms); whiskers p1-p99")
    ax.set_title("Latency distribution")
    fig.tight_layout()
    written.append(_save(fig, out / f"{prefix}latency.png"))
    plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def write_report(
    report: dict[str, Any],
    out: str | Path,
    plots: bool = True,
    stem: str = "bench",
    columns: Columns = COLUMNS,
    plot_prefix: str = "",
) -> list[Path]:
    """OUT/STEM.json (everything, latencies included), STEM.csv, STEM.md (``columns`` of
    the rows, then the machine and ceiling line) and the plots; returns the paths."""
    out = Path(out)
    written = []
    for name, text in (
        (f"{stem}.json", json.dumps(report, indent=2) + "\n"),
        (f"{stem}.csv", to_csv(report)),
        (f"{stem}.md", markdown(report, columns)),
    ):
        atomic_write_text(out / name, text)
        written.append(out / name)
    if plots:
        written += plot(report, out, plot_prefix)
    return written
