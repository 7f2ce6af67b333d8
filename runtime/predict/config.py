"""``PredictConfig``: every option of ``fcnx predict``, one field per flag."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.ort import OrtOptions
from ..backends.registry import CHOICES
from ..card import ModelCard
from ..flags import opt
from ..images import MAX_PIXELS
from ..intensity import INTENSITY_HELP, parse_intensity
from .outputs import FORMATS, PROBS_FORMATS
from .segmenter import FITS, TTAS
from .tiling import parse_tile

READ_AHEAD_MIB = 1024
OUTPUT_FORMATS = ("auto", "tiff", "zarr", "png")  # of an array input's masks (auto: by its kind and size)


@dataclass(frozen=True)
class PredictConfig:
    model: str = opt("", "a .onnx, .engine, .keras file or training run folder", cli=False)
    inputs: tuple[str, ...] = opt((), "folders, globs, image files or text files of paths", cli=False)
    out: str = opt("", "output folder", cli=False)
    batch: int | None = opt(None, "images per inference batch (default: 8, or the model's fixed batch)")
    backend: str = opt("auto", "inference backend", choices=CHOICES)
    workers: int = opt(
        2, "threads reading/decoding and (as many) encoding/writing images; with --ray: model replicas"
    )
    format: str = opt("png", "mask file format: palette PNG of class ids, or .npy", choices=FORMATS)
    overlay: bool = opt(False, "also write IMAGE.overlay.jpg: the image tinted by class")
    overwrite: bool = opt(False, "redo every output, also those of another model in OUT")
    tile: str = opt(
        "auto",
        "tiles (sliding window) for images larger than the model's input, HxW (default: the model's input "
        "size, 512x512 for a dynamic model), or off to run images whole. Probabilities are blended with a "
        "window that falls off towards tile edges; a mask-only export cannot blend: each pixel comes from "
        "the tile where it is farthest from an edge",
        metavar="HxW|off",
    )
    overlap: int | None = opt(
        None,
        "pixels by which neighbouring tiles overlap (default: 3/16 of the tile side, 96 for 512)",
        metavar="PX",
    )
    fit: str = opt(
        "auto",
        "fit whole images to a fixed-size model instead of tiling: resize, or pad (letterbox)",
        choices=FITS,
    )
    tta: str = opt(
        "off",
        "test-time augmentation: flip averages the image's and its 3 flips' probabilities",
        choices=TTAS,
    )
    save_probs: str | None = opt(
        None,
        "also write the probabilities: IMAGE.probs.npy (float16 H x W x K), or a uint8 PNG per class",
        choices=PROBS_FORMATS,
    )
    output_format: str = opt(
        "auto",
        "masks of a stack, volume or huge image (runtime/arrays): a multi-page TIFF (page i = plane i), "
        "an OME-Zarr label image, or a palette PNG per plane (NAME-z0000.png ..., planes up to 4096x4096); "
        "auto: TIFF for a TIFF stack, OME-Zarr for Zarr, HDF5 and planes over 4096x4096",
        choices=OUTPUT_FORMATS,
    )
    axes: str | None = opt(
        None,
        "the axes of an array input without axes metadata, one letter per dimension, e.g. ZYX, CZYX, TZYX "
        "(default: the file's metadata, else YX, ZYX, CZYX, TCZYX by dimensions)",
        metavar="AXES",
    )
    level: int = opt(0, "the pyramid level of an OME-TIFF/OME-Zarr input to segment (0: full size)")
    max_pixels: int = opt(MAX_PIXELS, "refuse images with more pixels than this (read from the header)")
    intensity: str | None = opt(
        None,
        INTENSITY_HELP + " (default: the model card's; full for models trained before it)",
        metavar="SPEC",
    )
    read_ahead: int = opt(
        READ_AHEAD_MIB, "MiB of decoded images read ahead of inference (at least one image)", metavar="MIB"
    )
    progress: bool = opt(True, "progress bar on the terminal")
    threads: int | None = opt(None, "onnxruntime CPU threads (default: the usable cores)")
    cuda_graph: bool = opt(False, "ort-cuda: replay a captured CUDA graph (fixed-batch exports only)")
    trt_cache: str | None = opt(
        None, "ort-trt: engine and timing cache folder (default: .trt-cache next to the ONNX)", metavar="DIR"
    )

    ray: bool = opt(False, 'run on Ray Data (pip install "fcnx[ray]"): a local cluster, or --address')
    address: str | None = opt(
        None,
        "--ray: the cluster to join, e.g. ray://head:10001 or auto (default: RAY_ADDRESS, else a local one)",
        metavar="ADDR",
    )
    gpus_per_worker: float = opt(0.0, "--ray: GPUs per model replica (Ray actor)")
    cpus_per_worker: float | None = opt(
        None, "--ray: CPUs per model replica (default: a local cluster's cores / --workers, else 1)"
    )

    def intensity_for(self, card: ModelCard) -> str:
        """The mapping of 16-bit images this job uses: --intensity, else the model card's."""
        return self.intensity or card.intensity

    def ort_options(self, threads: int | None = None) -> OrtOptions:
        return OrtOptions(
            threads=threads or self.threads, cuda_graph=self.cuda_graph, trt_cache=self.trt_cache
        )

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {self.batch}")
        parse_tile(self.tile)  # a malformed --tile is an error before anything runs
        if self.intensity is not None:
            parse_intensity(self.intensity, "--intensity")
        if self.level < 0:
            raise ValueError(f"--level must be at least 0, got {self.level}")
        if self.max_pixels < 1 or self.read_ahead < 1:
            raise ValueError("--max-pixels and --read-ahead must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(
                f"--threads must be at least 1 (or left out for the usable cores), got {self.threads}"
            )
        if not self.ray:
            given = [f for f in ("address", "cpus_per_worker") if getattr(self, f) is not None]
            given += ["gpus_per_worker"] if self.gpus_per_worker else []
            if given:
                flags = ", ".join("--" + f.replace("_", "-") for f in given)
                raise ValueError(f"{flags} only apply with --ray")
        if self.gpus_per_worker < 0 or (self.cpus_per_worker is not None and self.cpus_per_worker <= 0):
            raise ValueError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")
