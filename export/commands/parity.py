"""fcnx parity MODEL.keras ARTIFACT...: does each exported artifact compute what the Keras
model computes? One row per artifact; exit 1 when any row is over its budget."""

from __future__ import annotations

import argparse
import json
import sys

from fcnx.runtime.flags import add_tiling_flags
from fcnx.runtime.intensity import INTENSITY_HELP, NoteCounter, parse_intensity


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("model", help="the reference: a .keras file or a run folder")
    parser.add_argument("artifacts", nargs="+", help=".onnx files (any precision) exported from it")
    parser.add_argument(
        "--data", metavar="DIR", help="real images (image/, optional label/ for the mIoU change)"
    )
    parser.add_argument(
        "--random-images",
        type=int,
        help="seeded random images (default: 4 without --data, none with it: reduced precisions are judged on real "
        "images)",
    )
    add_tiling_flags(parser)
    parser.add_argument(
        "--intensity", metavar="SPEC", help=INTENSITY_HELP + " (default: the run's card; full without one)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument(
        "--maps",
        metavar="DIR",
        help="write disagreement pictures (red: differs from Keras) of the real images",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.export.onnx_export import random_images_default
    from fcnx.export.parity import format_rows
    from fcnx.export.parity_check import check_against_keras
    from fcnx.runtime.atomic import atomic_write_text
    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model

    if args.intensity:
        parse_intensity(args.intensity, "--intensity")  # a malformed spec fails before anything loads
    model = load_keras_model(args.model)
    notes = NoteCounter()
    card = card_for(model, find_card(args.model))
    rows = check_against_keras(
        model,
        args.artifacts,
        card,
        data=args.data,
        random_images=random_images_default(args.data) if args.random_images is None else args.random_images,
        maps=args.maps,
        tile=args.tile,
        overlap=args.overlap,
        intensity=args.intensity,
        notes=notes,
    )
    print(format_rows(rows))
    if notes.count:
        print(notes.line(), file=sys.stderr)
    if args.json:
        atomic_write_text(args.json, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0 if all(r.passed for r in rows) else 1
