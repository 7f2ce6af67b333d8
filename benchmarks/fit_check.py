"""Does a trained model underfit, overfit, or sit on the wrong decision threshold?

For each run folder (from ``fcnx train``), load its best.keras and the exact
training/validation split its config.json made, predict every whole image in
inference mode, and report:

- mIoU on its own training images and on the validation images: train ≈ val and
  both low means the model underfits (capacity or optimization is the limit, not
  data); train far above val means it overfits;
- for binary models, the validation mIoU at decision thresholds 0.30 ... 0.70 on
  the probability of the second class: a best threshold far from 0.5, with a clear
  gain, means the loss left the model miscalibrated for IoU.

Writes ``benchmarks/results/fit_check.{json,md}``.

    python benchmarks/fit_check.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_report  # noqa: E402

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.701, 0.05))
NOT_FLAGS = {"data", "out", "resume", "in_channels", "num_classes", "arch"}


def recipe_flags(config: Any) -> str:
    """The ``fcnx train`` flags that differ from the defaults (the recipe variant)."""
    from fcnx.train.config import TrainConfig
    from fcnx.train.fit import flatten_config

    given, default = flatten_config(config.to_dict()), flatten_config(TrainConfig().to_dict())
    flags = []
    for key in sorted(given):
        value = given[key]
        if key in NOT_FLAGS or value == default.get(key):
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list | tuple):
            flags.append(f"--{name} " + " ".join(str(v) for v in value))
        else:
            flags.append(f"--{name} {value}")
    return " ".join(flags) or "(defaults)"


def miou(probs: list[np.ndarray], masks: list[np.ndarray], classes: int, threshold: float | None) -> float:
    """Dataset mIoU from one confusion matrix; ``threshold`` (binary only) on class 1's
    probability, None for the model's own decision (argmax / sigmoid > 0.5)."""
    from fcnx.runtime.metrics import confusion_matrix, mean_iou

    cm = np.zeros((classes, classes), dtype=np.int64)
    for p, truth in zip(probs, masks):
        if p.shape[-1] == 1:  # sigmoid head: the probability of class 1
            p1 = p[..., 0]
            pred = p1 > (0.5 if threshold is None else threshold)
        else:
            pred = p.argmax(axis=-1) if threshold is None else p[..., 1] > threshold
        cm += confusion_matrix(truth, pred.astype(np.uint8), classes)
    return mean_iou(cm)


def check(run: Path) -> dict[str, Any]:
    from fcnx.train.config import TrainConfig
    from fcnx.train.evaluate import predict_probabilities
    from fcnx.train.fit import load_training_data
    from fcnx.train.model_file import load_keras_model

    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    train_set, val_set = load_training_data(dataclasses.replace(config, resume=False))
    model = load_keras_model(run / "best.keras")
    classes = train_set.classes.num_classes
    train_probs = predict_probabilities(model, train_set.images)
    val_probs = predict_probabilities(model, val_set.images)
    row: dict[str, Any] = {
        "run": str(run),
        "arch": config.model.arch,
        "recipe": recipe_flags(config),
        "train_images": len(train_set),
        "val_images": len(val_set),
        "train_miou": miou(train_probs, train_set.masks, classes, None),
        "val_miou": miou(val_probs, val_set.masks, classes, None),
    }
    if classes == 2:
        sweep = {t: miou(val_probs, val_set.masks, classes, t) for t in THRESHOLDS}
        best = max(sweep, key=lambda t: sweep[t])
        row |= {
            "val_miou_by_threshold": sweep,
            "best_threshold": best,
            "val_miou_best_threshold": sweep[best],
        }
    return row


def to_markdown(result: dict) -> str:
    m = result["machine"]
    rows = result["rows"]
    lines = [
        f"Whole images, inference mode, best.keras of each run; {rows[0]['train_images']} training and "
        f"{rows[0]['val_images']} validation images (the run's own split); {result['date']}, "
        f"{m['cpu']} ({m['cores']} cores).",
        "",
        "| model | recipe (flags beyond the defaults) | train mIoU | val mIoU | gap | best threshold | "
        "val mIoU there |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        best = (
            f"{row['best_threshold']:.2f} | {row['val_miou_best_threshold']:.3f}"
            if "best_threshold" in row
            else "- | -"
        )
        lines.append(
            f"| {row['arch'].replace('fcn', 'FCN-')} | `{row['recipe']}` | {row['train_miou']:.3f} | "
            f"**{row['val_miou']:.3f}** | {row['train_miou'] - row['val_miou']:+.3f} | {best} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+", help="run folders written by fcnx train")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="fit_check", help="results file name")
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "best.keras").is_file() or not (run / "config.json").is_file():
            raise SystemExit(f"{run}: not a finished fcnx train run folder (no best.keras/config.json)")
    rows = [check(run) for run in args.runs]
    write_report(args.results, args.name, rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
