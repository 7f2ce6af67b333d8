"""CPU backends side by side: Keras vs onnxruntime FP32 and FP16 on the membrane-trained
FCN-8s and FCN-2s at 512x512, batches 1/8/32, one ``fcnx bench`` run (so every ratio is
measured in the same minutes), with this machine's matmul ceiling measured in the same
run. Times real membrane images. Writes ``benchmarks/results/cpu_backends.*``.

Needs the run folders of ``benchmarks/train_quality.py`` and the ONNX files of
``benchmarks/export_parity.py``. Keep the machine otherwise idle while it runs (~15 min).

    python benchmarks/cpu_backends.py               # Keras vs FP32 / FP16
    python benchmarks/cpu_backends.py --part int8   # FCN-8s FP32 vs the INT8 formats (s8s8, u8s8, u8s8 rr, u8u8)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_bench_results  # noqa: E402

COLUMNS = [
    ("arch", "model"), ("file", "file"), ("backend", "backend"), ("precision", "precision"), ("batch", "batch"),
    ("images_per_second", "images/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
    ("gflops_per_second", "GFLOP/s"), ("percent_of_peak", "% of peak"), ("vs_keras", "x Keras"),
    ("stable", "stable"), ("status", "status"),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "membrane")
    parser.add_argument("--runs", type=Path, default=HERE.parent / "runs" / "train_quality")
    parser.add_argument("--onnx", type=Path, default=HERE.parent / "runs" / "export_parity")
    parser.add_argument("--archs", default="fcn8s,fcn2s")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--min-seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument(
        "--part",
        choices=("main", "int8"),
        default="main",
        help="main: Keras vs FP32/FP16 (cpu_backends.*); int8: FCN-8s FP32 vs the INT8 formats (cpu_backends_int8.*)",
    )
    args = parser.parse_args()

    from fcnx.runtime.bench.run import BenchConfig, run_bench

    if args.part == "main":
        suite = "cpu_backends"
        files = ["model.onnx", "model.fp16.onnx"]
        archs = args.archs.split(",")
    else:
        suite = "cpu_backends_int8"
        files = ["model.onnx", *(f"model.int8{v}.onnx" for v in ("", "-all", "-u8s8", "-u8s8-rr", "-u8u8"))]
        archs = ["fcn8s"]
        args.batch = args.batch if args.batch != "1,8,32" else "1,8"
    models = []
    for arch in archs:
        for path in (args.runs / arch, *(args.onnx / arch / f for f in files)):
            if not path.exists():
                raise SystemExit(
                    f"{path} not found: run benchmarks/train_quality.py and export_parity.py first"
                )
            models.append(str(path))
    config = BenchConfig(
        models=tuple(models),
        backends="keras,ort-cpu",
        batch=args.batch,
        data=str(args.data) if (args.data / "image").is_dir() else None,
        min_seconds=args.min_seconds,
        max_seconds=max(120.0, 6 * args.min_seconds),
        out=str(HERE.parent / "runs" / "bench" / suite),
    )
    write_bench_results(args.results, suite, run_bench(config), COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
