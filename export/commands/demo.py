"""fcnx demo [DIR]: the whole product on the embedded synthetic dataset, in a few minutes
on 2 CPU cores: synthetic EM-like data -> a short training run -> evaluation -> ONNX
exports in FP32, FP16 and INT8, each with its parity gate -> fcnx predict over a folder
with the lean runtime -> a short fcnx bench beside Keras -> DIR/report.html.

A precision whose parity gate refuses the briefly trained demo model is a row that says
so (that is the gate working), not a failed demo.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "dir", nargs="?", default="fcnx-demo", help="folder for everything (default: fcnx-demo)"
    )
    parser.add_argument("--arch", default="fcn8s", help="architecture (default: fcn8s)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs (default: 6)")
    parser.add_argument("--steps-per-epoch", type=int, default=25, help="batches per epoch (default: 25)")
    parser.add_argument("--images", type=int, default=24, help="synthetic image/label pairs (default: 24)")
    parser.add_argument("--size", type=int, default=256, help="their side in pixels (default: 256)")
    parser.add_argument(
        "--bench-seconds", type=float, default=1.5, help="timed seconds per bench row (default: 1.5)"
    )
    return parser


def _step(number: int, text: str) -> float:
    print(f"[{number}/7] {text}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from fcnx.export.onnx_export import OnnxExportConfig, ParityError, export_onnx
    from fcnx.export.parity_check import check_against_keras
    from fcnx.runtime.atomic import atomic_write_text
    from fcnx.runtime.bench.config import BenchConfig
    from fcnx.runtime.bench.report import write_report
    from fcnx.runtime.bench.run import run_bench
    from fcnx.runtime.html_report import build_report
    from fcnx.runtime.predict.config import PredictConfig
    from fcnx.runtime.predict.job import predict_folder
    from fcnx.train.config import ModelConfig, TrainConfig
    from fcnx.train.evaluate import evaluate
    from fcnx.train.fit import train
    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model
    from fcnx.train.synthetic import write_synthetic_dataset

    root = Path(args.dir)
    data, run_dir, exports = root / "data", root / "run", root / "exports"
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: not empty; remove it or pass another folder")
    started = time.perf_counter()

    _step(1, f"synthetic dataset: {args.images} pairs of {args.size}x{args.size} -> {data}")
    write_synthetic_dataset(data, count=args.images, size=args.size, seed=0)

    _step(2, f"training {args.arch} ({args.epochs} x {args.steps_per_epoch} steps) -> {run_dir}")
    crop = min(128, args.size)
    config = TrainConfig(
        data=str(data), out=str(run_dir), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        crop=crop, batch_size=4, model=ModelConfig(arch=args.arch),
    )  # fmt: skip
    train(config, verbose=0)
    evaluation = evaluate(run_dir, data)
    atomic_write_text(root / "evaluation.json", json.dumps(evaluation, indent=2) + "\n")
    validation = json.loads((run_dir / "card.json").read_text())["training"]["val_metrics"]["miou"]
    print(
        f"      validation mIoU {validation:.4f}, all {evaluation['images']} images {evaluation['miou']:.4f}"
    )

    _step(3, f"export onnx fp32, fp16, int8, each proven against Keras -> {exports}")
    written: dict[str, Path] = {}
    refused: dict[str, str] = {}
    for precision in PRECISIONS:
        out = exports / ("model.onnx" if precision == "fp32" else f"model.{precision}.onnx")
        options: dict[str, Any] = {"calib": str(data)} if precision == "int8" else {}
        try:
            export_onnx(
                OnnxExportConfig(
                    model=str(run_dir), out=str(out), precision=precision, data=str(data), **options
                )
            )
            written[precision] = out
            print(f"      {precision}: {out.name} within its parity budget")
        except ParityError as exc:
            refused[precision] = "; ".join(exc.rows[0].failures) if exc.rows else str(exc)
            print(f"      {precision}: refused by its parity gate ({refused[precision]})")

    _step(
        4,
        f"parity of every export on the {args.images} real images, disagreement pictures -> {root / 'parity-maps'}",
    )
    model = load_keras_model(run_dir)
    rows = check_against_keras(
        model, list(written.values()), card_for(model, find_card(run_dir)), data=data, random_images=0,
        maps=root / "parity-maps",
    )  # fmt: skip
    atomic_write_text(root / "parity.json", json.dumps([r.to_dict() for r in rows], indent=2) + "\n")

    _step(
        5,
        f"fcnx predict {written['fp32'].name} over {data / 'image'} (the lean runtime) -> {root / 'predictions'}",
    )
    summary = predict_folder(PredictConfig(
        model=str(written["fp32"]), inputs=(str(data / "image"),), out=str(root / "predictions"), overlay=True,
        progress=False,
    ))  # fmt: skip
    rate = f"{summary['images_per_second']:.1f} images/s on {summary['provider']}"
    print(f"      {summary['counts']['written']} masks at {rate}")

    _step(6, "fcnx bench: Keras and every export on onnxruntime, batch 1 and 8, side by side")
    report = run_bench(BenchConfig(
        models=(str(run_dir), *map(str, written.values())), backends="keras,ort-cpu", batch="1,8",
        data=str(data), min_seconds=args.bench_seconds, max_seconds=4 * args.bench_seconds, warmup=1,
        out=str(root / "bench"),
    ))  # fmt: skip
    write_report(report, root / "bench")

    _step(7, f"report -> {root / 'report.html'}")
    build_report([root], root / "report.html", title=f"fcnx demo ({args.arch}, synthetic EM data)")

    print()
    print(_summary_table(rows, refused, report, written))
    print(f"\ndone in {time.perf_counter() - started:.0f} s: open {root / 'report.html'}")
    print(f"  model {run_dir}  exports {exports}  masks {root / 'predictions'}  bench {root / 'bench'}")
    return 0


def _summary_table(
    rows: list[Any], refused: dict[str, str], report: dict[str, Any], written: dict[str, Path]
) -> str:
    """artifact, precision, mask agreement with Keras, images/s at batch 8, x Keras."""
    speed = {Path(r["model"]).name: r for r in report["rows"] if r["status"] == "ok" and r["batch"] == 8}
    lines = [f"{'artifact':<18} {'precision':<9} {'mask = Keras':>12} {'images/s':>9} {'x Keras':>8}  parity"]
    keras = next(
        (r for r in report["rows"] if r["backend"] == "keras" and r["batch"] == 8 and r["status"] == "ok"),
        None,
    )
    if keras:
        lines.append(
            f"{'keras (run/)':<18} {'fp32':<9} {'-':>12} {keras['images_per_second']:>9.1f} {1.0:>8.2f}  reference"
        )
    for row in rows:
        name = Path(row.artifact).name
        bench = speed.get(name, {})
        ips, vs = bench.get("images_per_second"), bench.get("vs_keras")
        lines.append(
            f"{name:<18} {row.precision:<9} {row.mask_agreement:>12.4%} {ips or 0:>9.1f} {vs or 0:>8.2f}  "
            + ("within budget" if row.passed else "OVER BUDGET")
        )
    for precision, why in refused.items():
        lines.append(f"{'(not written)':<18} {precision:<9} {'-':>12} {'-':>9} {'-':>8}  refused: {why}")
    return "\n".join(lines)
