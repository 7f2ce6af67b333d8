"""Stacks, volumes and gigapixel images: what `fcnx predict` does with the arrays users store.

The membrane FCN-2s (``../shared/models``), exported once to a dynamic-size FP32 ONNX (and
an FP32 OpenVINO IR), default batch and tiles; every ``fcnx predict`` is a subprocess (its
peak RSS from ``ru_maxrss``):

- **stack**: the 24 real 512² slices as ONE multi-page TIFF (the layout of ISBI's
  ``train-volume.tif``) with their labels as ``train-labels.tif``. ``fcnx predict`` writes one
  multi-page TIFF of masks; page i is compared with the PNG mask ``fcnx predict`` writes for
  slice i given as a PNG file. The same 24 planes as an OME-Zarr (NGFF 0.5 on Zarr v3) and
  as an HDF5 dataset: their OME-Zarr label images against the same masks. ``fcnx evaluate``
  (Keras) on the stack pair (``--labels``) and on the image/label folders: the same mIoU.
- **gigapixel**: mosaics of the real slices (``runtime/arrays/mosaic.py``, written tile by
  tile, never whole in memory) from 8192² to 65536² as a tiled BigTIFF and an OME-Zarr, and
  (to compare, up to 16384²) a PNG, which is decoded whole: seconds, Mpx/s, peak RSS (flat
  in the image's size?), and the mask pixels the windowed and the whole-image paths agree
  on; the models and sizes are ``GIGAPIXEL``.
- **kill and resume**: the 8192² OME-Zarr run SIGKILLed at random moments, each finished by
  a rerun: the bands durable at the kill, the rerun's seconds, labels identical?
- **a 3D volume**: a 16 x 4096 x 4096 OME-Zarr of the slices into OME-Zarr labels.

Writes ``benchmarks/results/volumes.{json,md}`` after each part (a long run keeps what it
has measured).

    python benchmarks/volumes.py            # ~75 min on 2 cores, 35 of them the 65536² image
    python benchmarks/volumes.py --sizes 8192 16384   # ~20 min
    python benchmarks/volumes.py --quick    # 8192² only, ort-cpu, 2 kills (~6 min)
"""

from __future__ import annotations

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
from report import suite_parser, write_report  # noqa: E402

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

    Image.MAX_IMAGE_PIXELS = None  # our own masks, 16384² and up
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


# (model, size, inputs measured): a PNG is decoded whole, so only where that fits well.
# "fp32" is the dynamic-size ONNX on ort-cpu and the FP32 IR on ov-cpu, side by side at
# 8192²; "int8" (the NNCF INT8 IR on ov-cpu, ~3x ort-cpu on a 2-core EPYC) runs the large
# sizes, where peak RSS against the image's size is the question: 65536² at ort-cpu's
# 0.75 Mpx/s on 2 cores would take 95 minutes.
GIGAPIXEL: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("ort-cpu fp32", 8192, ("png", "tiff", "zarr")),
    ("ov-cpu fp32", 8192, ("png", "tiff")),
    ("ov-cpu int8", 8192, ("png", "tiff")),
    ("ov-cpu int8", 16384, ("png", "tiff", "zarr")),
    ("ov-cpu int8", 32768, ("tiff",)),
    ("ov-cpu int8", 65536, ("tiff",)),
)
SIZES = sorted({size for _, size, _ in GIGAPIXEL})
MODELS = sorted({model for model, _, _ in GIGAPIXEL})
HOW = {
    "png": "PNG, decoded whole, tiled in memory",
    "tiff": "tiled BigTIFF, read by windows",
    "zarr": "OME-Zarr, read by windows",
}


def mosaic_inputs(images: list[np.ndarray], work: Path, size: int, kinds: tuple[str, ...]) -> dict[str, Path]:
    """The mosaic of the slices at ``size``² as each of ``kinds``, written once, tile by tile."""
    import cv2

    from fcnx.runtime.arrays.mosaic import Mosaic, write_mosaic

    paths = {kind: work / f"mosaic-{size}.{'tif' if kind == 'tiff' else kind}" for kind in kinds}
    for kind, path in paths.items():
        if path.exists():
            continue
        if kind == "png":  # the PNG path decodes whole anyway: built whole, band by band
            pixels, image = Mosaic(images), np.empty((size, size), np.uint8)
            for y in range(0, size, 512):
                image[y : y + 512] = pixels.window(0, y, min(size, y + 512), 0, size)
            assert cv2.imwrite(str(path), image)
            del image
        else:
            write_mosaic(images, path, (size, size), "tiff" if kind == "tiff" else "ome-zarr")
    return paths


def gigapixel(
    model: str, path: Path, work: Path, images: list[np.ndarray], size: int, kinds: tuple[str, ...]
) -> list[dict]:
    """Each input kind at ``size``² through one model: seconds, Mpx/s, peak RSS, and the
    masks against the PNG path's (same model)."""
    paths = mosaic_inputs(images, work, size, kinds)
    rows, masks = [], {}
    tag = model.replace(" ", "-")
    for kind, source in paths.items():
        out = work / f"out-{size}-{kind}-{tag}"
        run = predict(path, [source], out, "--overwrite")
        masks[kind] = out / (source.name if kind == "png" else f"mosaic-{size}.zarr")
        rows.append({"size": size, "model": model, "input": HOW[kind],
                     "megapixels_per_second": size * size / run["seconds"] / 1e6, **run})  # fmt: skip
        print(rows[-1], flush=True)
    if "png" in masks:
        whole = png_mask(masks["png"])
        for row, kind in zip(rows, masks):
            mask = whole if kind == "png" else label_array(masks[kind])[:]
            row["agreement_with_png"] = float((mask == whole).mean())
            row["vs_png"] = row["megapixels_per_second"] / rows[0]["megapixels_per_second"]
        del whole
    return rows


def volume3d(model: str, path: Path, work: Path, images: list[np.ndarray], planes: int, size: int) -> dict:
    """A (planes, size, size) OME-Zarr volume of the slices -> OME-Zarr labels, plane by plane."""
    from fcnx.runtime.arrays.mosaic import write_mosaic

    source = work / f"volume-{planes}x{size}.zarr"
    if not source.exists():
        write_mosaic(images, source, (size, size), "ome-zarr", planes=planes)
    out = work / f"out-volume-{planes}x{size}"
    run = predict(path, [source], out, "--overwrite")
    labels = label_array(out / source.name)
    row = {"model": model, "shape": [planes, size, size], "output_shape": list(labels.shape),
           "megapixels_per_second": planes * size * size / run["seconds"] / 1e6, **run}  # fmt: skip
    print(row, flush=True)
    return row


def journal_bands(out: Path, name: str) -> int:
    """Bands an unfinished output's journal records as durable (runtime/arrays/band_writer.py)."""
    from fcnx.runtime.arrays.zarr_bands import JOURNAL

    journal = out / f".{name}{JOURNAL}"
    if not journal.is_file():
        return 0
    return max(0, len(journal.read_bytes().split(b"\n")) - 2)  # the geometry line; after the last newline


def kill_resume(
    onnx: Path,
    work: Path,
    size: int,
    uninterrupted: float,
    kills: int,
    seed: int = 0,
    tag: str = "ort-cpu-fp32",
) -> list[dict]:
    """``kills`` runs on the OME-Zarr mosaic SIGKILLed at seeded random moments, each then
    finished by a rerun: the bands durable at the kill, the rerun's seconds, and
    whether its labels are identical to the uninterrupted run's."""
    import random
    import signal

    from fcnx.runtime.arrays.ome_zarr import STRIP_COLUMNS
    from fcnx.runtime.predict.volumes import BAND_ROWS

    name = f"mosaic-{size}.zarr"
    source, reference = work / name, label_array(work / f"out-{size}-zarr-{tag}" / name)[:]
    bands = -(-size // BAND_ROWS) * -(-size // STRIP_COLUMNS)  # rows of bands x column strips
    rng, rows = random.Random(seed), []
    for attempt in range(kills):
        out = work / f"out-{size}-killed-{attempt}"
        at = rng.uniform(0.15, 0.85) * uninterrupted
        command = ["fcnx", "predict", str(onnx), str(source), "-o", str(out), "--no-progress", "--overwrite"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        process.send_signal(signal.SIGKILL)
        process.wait()
        durable = journal_bands(out, name)
        resumed = predict(onnx, [source], out)  # a rerun of the same command resumes
        same = bool(np.array_equal(label_array(out / name)[:], reference))
        model_name = " ".join(tag.rsplit("-", 1))  # "ov-cpu int8"
        rows.append({"size": size, "model": model_name, "bands": bands, "killed_at_seconds": at,
                     "durable_at_kill": durable,
                     "recomputed": bands - durable, "uninterrupted_seconds": uninterrupted,
                     "resume_seconds": resumed["seconds"], "resume_peak_rss_gib": resumed["peak_rss_gib"],
                     "identical": same})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def export_ir(work: Path, data: Path, precision: str) -> Path:
    xml = work / f"{ARCH}.{precision}.xml"
    if not xml.is_file():
        model = SHARED / "models" / f"membrane-{ARCH}"
        command = ["fcnx", "export", "openvino", str(model), "-o", str(xml), "--data", str(data)]
        calib = (
            ["--calib", str(data), "--calib-count", "20"] if precision == "int8" else []
        )  # as cpu_suite.py
        subprocess.run([*command, "--precision", precision, *calib], check=True)
    return xml


def pct(value: float) -> str:
    return "identical" if value == 1.0 else f"{100 * value:.4f} %"


def gib(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def to_markdown(doc: dict) -> str:
    m, rows = doc["machine"], doc["rows"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB); the membrane FCN-2s "
        "as a dynamic-size FP32 ONNX on onnxruntime CPU, and as FP32 and NNCF INT8 OpenVINO IRs on ov-cpu "
        "(the model column), default batch and tiles (512², overlap 96); each `fcnx predict` a fresh "
        "process: seconds include loading the model, peak RSS is its `ru_maxrss`.",
        "",
        "The 24 real slices as a stack (masks against the PNG masks of the same slices; mIoU against their labels):",
        "",
    ]
    lines += table(
        ["input", "masks written as", "seconds", "peak RSS GiB", "same class ids as the PNG path", "mIoU"],
        [[r["input"], r["output"], f"{r['seconds']:.1f}", gib(r["peak_rss_gib"]), pct(r["agreement"]),
          f"{r['miou']:.4f}"] for r in rows["stack"]],
    )  # fmt: skip
    if rows["evaluate"]:
        lines += ["`fcnx evaluate` (the Keras model) on the folders and on the stack pair:", ""]
        lines += table(
            ["data", "images", "mIoU", "pixel accuracy", "seconds"],
            [[r["data"], r["images"], f"{r['miou']:.4f}", f"{r['pixel_accuracy']:.4f}", f"{r['seconds']:.1f}"]
             for r in rows["evaluate"]],
        )  # fmt: skip
    order = list(dict.fromkeys(model for model, _, _ in GIGAPIXEL))
    rows["gigapixel"] = sorted(rows["gigapixel"], key=lambda r: (order.index(r["model"]), r["size"]))
    if rows["gigapixel"]:
        lines += [
            "Gigapixel mosaics of the real slices (Mpx/s end to end; masks against the PNG path's):",
            "",
        ]
        lines += table(
            ["image", "model", "input", "seconds", "Mpx/s", "× the PNG path", "peak RSS GiB",
             "same class ids as the PNG path"],
            [[f"{r['size']}²", r["model"], r["input"], f"{r['seconds']:.1f}", f"{r['megapixels_per_second']:.2f}",
              None if "vs_png" not in r else f"{r['vs_png']:.2f}", gib(r["peak_rss_gib"]),
              pct(r["agreement_with_png"]) if "agreement_with_png" in r else None] for r in rows["gigapixel"]],
        )  # fmt: skip
    if rows.get("volume3d"):
        lines += ["A 3D OME-Zarr volume of the slices, segmented plane by plane into OME-Zarr labels:", ""]
        lines += table(
            ["volume (Z, Y, X)", "model", "seconds", "Mpx/s", "peak RSS GiB", "labels written"],
            [["x".join(map(str, r["shape"])), r["model"], f"{r['seconds']:.1f}", f"{r['megapixels_per_second']:.2f}",
              gib(r["peak_rss_gib"]), "x".join(map(str, r["output_shape"]))] for r in rows["volume3d"]],
        )  # fmt: skip
    if rows["resume"]:
        lines += [
            "SIGKILLed at random moments, then rerun (labels against the uninterrupted run's):",
            "",
        ]
        lines += table(
            ["image", "killed at s", "bands durable at the kill", "bands the rerun computed", "uninterrupted s",
             "resume s", "resume peak RSS GiB", "identical"],
            [[f"{r['size']}² OME-Zarr, {r.get('model', 'ort-cpu fp32')}",
              f"{r['killed_at_seconds']:.1f}", f"{r['durable_at_kill']} of {r['bands']}",
              r["recomputed"], f"{r['uninterrupted_seconds']:.1f}", f"{r['resume_seconds']:.1f}",
              gib(r["resume_peak_rss_gib"]), "yes" if r["identical"] else "NO"] for r in rows["resume"]],
        )  # fmt: skip
    return "\n".join(lines)


PARTS = ("stack", "gigapixel", "resume", "volume3d")
VOLUME = ("ov-cpu int8", 64, 4096)  # model, planes, plane size


def main() -> int:
    parser = suite_parser(__doc__, "volumes")
    parser.add_argument("--quick", action="store_true", help="the stack, 8192² on ort-cpu, 2 kills")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure (default: all)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", choices=SIZES, help="mosaic sizes (default: all)")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="gigapixel models (default: all)")
    parser.add_argument("--kills", type=int, default=5, help="random kills of the resume run (default: 5)")
    parser.add_argument("--resume-size", type=int, default=8192, choices=SIZES,
                        help="the mosaic killed and resumed (8192: ort-cpu fp32; larger: ov-cpu int8)")  # fmt: skip
    args = parser.parse_args()
    results = args.results / "volumes.json"
    if args.render:
        (args.results / "volumes.md").write_text(to_markdown(json.loads(results.read_text())))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {part: [] for part in (*PARTS, "evaluate")}
    if set(args.parts) != set(PARTS) and results.is_file():  # a part measured again: the others are kept
        rows.update(json.loads(results.read_text())["rows"])
    plan = [g for g in GIGAPIXEL if (args.sizes is None or g[1] in args.sizes)]
    plan = [g for g in plan if args.models is None or g[0] in args.models]
    if args.quick:
        plan = [g for g in plan if g[0] == "ort-cpu fp32"]
    models = {"ort-cpu fp32": lambda: export_dynamic(ARCH, args.work, args.data),
              "ov-cpu fp32": lambda: export_ir(args.work, args.data, "fp32"),
              "ov-cpu int8": lambda: export_ir(args.work, args.data, "int8")}  # fmt: skip
    onnx = models["ort-cpu fp32"]()
    if "stack" in args.parts:
        rows["stack"], rows["evaluate"] = stack(onnx, args.work, args.data)
        write_report(args.results, "volumes", rows, to_markdown)  # after each part: a long run keeps its rows
    _, images, _ = membrane(args.data)
    for model, size, kinds in plan if "gigapixel" in args.parts else ():
        measured = gigapixel(model, models[model](), args.work, images, size, kinds)
        kept = [r for r in rows["gigapixel"] if (r["model"], r["size"]) != (model, size)]
        rows["gigapixel"] = kept + measured
        write_report(args.results, "volumes", rows, to_markdown)
        if model == "ort-cpu fp32" and size == 8192 and "resume" in args.parts:  # before the long sizes
            rows["resume"] = resume(rows, onnx, args.work, 2 if args.quick else args.kills)
            write_report(args.results, "volumes", rows, to_markdown)
    if "volume3d" in args.parts and not args.quick:
        model, planes, size = VOLUME
        rows["volume3d"] = [volume3d(model, models[model](), args.work, images, planes, size)]
        write_report(args.results, "volumes", rows, to_markdown)
    if "resume" in args.parts and "gigapixel" not in args.parts:
        if args.resume_size == 8192:
            rows["resume"] = resume(rows, onnx, args.work, 2 if args.quick else args.kills)
        else:  # a large mosaic on the INT8 IR (fp32 would take hours): its own uninterrupted run first
            kept = [r for r in rows["resume"] if r["size"] != args.resume_size]
            rows["resume"] = kept + resume_large(models["ov-cpu int8"](), args.work, images, args.resume_size,
                                                 args.kills)  # fmt: skip
        write_report(args.results, "volumes", rows, to_markdown)
    return 0


def resume_large(model: Path, work: Path, images: list[np.ndarray], size: int, kills: int) -> list[dict]:
    """Kills of the ``size``² OME-Zarr mosaic on the INT8 IR, after one uninterrupted run."""
    tag = "ov-cpu-int8"
    source = mosaic_inputs(images, work, size, ("zarr",))["zarr"]
    reference = work / f"out-{size}-zarr-{tag}"
    run = predict(model, [source], reference, "--overwrite")
    print({"size": size, "uninterrupted": run}, flush=True)
    return kill_resume(model, work, size, run["seconds"], kills, tag=tag)


def resume(rows: dict[str, list[dict]], onnx: Path, work: Path, kills: int) -> list[dict]:
    """The kills of the 8192² OME-Zarr run (its uninterrupted seconds from the gigapixel rows)."""
    seconds = next(r["seconds"] for r in rows["gigapixel"]
                   if (r["model"], r["size"], r["input"]) == ("ort-cpu fp32", 8192, HOW["zarr"]))  # fmt: skip
    return kill_resume(onnx, work, 8192, seconds, kills)


if __name__ == "__main__":
    sys.exit(main())
