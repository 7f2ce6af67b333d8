"""``fcnx predict --ray`` (a local Ray cluster on this machine) against a plain
``fcnx predict`` on the same folder: images/s of each, and whether every mask file is
byte-identical. Runs are whole ``fcnx predict`` processes, round-robin, so each
pays its own start-up (imports, model load, and for Ray the cluster and its actors).
The input is the 24 membrane images repeated ``--copies`` times (symlinks).
Writes ``benchmarks/results/ray_predict.{json,md}``.

    python benchmarks/ray_predict.py                 # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_report  # noqa: E402


def make_inputs(data: Path, copies: int, folder: Path) -> int:
    images = sorted((data / "image").iterdir())
    for c in range(copies):
        sub = folder / f"copy{c:02d}"
        sub.mkdir(parents=True)
        for image in images:
            (sub / image.name).symlink_to(image.resolve())
    return copies * len(images)


def run_predict(model: Path, inputs: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "fcnx.runtime.cli", "predict", str(model), str(inputs), "-o", str(out)]
    command += ["--no-progress", "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    return {"process_seconds": wall, "summary": summary}


def mask_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def steady_rate(row: dict) -> float | None:
    """Images/s after the first batch came back (Ray's start-up excluded), median over runs."""
    rates = []
    for summary in row["summaries"]:
        first = summary.get("ray", {}).get("seconds_to_first_result")
        if first is None:
            return None
        rates.append((summary["counts"]["written"] - summary["batch"]) / (summary["seconds"] - first))
    return statistics.median(rates)


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    rows = doc["rows"]
    lines = [
        f"`fcnx predict` of {rows[0]['images']} membrane images (512×512 PNG, the 24 repeated) with "
        f"`{Path(doc['rows'][0]['model']).name}` (FCN-8s FP32, onnxruntime CPU, batch {rows[0]['batch']}); "
        f"median of {rows[0]['rounds']} round-robin runs, each a fresh process. Measured {doc['date']} on "
        f"{m['cpu']} ({m['cores']} cores), Ray {rows[-1].get('ray_version', '?')}.",
        "",
        "| run | replicas × threads | end-to-end s | images/s end to end | × local | job images/s | "
        "first result s | images/s after it | masks identical to local |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['replicas']} × {r['threads']} | {r['process_seconds']:.1f} | "
            f"{r['images_per_second_end_to_end']:.2f} | {r['vs_local']:.2f} | {r['job_images_per_second']:.2f} | "
            f"{_seconds(r['first_result_seconds'])} | {_rate(steady_rate(r))} | "
            f"{r['identical']} |"
        )
    lines += [
        "",
        "End to end: the whole process (Python start, imports, model load; for Ray also starting "
        "the local cluster and its actors). Job: from the start of the job to the last mask written "
        "(for Ray this includes the cluster start; `first result` is how long until the first batch "
        "came back, and `images/s after it` the rate from then on).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "membrane")
    parser.add_argument(
        "--onnx", type=Path, default=HERE.parent / "runs" / "export_parity" / "fcn8s" / "model.onnx"
    )
    parser.add_argument("--copies", type=int, default=10, help="repeat the 24 images this many times")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="Ray replicas to try, comma-separated")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if not args.onnx.is_file():
        raise SystemExit(f"{args.onnx} not found: run benchmarks/export_parity.py first")

    from fcnx.runtime.backends.ort import usable_cores

    cores = usable_cores()
    runs: dict[str, tuple[list[str], int, int]] = {"local": ([], cores, 1)}
    for w in (int(v) for v in args.workers.split(",")):
        runs[f"ray, {w} replica{'s' * (w > 1)}"] = (["--ray", "--workers", str(w)], max(1, cores // w), w)
    results: dict[str, list[dict]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        count = make_inputs(args.data, args.copies, inputs)
        reference: dict[str, bytes] | None = None
        for round_ in range(args.rounds):
            for i, (name, (extra, _, _)) in enumerate(runs.items()):
                out = Path(tmp) / f"out{round_}-{i}"
                result = run_predict(args.onnx, inputs, out, extra)
                masks = mask_bytes(out)
                reference = reference or masks
                result["identical"] = masks == reference and len(masks) == count
                results[name].append(result)
                s = result["summary"]
                print(f"{name}: {result['process_seconds']:.1f} s, {s['counts']}", flush=True)
    local_wall = statistics.median(r["process_seconds"] for r in results["local"])
    rows = []
    for name, (_, threads, replicas) in runs.items():
        done = results[name]
        wall = statistics.median(r["process_seconds"] for r in done)
        first = [r["summary"].get("ray", {}).get("seconds_to_first_result") for r in done]
        rows.append({
            "run": name,
            "model": str(args.onnx),
            "images": count,
            "rounds": args.rounds,
            "batch": done[0]["summary"]["batch"],
            "replicas": replicas,
            "threads": threads,
            "process_seconds": wall,
            "images_per_second_end_to_end": count / wall,
            "vs_local": local_wall / wall,
            "job_images_per_second": statistics.median(r["summary"]["images_per_second"] for r in done),
            "first_result_seconds": statistics.median(first) if all(f is not None for f in first) else None,
            "identical": "yes" if all(r["identical"] for r in done) else "NO",
            "ray_version": done[0]["summary"].get("ray", {}).get("version"),
            "summaries": [r["summary"] for r in done],
        })  # fmt: skip
    write_report(args.results, "ray_predict", rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
