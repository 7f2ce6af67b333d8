"""fcnx deploy MODEL --data DIR -o DEPLOY/: every engine this machine runs (onnxruntime
FP32/FP16/INT8, OpenVINO FP32/BF16/INT8, TensorRT on a GPU), each exported through its
parity gate and timed side by side on your images; the fastest within your quality
budget goes to DEPLOY/ with deploy.json (every candidate, the rule, the machine) and
report.html. Run it with fcnx predict DEPLOY/ IN -o OUT or load("DEPLOY/")."""

from __future__ import annotations

import argparse

from fcnx.export.deploy.run import DeployConfig
from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("model", help="a .keras file or a training run folder (its best.keras)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="your images (image/ and optional label/, or a folder of images): a seeded half "
                        "calibrates INT8, the other half judges quality and speed")  # fmt: skip
    parser.add_argument("-o", "--out", required=True, metavar="DEPLOY", help="the folder to write")
    add_dataclass_flags(parser, DeployConfig)
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.export.deploy.run import NothingWithinBudget, deploy
    from fcnx.runtime.cli import CommandError

    try:
        config = dataclass_from_args(DeployConfig, args, model=args.model, out=args.out, data=args.data)
        deploy(config, log=lambda text: print(text, flush=True))
    except NothingWithinBudget as exc:
        raise CommandError(str(exc), 1) from None
    except (ValueError, FileExistsError) as exc:
        raise CommandError(str(exc), 2) from None
    return 0
