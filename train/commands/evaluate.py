"""fcnx evaluate MODEL DATA: mIoU, per-class IoU, pixel accuracy and Dice of a .keras
model (or run folder) on a labelled image/label folder, full resolution (tiled like fcnx predict)."""

from __future__ import annotations

import argparse
import json

from fcnx.runtime.flags import add_tiling_flags
from fcnx.runtime.intensity import INTENSITY_HELP


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("model", help="a .keras file, or a run folder (its best.keras)")
    parser.add_argument(
        "data", help="folder with image/ and label/ (stacks pair page by page), or an image stack"
    )
    parser.add_argument(
        "--labels", metavar="STACK", help="with DATA an image stack (e.g. train-volume.tif): its label stack"
    )
    parser.add_argument("--classes", help="classes file (default: the run's card.json, else detect)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (default: 4)")
    parser.add_argument(
        "--save-masks", metavar="DIR", help="write predicted masks here, as the labels are encoded"
    )
    add_tiling_flags(parser)
    parser.add_argument(
        "--intensity", metavar="SPEC", help=INTENSITY_HELP + " (default: the run's card; full without one)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.runtime.atomic import atomic_write_text
    from fcnx.train.evaluate import evaluate, format_report

    report = evaluate(
        args.model,
        args.data,
        args.classes,
        args.batch_size,
        args.save_masks,
        args.tile,
        args.overlap,
        args.intensity,
        args.labels,
    )
    print(format_report(report))
    if args.save_masks:
        print(f"\nmasks written to {args.save_masks}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json}")
    return 0
