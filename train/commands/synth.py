"""fcnx synth OUT --count N --size S: a synthetic EM-like image/label dataset.

``--stack N``: N pairs, written as PNGs and also as OUT/image.tif + OUT/label.tif, two
N-page TIFF stacks (the ISBI 2012 layout: 8-bit image pages, 0/255 label pages)."""

from __future__ import annotations

import argparse


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("out", help="folder to write image/ and label/ into")
    parser.add_argument("--count", type=int, default=None, help="image pairs (default: 24)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--stack",
        type=int,
        metavar="N",
        default=None,
        help="N pairs, also written as image.tif / label.tif: N-page TIFF stacks (ISBI layout)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.train.synthetic import write_synthetic_dataset, write_synthetic_stacks

    count = args.count if args.count is not None else (args.stack or 24)
    if args.stack is not None and args.count is not None and args.count != args.stack:
        raise ValueError(f"--stack {args.stack} makes {args.stack} pairs, but --count says {args.count}")
    out = write_synthetic_dataset(args.out, count, args.size, args.seed)
    print(f"wrote {count} image/label pairs of {args.size}x{args.size} to {out}/image and {out}/label")
    if args.stack is not None:
        image, label = write_synthetic_stacks(out, count)
        print(f"wrote {count}-page stacks {image} and {label}")
    return 0
