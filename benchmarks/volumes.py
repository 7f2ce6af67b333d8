"""Stacks, volumes and gigapixel images: what `fcnx predict` does with the arrays users store.

The membrane FCN-2s (``../shared/models``), exported once to a dynamic-size FP32 ONNX, on
onnxruntime CPU; every ``fcnx predict`` is a subprocess (its peak RSS from ``ru_maxrss``):

- **stack**: the 24 real 512² slices as ONE multi-page TIFF (the layout of ISBI's
  ``train-volume.tif``) with their labels as ``train-labels.tif``. ``fcnx predict`` writes one
  multi-page TIFF of masks; page i is compared with the PNG mask ``fcnx predict`` writes for
  slice i given as a PNG file (same model, same run). The same 24 planes as an OME-Zarr
  (NGFF 0.5 on Zarr v3) and as an HDF5 dataset: their OME-Zarr label images against the
  same masks. ``fcnx evaluate`` (Keras) on the stack pair (``--labels``) and on the image/label
  folder: the same mIoU.
- **gigapixel**: mosaics of the real slices (``runtime/arrays/mosaic.py``, written tile by
  tile, never whole in memory) at 8192² and 16384² as a tiled BigTIFF, an OME-Zarr and (to
  compare) a PNG, which is decoded whole: peak RSS, seconds, Mpx/s, and how many mask pixels
  the windowed array path and the whole-image path agree on.
- **kill and resume**: ``fcnx predict`` on the largest OME-Zarr, SIGKILLed the moment half of
  its bands are durable (``FCNX_KILL_AT=band-done:...``), then ``--resume``: the rerun's
  seconds against the uninterrupted run's, and whether the label arrays are identical.

Writes ``benchmarks/results/volumes.{json,md}``.

    python benchmarks/volumes.py            # ~20 min on 2 cores (8192² and 16384²)
    python benchmarks/volumes.py --quick    # 8192² only (~6 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from large_images import export_dynamic, miou, peak_rss, table  # noqa: E402
from report import write_report  # noqa: E402

SHARED = ROOT.parent / "shared"
ARCH = "fcn2s"


def membrane(data: Path) -> tuple[list[Path], list[np.ndarray], list[np.ndarray]]:
    from fcnx.runtime.images import list_images, read_image, read_label

    files = list_images(data / "image")
    images = [read_image(p, 1)[..., 0] for p in files]
    labels = [(read_label(p) > 127).astype(np.uint8) for p in list_images(data / "label")]
    return files, images, labels


def predict(onnx: Path, inputs: list[Path | str], out: Path, *extra: str, env: dict | None = None) -> dict:
    """``fcnx predict`` in a subprocess: its peak RSS (GiB), seconds and exit code."""
    command = ["fcnx", "predict", str(onnx), *map(str, inputs), "-o", str(out), "--no-progress", *extra]
    if env is not None:
        started = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
        return {"returncode": done.returncode, "seconds": time.perf_counter() - started}
    rss, seconds = peak_rss(command)
    return {"returncode": 0, "seconds": seconds, "peak_rss_gib": rss / 2**30}


def png_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def label_array(path: Path) -> Any:
    import zarr

    return zarr.open_group(path, mode="r")["0"]


def stack(onnx: Path, work: Path, data: Path) -> tuple[list[dict], list[dict]]:
    import h5py
    import tifffile

    from fcnx.runtime.arrays.mosaic import write_mosaic

    files, images, labels = membrane(data)
    volume, truth = np.stack(images), np.stack(labels)
    inputs = work / "stack"
    inputs.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(inputs / "train-volume.tif", volume, photometric="minisblack")
    tifffile.imwrite(inputs / "train-labels.tif", truth * 255, photometric="minisblack")
    write_mosaic(images, inputs / "volume.zarr", (512, 512), "ome-zarr", planes=len(images), zarr_format=3)
    with h5py.File(inputs / "volume.h5", "w") as f:
        f.create_dataset("/raw", data=volume, chunks=(1, 512, 512), compression="gzip")

    rows = []
    png = predict(onnx, [data / "image"], work / "out-png", "--overwrite")
    png_masks = np.stack([png_mask(work / "out-png" / f"{f.stem}.png") for f in files])
    rows.append({"input": f"{len(files)} PNG files", "output": "24 PNG masks", **png, "agreement": 1.0,
                 "miou": miou(truth, png_masks)})  # fmt: skip
    cases: list[tuple[str, Path | str, str]] = [
        ("train-volume.tif (one 24-page TIFF)", inputs / "train-volume.tif", "train-volume.tif"),
        ("volume.zarr (OME-Zarr, NGFF 0.5, Zarr v3)", inputs / "volume.zarr", "volume.zarr"),
        ("volume.h5:/raw (HDF5)", f"{inputs / 'volume.h5'}:/raw", "volume.zarr"),
    ]
    for i, (name, source, output) in enumerate(cases):
        out = work / f"out-stack-{i}"
        run = predict(onnx, [source], out, "--overwrite")
        if output.endswith(".tif"):
            masks = tifffile.imread(out / output)
            kind = "one 24-page palette TIFF"
        else:
            masks = label_array(out / output)[:]
            kind = "an OME-Zarr label image"
        rows.append({"input": name, "output": kind, **run, "agreement": float((masks == png_masks).mean()),
                     "miou": miou(truth, masks)})  # fmt: skip
        print(rows[-1], flush=True)

    evaluations: list[dict] = []
    model = SHARED / "models" / f"membrane-{ARCH}"
    stack_args = [str(inputs / "train-volume.tif"), "--labels", str(inputs / "train-labels.tif")]
    for name, args in (
        ("image/ + label/ folders", [str(data)]),
        ("train-volume.tif --labels train-labels.tif", stack_args),
    ):
        report = work / f"evaluate-{len(evaluations)}.json"
        started = time.perf_counter()
        subprocess.run(["fcnx", "evaluate", str(model), *args, "--json", str(report)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        seconds = time.perf_counter() - started
        result = json.loads(report.read_text())
        evaluations.append({"data": name, "images": result["images"], "miou": result["miou"],
                            "pixel_accuracy": result["pixel_accuracy"], "seconds": seconds})  # fmt: skip
        print(evaluations[-1], flush=True)
    return rows, evaluations


def gigapixel(onnx: Path, work: Path, data: Path, sizes: list[int]) -> tuple[list[dict], dict]:
    import cv2

    from fcnx.runtime.arrays.mosaic import Mosaic, write_mosaic

    _, images, _ = membrane(data)
    rows, largest = [], {}
    for size in sizes:
        tiff, zarr_in, png = (work / f"mosaic-{size}{s}" for s in (".tif", ".zarr", ".png"))
        if not tiff.exists():
            write_mosaic(images, tiff, (size, size), "tiff")
        if not zarr_in.exists():
            write_mosaic(images, zarr_in, (size, size), "ome-zarr")
        if not png.exists():  # the PNG path decodes whole anyway: build it whole, once
            pixels, image = Mosaic(images), np.empty((size, size), np.uint8)
            for y in range(0, size, 512):
                image[y : y + 512] = pixels.window(0, y, min(size, y + 512), 0, size)
            assert cv2.imwrite(str(png), image)
            del image
        masks = {}
        for how, source, output in (
            ("PNG, decoded whole, tiled in memory", png, f"mosaic-{size}.png"),
            ("tiled BigTIFF, read by windows", tiff, f"mosaic-{size}.zarr"),
            ("OME-Zarr, read by windows", zarr_in, f"mosaic-{size}.zarr"),
        ):
            out = work / f"out-{size}-{source.suffix[1:]}"
            run = predict(onnx, [source], out, "--overwrite")
            masks[how] = out / output
            rows.append({"size": size, "input": how, "megapixels_per_second": size * size / run["seconds"] / 1e6,
                         **run})  # fmt: skip
            print(rows[-1], flush=True)
        whole = png_mask(masks["PNG, decoded whole, tiled in memory"])
        for row in rows[-3:]:
            path = masks[row["input"]]
            mask = whole if path.suffix == ".png" else label_array(path)[:]
            row["agreement_with_png"] = float((mask == whole).mean())
        del whole
        largest = {
            "size": size,
            "zarr": zarr_in,
            "seconds": rows[-1]["seconds"],
            "reference": masks[rows[-1]["input"]],
        }
    return rows, largest


def kill_resume(onnx: Path, work: Path, largest: dict) -> dict:
    from fcnx.runtime.predict.volumes import BAND_ROWS

    size, source = largest["size"], largest["zarr"]
    bands = -(-size // BAND_ROWS)
    out = work / f"out-{size}-killed"
    name = f"mosaic-{size}.zarr"
    killed = predict(
        onnx, [source], out, "--overwrite", env={"FCNX_KILL_AT": f"band-done:{name}#{bands // 2}"}
    )
    resumed = predict(onnx, [source], out, "--resume")
    same = bool(np.array_equal(label_array(out / name)[:], label_array(largest["reference"])[:]))
    row = {"size": size, "bands": bands, "killed_after_bands": bands // 2,
           "killed_returncode": killed["returncode"], "killed_seconds": killed["seconds"],
           "resume_seconds": resumed["seconds"], "resume_peak_rss_gib": resumed["peak_rss_gib"],
           "uninterrupted_seconds": largest["seconds"], "identical": same}  # fmt: skip
    print(row, flush=True)
    return row


def pct(value: float) -> str:
    return f"{100 * value:.3f} %"


def to_markdown(doc: dict) -> str:
    m, rows = doc["machine"], doc["rows"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), onnxruntime CPU, "
        "the membrane FCN-2s as a dynamic-size FP32 ONNX; each `fcnx predict` a fresh process "
        "(seconds include loading the model).",
        "",
        "The 24 real slices as a stack (masks against the PNG masks of the same slices, mIoU against "
        "their labels):",
        "",
    ]
    lines += table(
        ["input", "masks written as", "seconds", "peak RSS GiB", "same masks as the PNG path", "mIoU"],
        [[r["input"], r["output"], f"{r['seconds']:.1f}", f"{r['peak_rss_gib']:.2f}", pct(r["agreement"]),
          f"{r['miou']:.4f}"] for r in rows["stack"]],
    )  # fmt: skip
    lines += ["`fcnx evaluate` (Keras) of the same model:", ""]
    lines += table(
        ["data", "images", "mIoU", "pixel accuracy", "seconds"],
        [[r["data"], r["images"], f"{r['miou']:.4f}", f"{r['pixel_accuracy']:.4f}", f"{r['seconds']:.1f}"]
         for r in rows["evaluate"]],
    )  # fmt: skip
    lines += ["Gigapixel mosaics of the real slices (masks of the array paths against the PNG path's):", ""]
    lines += table(
        ["image", "input", "seconds", "Mpx/s", "peak RSS GiB", "same masks as the PNG path"],
        [[f"{r['size']}²", r["input"], f"{r['seconds']:.1f}", f"{r['megapixels_per_second']:.2f}",
          f"{r['peak_rss_gib']:.2f}", pct(r["agreement_with_png"])] for r in rows["gigapixel"]],
    )  # fmt: skip
    lines += ["Killed (SIGKILL) when half of its bands were durable, then `--resume`:", ""]
    lines += table(
        ["image", "bands", "killed after", "uninterrupted s", "resume s", "resume peak RSS GiB",
         "labels identical to the uninterrupted run"],
        [[f"{r['size']}² OME-Zarr", r["bands"], r["killed_after_bands"], f"{r['uninterrupted_seconds']:.1f}",
          f"{r['resume_seconds']:.1f}", f"{r['resume_peak_rss_gib']:.2f}", "yes" if r["identical"] else "NO"]
         for r in rows["resume"]],
    )  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "membrane")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "volumes")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="8192² only")
    parser.add_argument("--sizes", type=int, nargs="+", help="mosaic sizes (default: 8192 16384)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the Markdown from the results JSON"
    )
    args = parser.parse_args()
    if args.render:
        doc = json.loads((args.results / "volumes.json").read_text())
        (args.results / "volumes.md").write_text(to_markdown(doc))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = args.sizes or ([8192] if args.quick else [8192, 16384])
    onnx = export_dynamic(ARCH, args.work, args.data)
    rows: dict[str, list[dict]] = {}
    rows["stack"], rows["evaluate"] = stack(onnx, args.work, args.data)
    rows["gigapixel"], largest = gigapixel(onnx, args.work, args.data, sizes)
    rows["resume"] = [kill_resume(onnx, args.work, largest)]
    write_report(args.results, "volumes", rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
