"""fcnx predict MODEL INPUT... -o OUT: segment folders, globs or lists of images.

Writes one class-index mask per image (palette PNG or .npy) at the image's own size
and relative path, optional overlays, failures.jsonl and summary.json. Exit status:
0 all done, 3 completed with failures (see failures.jsonl), 1 could not run.
"""

from __future__ import annotations

import argparse
import json

from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.job import exit_code, format_summary, predict_folder


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="model.onnx (any precision), model.engine, a .keras file or run folder")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="folder (recursive), glob, image, or list file"
    )
    parser.add_argument("-o", "--out", required=True, help="output folder")
    add_dataclass_flags(parser, PredictConfig)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    config = dataclass_from_args(
        PredictConfig, args, model=args.model, inputs=tuple(args.inputs), out=args.out
    )
    summary = predict_folder(config)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return exit_code(summary)
