"""fcnx train DATA -o RUN: train an FCN on DATA/image + DATA/label and write a run folder
(best.keras, last.keras, history.csv, TensorBoard logs/, config.json, card.json)."""

from __future__ import annotations

import argparse
import json

from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args
from fcnx.train.config import AugmentConfig, ModelConfig, TrainConfig


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "data",
        help="dataset folder with image/ and label/ (paired by file name; stacks pair page by page), or "
        "an image stack with --labels",
    )
    parser.add_argument("-o", "--out", required=True, help="run folder to write")
    add_dataclass_flags(parser.add_argument_group("training"), TrainConfig)
    add_dataclass_flags(parser.add_argument_group("model"), ModelConfig)
    add_dataclass_flags(parser.add_argument_group("augmentation"), AugmentConfig)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return dataclass_from_args(
        TrainConfig,
        args,
        data=args.data,
        out=args.out,
        model=dataclass_from_args(ModelConfig, args),
        augment=dataclass_from_args(AugmentConfig, args),
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from fcnx.train.fit import train

    summary = train(config)
    metrics = summary["val_metrics"]
    print(f"\nrun folder: {summary['run']}   ({summary['seconds'] / 60:.1f} min)")
    print(f"best.keras on {metrics['images']} validation images (whole images, inference mode):")
    print(f"  mIoU {metrics['miou']:.4f}   pixel accuracy {metrics['pixel_accuracy']:.4f}")
    print(
        "  IoU per class: "
        + json.dumps({k: round(v, 4) if v is not None else None for k, v in metrics["per_class_iou"].items()})
    )
    return 0
