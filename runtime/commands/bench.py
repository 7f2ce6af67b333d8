"""fcnx bench MODEL... --backends keras,ort-cpu --batch 1,8,32: latency and throughput of
every model file on every backend that can load it, side by side in one run, with the
machine's matmul ceiling and the Keras baseline measured in the same run.

Writes OUT/bench.json, bench.csv, bench.md, throughput.png and latency.png, and
prints the table. Example:

  fcnx bench runs/fcn8s runs/fcn8s/model.onnx runs/fcn8s/model.fp16.onnx --backends keras,ort-cpu --batch 1,8

With --url, a server speaking the Open Inference Protocol (fcnx serve, or Triton serving fcnx
export triton's repository) under load: MLPerf LoadGen's SingleStream, Server and Offline
scenarios and a concurrency sweep, with the server's queue/compute split from its /metrics:

  fcnx bench --url http://localhost:8080 --model DEPLOY --data membrane/ --size 512x512
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from fcnx.runtime.bench.config import BenchConfig
from fcnx.runtime.bench.report import COLUMNS, SERVED_COLUMNS, describe_run, table, write_report
from fcnx.runtime.bench.run import run_bench
from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help=".keras / run folder, .onnx, .engine")
    add_dataclass_flags(parser, BenchConfig)
    return parser


def run(args: argparse.Namespace) -> int:
    config = dataclass_from_args(BenchConfig, args, models=tuple(args.models))
    plots = config.plots
    if plots and importlib.util.find_spec("matplotlib") is None:
        print('note: plots skipped, matplotlib is not installed: pip install "fcnx[bench]"', file=sys.stderr)
        plots = False
    if config.url:
        if config.models:
            print("error: give MODEL files or --url, not both", file=sys.stderr)
            return 2
        from fcnx.runtime.bench.served import served_report

        print(f"benchmarking {config.url} model {config.model!r}", flush=True)
        report = served_report(config)
    else:
        report = run_bench(config)
    columns = SERVED_COLUMNS if config.url else COLUMNS
    written = write_report(report, config.out, plots=plots, columns=columns)
    print(table(report, columns=columns))
    print(describe_run(report))
    print("wrote " + ", ".join(str(p) for p in written))
    # unavailable backends (no GPU here) are information; a backend that loaded and then failed is an
    # error, and so is a run in which nothing could be timed at all
    if not any(r["status"] == "ok" for r in report["rows"]):
        print("error: nothing was measured: no model ran on any of --backends (see the status column)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 1 if any(r["status"] == "failed" for r in report["rows"]) else 0
