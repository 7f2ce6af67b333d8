"""The price of the file pipeline: ``fcnx predict`` over the 24 membrane PNGs (read,
decode, infer, encode, write) against ``Segmenter.predict`` on the same images already
decoded, same backend and batch, timed round-robin in one ``fcnx bench --pipeline`` run.
Writes ``benchmarks/results/pipeline.*``.

    python benchmarks/pipeline.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_bench_results  # noqa: E402

COLUMNS = [
    ("arch", "model"), ("backend", "backend"), ("precision", "precision"), ("mode", "mode"),
    ("batch", "batch"), ("images_per_second", "images/s"), ("vs_raw", "x raw"), ("calls", "calls"),
    ("stable", "stable"),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "membrane")
    parser.add_argument("--onnx", type=Path, default=HERE.parent / "runs" / "export_parity" / "fcn8s")
    parser.add_argument("--batch", default="8")
    parser.add_argument("--min-seconds", type=float, default=40.0)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    from fcnx.runtime.bench.run import BenchConfig, run_bench

    model = args.onnx / "model.onnx"
    if not model.is_file():
        raise SystemExit(f"{model} not found: run benchmarks/export_parity.py first")
    config = BenchConfig(
        models=(str(model),),
        backends="ort-cpu",
        batch=args.batch,
        data=str(args.data),
        pipeline=True,
        min_seconds=args.min_seconds,
        max_seconds=4 * args.min_seconds,
        out=str(HERE.parent / "runs" / "bench" / "pipeline"),
    )
    report = run_bench(config)
    report["rows"] = [r for r in report["rows"] if r["mode"] != "infer"]
    write_bench_results(args.results, "pipeline", report, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
