"""Training quality on real EM images: does the default recipe reach the targets?

For each architecture, run exactly ``fcnx train DATA -o RUN --arch ARCH`` (the
defaults are the recipe), time it, and read the validation metrics that training
computed from best.keras on whole 512x512 images in inference mode (card.json).
Writes ``benchmarks/results/train_quality.{json,md}`` with the machine it ran on.

    python benchmarks/train_quality.py                  # FCN-8s and FCN-2s, ~40 min on 2 cores
    python benchmarks/train_quality.py --archs fcn8s --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_report  # noqa: E402

TARGETS = {"fcn8s": 0.75, "fcn2s": 0.80}


def run_one(arch: str, data: Path, runs: Path, extra: list[str]) -> dict[str, object]:
    run_dir = runs / arch
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: remove it or pass another --runs folder")
    command = [
        sys.executable,
        "-m",
        "fcnx.runtime.cli",
        "train",
        str(data),
        "-o",
        str(run_dir),
        "--arch",
        arch,
    ]
    command += extra
    print("$", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    minutes = (time.perf_counter() - started) / 60
    card = json.loads((run_dir / "card.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    metrics = card["training"]["val_metrics"]
    return {
        **_best_epoch(run_dir / "history.csv"),
        "arch": arch,
        "command": "fcnx train DATA -o RUN --arch " + arch + (" " + " ".join(extra) if extra else ""),
        "val_miou": metrics["miou"],
        "val_iou": metrics["per_class_iou"],
        "val_pixel_accuracy": metrics["pixel_accuracy"],
        "val_dice": metrics["mean_dice"],
        "val_images": card["training"]["val_images"],
        "train_images": len(card["training"]["train_images"]),
        "minutes": round(minutes, 1),
        "train_minutes": round(metrics["train_seconds"] / 60, 1),
        "target_miou": TARGETS.get(arch),
        "config": config,
    }


def _best_epoch(history: Path) -> dict[str, object]:
    """The epoch best.keras comes from, and its training mIoU (over- or underfitting?)."""
    with history.open(newline="") as f:
        epochs = list(csv.DictReader(f))
    best = max(epochs, key=lambda e: float(e["val_miou"]))
    return {"best_epoch": int(best["epoch"]) + 1, "epochs": len(epochs), "train_miou": float(best["miou"])}


def _recipe(rows: list[dict]) -> str:
    """The words 'default recipe', plus the flags a variant added to it."""
    extra = {str(r["command"]).split(" --arch ")[1].partition(" ")[2] for r in rows}
    extra.discard("")
    return "default recipe" if not extra else "default recipe + `" + " ".join(sorted(extra)) + "`"


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Membrane EM data ({result['rows'][0]['train_images']} training, "
        f"{len(result['rows'][0]['val_images'])} validation images, whole 512×512 images, inference mode), "
        f"{_recipe(result['rows'])}, measured {result['date']} on {m['cpu']} ({m['cores']} cores), "
        f"TensorFlow {m['versions'].get('tensorflow', '?')}.",
        "",
        "| model | val mIoU | IoU membrane | IoU cell | pixel acc. | target | best epoch | train mIoU | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        iou = list(row["val_iou"].values())
        target = row["target_miou"]
        ok = "✅" if target is not None and row["val_miou"] >= target else "❌"
        lines.append(
            f"| {row['arch'].replace('fcn', 'FCN-')} | **{row['val_miou']:.3f}** | {iou[0]:.3f} | "
            f"{iou[1]:.3f} | {row['val_pixel_accuracy']:.3f} | ≥ {target} {ok} | "
            f"{row['best_epoch']} of {row['epochs']} | {row['train_miou']:.3f} | {row['minutes']:.1f} min |"
        )
    lines += [
        "",
        "Train mIoU: training-mode mIoU on the augmented crops in the best epoch; far above "
        "val mIoU means overfitting, equal means the model underfits.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "membrane")
    parser.add_argument("--archs", default="fcn8s,fcn2s")
    parser.add_argument("--runs", type=Path, default=HERE.parent / "runs" / "train_quality")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default="", help="suffix for the results file, to record a recipe variant")
    args, extra = parser.parse_known_args()
    if not (args.data / "image").is_dir():
        raise SystemExit(f"{args.data}: membrane data not found (pass --data)")
    rows = [run_one(arch, args.data, args.runs, extra) for arch in args.archs.split(",")]
    write_report(args.results, "train_quality" + (f"_{args.tag}" if args.tag else ""), rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
