"""fcnx demo [DIR]: the whole training side on the embedded synthetic dataset, in
about a minute on 2 CPU cores: synth -> train briefly -> evaluate -> save masks."""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "dir", nargs="?", default="fcnx-demo", help="folder for data/, run/, masks/ (default: fcnx-demo)"
    )
    parser.add_argument("--arch", default="fcn8s", help="architecture (default: fcn8s)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs (default: 6)")
    parser.add_argument("--steps-per-epoch", type=int, default=25, help="batches per epoch (default: 25)")
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.runtime.atomic import atomic_write_text
    from fcnx.train.config import ModelConfig, TrainConfig
    from fcnx.train.evaluate import evaluate, format_report
    from fcnx.train.fit import train
    from fcnx.train.synthetic import write_synthetic_dataset

    root = Path(args.dir)
    data, run_dir, masks = root / "data", root / "run", root / "masks"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir}: already holds a run; remove {root} or pass another folder")
    print(f"[1/3] synthetic dataset -> {data}")
    write_synthetic_dataset(data, count=24, size=256, seed=0)
    print(f"[2/3] training {args.arch} -> {run_dir}")
    config = TrainConfig(
        data=str(data),
        out=str(run_dir),
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        crop=128,
        batch_size=4,
        model=ModelConfig(arch=args.arch),
    )
    train(config, verbose=2)
    print(f"[3/3] evaluating {run_dir / 'best.keras'} on all 24 images, masks -> {masks}")
    report = evaluate(run_dir, data, save_masks=masks)
    import json

    atomic_write_text(root / "evaluation.json", json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\ndone: {run_dir} (model, history, card), {masks} (predicted masks), {root / 'evaluation.json'}")
    return 0
