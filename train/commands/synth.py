"""fcnx synth OUT --count N --size S: a synthetic EM-like image/label dataset."""

from __future__ import annotations

import argparse


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("out", help="folder to write image/ and label/ into")
    parser.add_argument("--count", type=int, default=24, help="image pairs (default: 24)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.train.synthetic import write_synthetic_dataset

    out = write_synthetic_dataset(args.out, args.count, args.size, args.seed)
    print(f"wrote {args.count} image/label pairs of {args.size}x{args.size} to {out}/image and {out}/label")
    return 0
