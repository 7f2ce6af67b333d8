"""Make, here, everything the GPU check needs there (the GPU machine has no TensorFlow and
reaches no package index): into ``.gpu/check/`` (git-ignored) --

- ``fcn2s.fp32.onnx``, ``fcn2s.fp16.onnx``: the membrane FCN-2s of ../shared/models at
  512x512, exported by fcnx with their parity proven on the membrane images;
- ``fcn2s.keras``: its best.keras, for the Keras-on-PyTorch baseline;
- ``reference.npz``: 8 membrane images and Keras's foreground probabilities for them (the FP16 check);
- ``wheels/``: fcnx itself (the package-dir mapping makes a bare checkout unimportable)
  and the small pure-Python wheels Keras needs there (keras, namex, optree for CPython 3.12);
- with ``--fcn8s``: the FCN-8s exports too (only if the carry, 64 MiB a call, allows).

    python benchmarks/gpu_prepare.py            # then: run(carry=[".gpu/check"], "bash benchmarks/gpu_check.sh ...")
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu" / "check")
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "membrane")
    parser.add_argument("--fcn8s", action="store_true", help="also the FCN-8s exports")
    args = parser.parse_args()

    from fcnx.export.onnx_export import OnnxExportConfig, export_onnx
    from fcnx.runtime.images import dataset_images, read_image
    from fcnx.train.evaluate import keras_segmenter
    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    for arch in ("fcn2s", "fcn8s") if args.fcn8s else ("fcn2s",):
        run = args.models / f"membrane-{arch}"
        for precision in ("fp32", "fp16"):
            target = out / f"{arch}.{precision}.onnx"
            export_onnx(
                OnnxExportConfig(model=str(run), out=str(target), precision=precision, data=str(args.data))
            )
            print(f"exported {target}")
    run = args.models / "membrane-fcn2s"
    shutil.copyfile(run / "best.keras", out / "fcn2s.keras")
    model = load_keras_model(run)
    images = [read_image(p, 1) for p in dataset_images(args.data, "membrane images")[:8]]
    probs = keras_segmenter(model, card_for(model, find_card(run))).predict(images, probs=True)
    # two classes: the foreground channel is enough (background = 1 - it) and halves the carry
    np.savez_compressed(out / "reference.npz", images=np.stack(images), foreground=np.stack(probs)[..., 1])
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:  # build from a copy: nothing is left in the checkout
        source = Path(tmp) / "src"
        shutil.copytree(
            ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")
        )
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(out / "wheels"), str(source)], check=True)
    subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "-d", str(out / "wheels"),
                    "keras==3.15.1", "namex", "optree"], check=True)  # fmt: skip
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {total / 2**20:.1f} MiB (a device call carries 64 MiB)")
    return 0 if total < 60 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
