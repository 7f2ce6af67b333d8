"""Large images: tiled (sliding-window) inference against whole-image inference.

Mosaics of the 24 real membrane slices (512², each flipped/rotated by a seeded draw) at
the data's own scale, cropped at an offset of 16 px so the mosaic's seams lie 16 px
from the nearest tile border for every overlap (tile origins are multiples of 32):
seams neither hide nor fake tile-seam errors. With the membrane-trained FCN-8s and
FCN-2s (``../shared/models``, exported to a dynamic-size ONNX), on onnxruntime CPU:

- seams: a 4096² mosaic tiled at each overlap against the same model run on the whole
  image: mask agreement overall and within 16 px of an inner tile border, mIoU against
  the mosaic's labels, seconds; and what a fixed 512² model did before tiling (the
  image shrunk 8x to the model's input);
- speed: tiles/s on the 4096² mosaic against images/s on 512² slices, batch 8, timed
  round-robin in one run (the overlap's extra area is the overlap's cost; this ratio
  is the runtime's own);
- memory: peak RSS of ``fcnx predict`` (a subprocess, its ``ru_maxrss``) on one 4096²
  and one 16384² grayscale PNG, tiled, and on the 4096² with ``--tile off``; beside the
  estimate the runtime uses to refuse images (``runtime/predict/memory.py``), and the
  end-to-end megapixels/s;
- ``--tta flip`` on the 24 slices: mIoU and time against no augmentation.

Writes ``benchmarks/results/large_images.{json,md}``.

    python benchmarks/large_images.py            # ~25 min on 2 cores
    python benchmarks/large_images.py --quick    # FCN-8s only, fewer overlaps, no 16384²
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from report import suite_parser, write_report  # noqa: E402

SHARED = ROOT.parent / "shared"
OVERLAPS = (0, 32, 64, 96, 128, 192, 256)
BORDER = 16  # "near a tile border": within this many pixels of one
OFFSET = 16  # mosaic crop offset: seams 16 px from the nearest tile border


def membrane(data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from fcnx.runtime.images import list_images, read_image, read_label

    images = [read_image(p, 1)[..., 0] for p in list_images(data / "image")]
    labels = [(read_label(p) > 127).astype(np.uint8) for p in list_images(data / "label")]
    return images, labels


def mosaic(
    images: list[np.ndarray], labels: list[np.ndarray], size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop (at OFFSET) of a grid of the slices, each flipped/rotated at random."""
    rng = np.random.default_rng(seed)
    tile = images[0].shape[0]
    n = -(-(size + OFFSET) // tile)
    image = np.empty((n * tile, n * tile), np.uint8)
    label = np.empty_like(image)
    for r in range(n):
        for c in range(n):
            k = int(rng.integers(len(images)))
            turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
            im, lb = np.rot90(images[k], turns), np.rot90(labels[k], turns)
            if mirror:
                im, lb = im[:, ::-1], lb[:, ::-1]
            image[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = im
            label[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = lb
    crop = slice(OFFSET, OFFSET + size)
    return np.ascontiguousarray(image[crop, crop]), np.ascontiguousarray(label[crop, crop])


def export_dynamic(arch: str, out: Path, data: Path) -> Path:
    onnx = out / f"{arch}-dynamic.onnx"
    if not onnx.is_file():
        model = SHARED / "models" / f"membrane-{arch}"
        subprocess.run(
            ["fcnx", "export", "onnx", str(model), "-o", str(onnx), "--size", "dynamic", "--data", str(data)],
            check=True,
        )
    return onnx


def miou(label: np.ndarray, mask: np.ndarray) -> float:
    from fcnx.runtime.metrics import confusion_matrix, per_class_iou

    return float(np.nanmean(per_class_iou(confusion_matrix(label, mask, 2))))


def near_borders(size: int, overlap: int) -> np.ndarray:
    """True within BORDER px of an inner tile edge (where tiles start or end inside the image)."""
    from fcnx.runtime.predict.tiling import starts

    origins = starts(size, 512, overlap, 32)
    edges = {o for o in origins[1:]} | {o + 512 for o in origins[:-1]}
    line = np.zeros(size, bool)
    for edge in edges:
        line[max(0, edge - BORDER) : edge + BORDER] = True
    return line[:, None] | line[None, :]


def within_budget(row: dict) -> bool:
    from fcnx.runtime.predict.tiling import BORDER_GAP, TILED_AGREEMENT

    return row["agreement"] >= TILED_AGREEMENT and row["elsewhere"] - row["near"] <= BORDER_GAP


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def seams(
    backend: Any, image: np.ndarray, label: np.ndarray, overlaps: tuple[int, ...], arch: str
) -> list[dict]:
    from fcnx.runtime.predict.segmenter import Segmenter

    rows = []
    [whole], seconds = timed(lambda: Segmenter(backend, tile="off").predict([image]))
    rows.append({"model": arch, "how": "whole image", "overlap": None, "agreement": 1.0, "near": None,
                 "elsewhere": None, "miou": miou(label, whole), "seconds": seconds})  # fmt: skip
    small = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    [shrunk] = Segmenter(backend, tile="off").predict([small])
    shrunk = cv2.resize(shrunk, image.shape[::-1], interpolation=cv2.INTER_NEAREST)
    rows.append({"model": arch, "how": "shrunk to 512² (before tiling)", "overlap": None,
                 "agreement": float((shrunk == whole).mean()), "near": None, "elsewhere": None,
                 "miou": miou(label, shrunk), "seconds": None})  # fmt: skip
    for overlap in overlaps:
        segmenter = Segmenter(backend, tile=(512, 512), overlap=overlap)
        [tiled], seconds = timed(lambda s=segmenter: s.predict([image]))
        agree = tiled == whole
        near = near_borders(image.shape[0], overlap)
        rows.append({"model": arch, "how": "tiled 512²", "overlap": overlap, "agreement": float(agree.mean()),
                     "near": float(agree[near].mean()), "elsewhere": float(agree[~near].mean()),
                     "miou": miou(label, tiled), "seconds": seconds})  # fmt: skip
        rows[-1]["within_budget"] = within_budget(rows[-1])
        print(rows[-1], flush=True)
    return rows


def linear(tile: int) -> np.ndarray:
    """A linear ramp over the default overlap at both ends (1 inside)."""
    from fcnx.runtime.predict.tiling import MIN_WEIGHT, default_overlap

    i = np.arange(tile, dtype=np.float32)
    ramp = np.minimum(1.0, np.minimum(i + 0.5, tile - i - 0.5) / default_overlap((tile, tile), 32))
    return np.maximum(ramp, MIN_WEIGHT).astype(np.float32)


def cosine(tile: int) -> np.ndarray:
    """The linear ramp, smoothed: half a cosine period."""
    return np.maximum(0.5 - 0.5 * np.cos(np.pi * linear(tile)), 1e-3).astype(np.float32)


def windows(backend: Any, image: np.ndarray, arch: str) -> list[dict]:
    """The runtime's Gaussian blend window against ramps over the overlap, at the default
    overlap (benchmark-only stand-ins for ``tiling.weights``)."""
    from fcnx.runtime.predict import tiling
    from fcnx.runtime.predict.segmenter import Segmenter

    [whole] = Segmenter(backend, tile="off").predict([image])
    rows, gaussian = [], tiling.weights
    try:
        for name, fn in (("gaussian (fcnx)", gaussian), ("linear ramp", linear), ("cosine ramp", cosine)):
            tiling.weights = fn
            segmenter = Segmenter(backend, tile=(512, 512))
            [tiled] = segmenter.predict([image])
            agree, near = tiled == whole, near_borders(image.shape[0], segmenter.overlap)
            rows.append({"model": arch, "window": name, "overlap": segmenter.overlap,
                         "agreement": float(agree.mean()), "near": float(agree[near].mean()),
                         "elsewhere": float(agree[~near].mean())})  # fmt: skip
            rows[-1]["within_budget"] = within_budget(rows[-1])
    finally:
        tiling.weights = gaussian
    return rows


def speed(backend: Any, large: np.ndarray, slices: list[np.ndarray], rounds: int, arch: str) -> dict:
    from fcnx.runtime.predict.plans import Tiled
    from fcnx.runtime.predict.segmenter import Segmenter

    segmenter = Segmenter(backend, batch_size=8)  # the default tile and overlap
    plan = segmenter.plan(large)
    assert isinstance(plan, Tiled)
    tiles = plan.grid.count
    small = (slices * 2)[:16]  # two batches of 8
    best_large, best_small = float("inf"), float("inf")
    for _ in range(rounds):  # round-robin: both see the same machine state
        best_large = min(best_large, timed(lambda: segmenter.predict([large]))[1])
        best_small = min(best_small, timed(lambda: segmenter.predict(small))[1])
    tile_rate, image_rate = tiles / best_large, len(small) / best_small
    return {"model": arch, "tiles": tiles, "overlap": segmenter.overlap, "tiles_per_second": tile_rate,
            "images_per_second_512": image_rate, "ratio": tile_rate / image_rate,
            "megapixels_per_second": large.size / best_large / 1e6}  # fmt: skip


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Peak RSS (bytes) and wall seconds of a command run in a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True
    )
    kib, seconds = out.stdout.split()
    return int(kib) * 1024, float(seconds)


def memory(onnx: Path, work: Path, images: dict[int, Path], arch: str) -> list[dict]:
    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.images import read_header
    from fcnx.runtime.predict.memory import image_bytes
    from fcnx.runtime.predict.segmenter import Segmenter

    rows = []
    # 4096² tiled at the default batch 8 and at 4, and whole (the old way); 16384² tiled
    runs = [(4096, "auto", 8), (4096, "auto", 4), (4096, "off", 1)] + [
        (n, "auto", 8) for n in images if n != 4096
    ]
    with load(onnx, "ort-cpu") as backend:
        for size, tile, batch in runs:
            header = read_header(images[size])
            assert header is not None
            estimate = image_bytes(Segmenter(backend, batch, tile=tile), header)
            out = work / f"predict-{size}-{tile}-{batch}"
            command = ["fcnx", "predict", str(onnx), str(images[size]), "-o", str(out), "--no-progress",
                       "--overwrite", "--tile", tile, "--batch", str(batch)]  # fmt: skip
            rss, seconds = peak_rss(command)
            rows.append({"model": arch, "image": f"{size}²", "tile": tile, "batch": batch, "peak_rss_gib": rss / 2**30,
                         "estimate_gib": estimate / 2**30, "seconds": seconds,
                         "megapixels_per_second": size * size / seconds / 1e6})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def tta(backend: Any, slices: list[np.ndarray], labels: list[np.ndarray], arch: str) -> list[dict]:
    from fcnx.runtime.metrics import confusion_matrix, per_class_iou
    from fcnx.runtime.predict.segmenter import Segmenter

    rows = []
    for mode in ("off", "flip"):
        masks, seconds = timed(lambda m=mode: Segmenter(backend, tta=m).predict(slices))
        cm = sum(confusion_matrix(lb, mk, 2) for lb, mk in zip(labels, masks))
        rows.append({"model": arch, "tta": mode, "miou": float(np.nanmean(per_class_iou(cm))),
                     "seconds": seconds, "images_per_second": len(slices) / seconds})  # fmt: skip
    return rows


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f} %"


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows] + [""]


def yes(value: bool | None) -> str | None:
    return None if value is None else "yes" if value else "no"


def to_markdown(doc: dict) -> str:
    m, rows = doc["machine"], doc["rows"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), onnxruntime CPU, "
        "dynamic-size FP32 exports of the membrane models; a 4096² mosaic of the real slices. Budget: agreement "
        f"≥ 99.9 % and the near-border agreement at most 0.1 pt below the rest.",
        "",
    ]
    lines += table(
        ["model", "how", "overlap", "agreement with whole", f"within {BORDER} px of a tile border", "elsewhere",
         "within budget", "mIoU", "seconds"],
        [[r["model"], r["how"], r["overlap"], pct(r["agreement"]), pct(r["near"]), pct(r["elsewhere"]),
          yes(r.get("within_budget")), f"{r['miou']:.4f}", None if r["seconds"] is None else f"{r['seconds']:.1f}"]
         for r in rows["seams"]],
    )  # fmt: skip
    lines += table(
        ["model", "blend window", "overlap", "agreement with whole", f"within {BORDER} px of a tile border",
         "elsewhere", "within budget"],
        [[r["model"], r["window"], r["overlap"], pct(r["agreement"]), pct(r["near"]), pct(r["elsewhere"]),
          yes(r.get("within_budget"))] for r in rows["windows"]],
    )  # fmt: skip
    lines += table(
        ["model", "tiles (4096²)", "overlap", "tiles/s", "512² images/s (batch 8)", "ratio", "Mpx/s"],
        [[r["model"], r["tiles"], r["overlap"], f"{r['tiles_per_second']:.2f}", f"{r['images_per_second_512']:.2f}",
          f"{r['ratio']:.2f}", f"{r['megapixels_per_second']:.2f}"] for r in rows["speed"]],
    )  # fmt: skip
    lines += table(
        ["model", "fcnx predict on", "--tile", "--batch", "peak RSS GiB", "runtime's estimate GiB", "seconds", "Mpx/s"],
        [[r["model"], f"one {r['image']} PNG", r["tile"], r["batch"], f"{r['peak_rss_gib']:.2f}",
          f"{r['estimate_gib']:.2f}", f"{r['seconds']:.1f}", f"{r['megapixels_per_second']:.2f}"]
         for r in rows["memory"]],
    )  # fmt: skip
    lines += table(
        ["model", "--tta", "membrane mIoU (24 slices)", "seconds", "images/s"],
        [[r["model"], r["tta"], f"{r['miou']:.4f}", f"{r['seconds']:.1f}", f"{r['images_per_second']:.2f}"]
         for r in rows["tta"]],
    )  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = suite_parser(__doc__, "large_images")
    parser.add_argument("--quick", action="store_true", help="FCN-8s only, 3 overlaps, no 16384² image")
    parser.add_argument("--rounds", type=int, default=2, help="round-robin repetitions of the speed check")
    args = parser.parse_args()
    if args.render:
        doc = json.loads((args.results / "large_images.json").read_text())
        for row in doc["rows"]["seams"] + doc["rows"]["windows"]:
            if row.get("near") is not None:
                row["within_budget"] = within_budget(row)
        (args.results / "large_images.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.results / "large_images.md").write_text(to_markdown(doc))
        return 0

    from fcnx.runtime.backends.registry import load

    args.work.mkdir(parents=True, exist_ok=True)
    slices, labels = membrane(args.data)
    large, large_label = mosaic(slices, labels, 4096)
    files = {4096: args.work / "mosaic-4096.png"}
    cv2.imwrite(str(files[4096]), large)
    if not args.quick:
        files[16384] = args.work / "mosaic-16384.png"
        if not files[16384].is_file():
            cv2.imwrite(str(files[16384]), mosaic(slices, labels, 16384, seed=1)[0])
    archs = ("fcn8s",) if args.quick else ("fcn8s", "fcn2s")
    overlaps = (0, 64, 128) if args.quick else OVERLAPS
    rows: dict[str, list[dict]] = {"seams": [], "windows": [], "speed": [], "memory": [], "tta": []}
    for arch in archs:
        onnx = export_dynamic(arch, args.work, args.data)
        with load(onnx, "ort-cpu") as backend:
            rows["seams"] += seams(backend, large, large_label, overlaps, arch)
            rows["windows"] += windows(backend, large, arch)
            rows["speed"].append(speed(backend, large, slices, args.rounds, arch))
            rows["tta"] += tta(backend, slices, labels, arch)
        if arch == archs[0]:
            rows["memory"] += memory(onnx, args.work, files, arch)
    write_report(args.results, "large_images", rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
