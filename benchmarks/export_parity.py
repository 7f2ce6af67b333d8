"""Export parity on real images: FP32 and FP16 ONNX of the membrane-trained models
against their Keras originals, over all 24 membrane images (and 4 seeded random ones).

Needs the run folders of ``benchmarks/train_quality.py``. Runs exactly
``fcnx export onnx RUN -o OUT --precision P --data DATA`` for each model and
precision, timing it, and writes ``benchmarks/results/export_parity.{json,md}``.

    python benchmarks/export_parity.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_report  # noqa: E402

# name -> (precision, file, int8 options); FCN-2s gets the first three, FCN-8s all
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "FP32": ("fp32", "model.onnx", {}),
    "FP16": ("fp16", "model.fp16.onnx", {}),
    "INT8 s8s8": ("int8", "model.int8.onnx", {}),  # the defaults: decoder kept in float
    "INT8 s8s8 all quantized": ("int8", "model.int8-all.onnx", {"keep_fp32": "none"}),
    "INT8 s8s8 first,last float": ("int8", "model.int8-ends.onnx", {"keep_fp32": "first,last"}),
    "INT8 u8s8": ("int8", "model.int8-u8s8.onnx", {"int8_format": "u8s8"}),
    "INT8 u8s8 reduce-range": (
        "int8",
        "model.int8-u8s8-rr.onnx",
        {"int8_format": "u8s8", "reduce_range": True},
    ),
    "INT8 u8u8": ("int8", "model.int8-u8u8.onnx", {"int8_format": "u8u8"}),
}


def calibration_folder(run: Path, data: Path, out: Path) -> Path:
    """The run's training images (its card lists them), linked into one folder: INT8 is
    calibrated on training data, as in deployment, never on the validation images."""
    card = json.loads((run / "card.json").read_text())
    folder = out / f"calib-{run.name}"
    folder.mkdir(parents=True, exist_ok=True)
    for stem in card["training"]["train_images"]:
        source = next((data / "image").glob(f"{stem}.*"))
        link = folder / source.name
        if not link.exists():
            link.symlink_to(source.resolve())
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "membrane")
    parser.add_argument("--runs", type=Path, default=HERE.parent / "runs" / "train_quality")
    parser.add_argument("--archs", default="fcn8s,fcn2s")
    parser.add_argument("--out", type=Path, default=HERE.parent / "runs" / "export_parity")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()

    from fcnx.export.onnx_export import OnnxExportConfig, ParityError, export_onnx

    rows = []
    for arch in args.archs.split(","):
        run = args.runs / arch
        if not (run / "best.keras").is_file():
            raise SystemExit(f"{run}/best.keras not found: run benchmarks/train_quality.py first")
        variants = list(VARIANTS) if arch == "fcn8s" else list(VARIANTS)[:5]
        for name in variants:
            precision, file_name, int8 = VARIANTS[name]
            out = args.out / arch / file_name
            started = time.perf_counter()
            extra = (
                {"calib": str(calibration_folder(run, args.data, args.out)), **int8}
                if precision == "int8"
                else {}
            )
            config = OnnxExportConfig(  # 4 random images as well, as its recorded results were measured
                model=str(run),
                out=str(out),
                precision=precision,
                data=str(args.data),
                parity_images=4,
                force=True,
                **extra,
            )
            try:
                result = export_onnx(config)
                parity, mib = result["parity"][0].to_dict(), round(result["bytes"] / 2**20, 1)
                convert_seconds = result["convert_seconds"]
            except ParityError as exc:  # an over-budget recipe is a result too: recorded, nothing written
                parity, mib, convert_seconds = exc.rows[0].to_dict(), None, None
            rows.append(
                {
                    "arch": arch,
                    "precision": precision,
                    "variant": name,
                    "export_seconds": round(time.perf_counter() - started, 1),
                    "convert_seconds": convert_seconds,
                    "mib": mib,
                    "parity": parity,
                }
            )
            print(
                arch,
                precision,
                json.dumps({k: parity[k] for k in ("max_abs_prob", "mask_agreement", "miou_change")}),
            )
    write_report(args.results, "export_parity", rows, to_markdown)
    return 0


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"Each row is one `fcnx export onnx RUN --precision P --data membrane` (INT8: `--calib membrane "
        f"--int8-format F`) of a model from the table above, compared with Keras on the 24 membrane images plus "
        f"4 seeded random ones (INT8 rows calibrated on the model's 20 training images) "
        f"({doc['date']}, {m['cpu']}, {m['cores']} cores, onnxruntime CPU).",
        "",
        "| model | ONNX | max abs prob error | mean abs error | mask agreement | within 2 px of edges "
        "| mIoU change vs GT | budget | size | export time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        p = row["parity"]
        change = p["miou_change"]
        lines.append(
            f"| {row['arch'].replace('fcn', 'FCN-')} | {row.get('variant', row['precision'].upper())} | "
            f"{p['max_abs_prob']:.1e} | "
            f"{p['mean_abs_prob']:.1e} | {p['mask_agreement']:.4%} | {p['boundary_agreement']:.4%} | "
            f"{change * 100:+.4f} pt | {'pass' if p['passed'] else 'FAIL (not written)'} | "
            f"{str(row['mib']) + ' MiB' if row['mib'] else '-'} | "
            f"{row['export_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
