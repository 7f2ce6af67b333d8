"""fcnx demo [DIR]: the whole product on the embedded synthetic dataset, in a few minutes
on 2 CPU cores: synthetic EM-like data -> a short training run -> evaluation -> fcnx deploy
(every engine this machine runs, each exported through its parity gate, timed side by side
beside Keras; the fastest within budget wins) -> fcnx predict DEPLOY/ over the images and
over one large tiled mosaic with the lean runtime -> DIR/report.html.

A candidate whose parity gate refuses the briefly trained demo model is a row that says
so (that is the gate working), not a failed demo.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

MOSAIC = 4096  # px a side: the large image of the demo, tiled by the Segmenter
STEPS = 6


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "dir", nargs="?", default="fcnx-demo", help="folder for everything (default: fcnx-demo)"
    )
    parser.add_argument("--arch", default="fcn8s", help="architecture (default: fcn8s)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs (default: 6)")
    parser.add_argument("--steps-per-epoch", type=int, default=25, help="batches per epoch (default: 25)")
    parser.add_argument("--images", type=int, default=24, help="synthetic image/label pairs (default: 24)")
    parser.add_argument("--size", type=int, default=256, help="their side in pixels (default: 256)")
    parser.add_argument(
        "--deploy-seconds", type=float, default=20.0,
        help="seconds fcnx deploy times the candidates for, in all (default: 20)",
    )  # fmt: skip
    parser.add_argument(
        "--mosaic", type=int, default=MOSAIC, help=f"side of the large image predicted (default: {MOSAIC})"
    )
    return parser


def _step(number: int, text: str) -> float:
    print(f"[{number}/{STEPS}] {text}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from fcnx.export.deploy.run import DeployConfig, NothingWithinBudget, deploy
    from fcnx.export.deploy.split import split_images
    from fcnx.export.parity_check import check_against_keras
    from fcnx.runtime.atomic import atomic_write_text
    from fcnx.runtime.html_report import build_report
    from fcnx.runtime.images import list_images
    from fcnx.runtime.predict.config import PredictConfig
    from fcnx.runtime.predict.job import predict_folder
    from fcnx.train.config import ModelConfig, TrainConfig
    from fcnx.train.evaluate import evaluate
    from fcnx.train.fit import train
    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model
    from fcnx.train.synthetic import write_synthetic_dataset

    root = Path(args.dir)
    data, run_dir, deployed = root / "data", root / "run", root / "deploy"
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: not empty; remove it or pass another folder")
    started = time.perf_counter()

    _step(1, f"synthetic dataset: {args.images} pairs of {args.size}x{args.size} -> {data}")
    write_synthetic_dataset(data, count=args.images, size=args.size, seed=0)

    _step(2, f"training {args.arch} ({args.epochs} x {args.steps_per_epoch} steps) -> {run_dir}")
    crop = min(128, args.size)
    config = TrainConfig(
        data=str(data), out=str(run_dir), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        crop=crop, batch_size=4, model=ModelConfig(arch=args.arch),
    )  # fmt: skip
    train(config, verbose=0)
    evaluation = evaluate(run_dir, data)
    atomic_write_text(root / "evaluation.json", json.dumps(evaluation, indent=2) + "\n")
    validation = json.loads((run_dir / "card.json").read_text())["training"]["val_metrics"]["miou"]
    print(
        f"      validation mIoU {validation:.4f}, all {evaluation['images']} images {evaluation['miou']:.4f}"
    )

    _step(3, f"fcnx deploy: every engine this machine runs, parity-gated, timed beside Keras -> {deployed}")
    deploying = DeployConfig(model=str(run_dir), out=str(deployed), data=str(data),
                             time_budget=args.deploy_seconds, cache=str(root / ".deploy-cache"))  # fmt: skip
    try:
        record = deploy(
            deploying,
            log=lambda line: print("      " + line.replace("\n", "\n      "), flush=True),
        )  # fmt: skip
    except NothingWithinBudget as exc:
        print(exc.table)
        raise ValueError(f"the demo model has no candidate within budget: {exc}") from None
    winner = record["winner"]

    _step(4, f"parity of the winner on the {len(record['data']['judging'])} judging images, pictures -> "
             f"{root / 'parity-maps'}")  # fmt: skip
    model = load_keras_model(run_dir)
    # the deploy's own split again (seeded): its judging images and labels, as links
    _, judge = split_images(data, deploying.calib, deploying.calib_count, deploying.seed).write(
        root / "split"
    )
    rows = check_against_keras(
        model, [deployed / winner["artifact"]], card_for(model, find_card(run_dir)), data=judge, random_images=0,
        maps=root / "parity-maps", display_names=[f"{winner['candidate']} ({winner['artifact']})"],
    )  # fmt: skip
    atomic_write_text(root / "parity.json", json.dumps([r.to_dict() for r in rows], indent=2) + "\n")

    _step(5, f"fcnx predict {deployed} over {data / 'image'} and a {args.mosaic}x{args.mosaic} mosaic -> "
             f"{root / 'predictions'}")  # fmt: skip
    summary = predict_folder(PredictConfig(
        model=str(deployed), inputs=(str(data / "image"),), out=str(root / "predictions"), overlay=True,
        progress=False,
    ))  # fmt: skip
    rate = f"{summary['images_per_second']:.1f} images/s on {summary['provider']}, batch {summary['batch']}"
    print(f"      {summary['counts']['written']} masks at {rate}")
    slices = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in list_images(data / "image")]
    tiles = -(-args.mosaic // args.size)
    grid = [np.hstack([slices[(r * tiles + c) % len(slices)] for c in range(tiles)]) for r in range(tiles)]
    mosaic = root / "mosaic" / f"mosaic-{args.mosaic}.png"
    mosaic.parent.mkdir()
    cv2.imwrite(str(mosaic), np.vstack(grid)[: args.mosaic, : args.mosaic])
    large = predict_folder(PredictConfig(
        model=str(deployed), inputs=(str(mosaic),), out=str(root / "predictions-mosaic"), progress=False,
    ))  # fmt: skip
    print(f"      {mosaic.name}: {args.mosaic**2 / 1e6 / large['seconds']:.1f} Mpx/s end to end, tiled")

    _step(6, f"report -> {root / 'report.html'}")
    build_report([root], root / "report.html", title=f"fcnx demo ({args.arch}, synthetic EM data)")

    print()
    print(_summary_table(record))
    print(f"\ndone in {time.perf_counter() - started:.0f} s: open {root / 'report.html'}")
    print(f"  model {run_dir}  deploy {deployed}  masks {root / 'predictions'}")
    return 0


def _summary_table(record: dict[str, Any]) -> str:
    """Every candidate: precision, mask agreement with Keras, images/s at its best batch, x Keras,
    verdict; the winner marked *."""
    entries = [e for e in record["candidates"] if e["status"] not in ("not asked", "unavailable")]
    missing = [e["candidate"] for e in record["candidates"] if e["status"] == "unavailable"]
    keras = next((e for e in entries if e["candidate"] == "keras fp32" and e.get("best")), None)
    keras_speed = keras["best"]["images_per_second"] if keras else None
    lines = [f"  {'candidate':<16} {'mask = Keras':>12} {'images/s':>9} {'x Keras':>8}  verdict"]
    for e in entries:
        best, parity = e.get("best") or {}, e.get("parity") or {}
        speed = best.get("images_per_second")
        agreement = parity.get("mask_agreement")
        ratio = f"{speed / keras_speed:>8.2f}" if speed and keras_speed else f"{'-':>8}"
        mark = "*" if e.get("verdict") == "winner" else " "
        lines.append(
            f"{mark} {e['candidate']:<16} {'-' if agreement is None else f'{agreement:.4%}':>12} "
            f"{'-' if speed is None else f'{speed:.1f}':>9} {ratio}  {e.get('verdict') or e.get('reason', '')}"
        )
    if missing:
        lines.append(f"  (not on this machine: {', '.join(missing)}; deploy.json says why)")
    return "\n".join(lines)
