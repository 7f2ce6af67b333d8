"""A synthetic EM-like dataset: the embedded default for the demo and the tests.

Cells are a Voronoi tessellation of random seeds, warped by a smooth displacement
field so borders wander like real membranes; membranes are dark bands of varying
thickness. Cells get their own grey level, dark organelle blobs (distractors that are
not membrane), then blur, uneven illumination and noise. Labels follow the membrane
dataset's convention: 0 = membrane, 255 = cell interior. numpy and OpenCV only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fcnx.runtime.atomic import atomic_path, atomic_write_bytes


def _smooth_field(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * amplitude


def _two_nearest(
    ys: np.ndarray, xs: np.ndarray, seeds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the nearest and second-nearest seed, and the nearest seed's index."""
    d1 = np.empty(ys.shape, np.float32)
    d2 = np.empty(ys.shape, np.float32)
    nearest = np.empty(ys.shape, np.int32)
    for r in range(0, ys.shape[0], 64):  # row chunks keep memory flat for big images
        dy = ys[r : r + 64, :, None] - seeds[None, None, :, 0]
        dx = xs[r : r + 64, :, None] - seeds[None, None, :, 1]
        dist = np.sqrt(dy * dy + dx * dx)
        order = np.argpartition(dist, 1, axis=-1)[..., :2]
        first = np.take_along_axis(dist, order[..., :1], -1)[..., 0]
        second = np.take_along_axis(dist, order[..., 1:2], -1)[..., 0]
        swap = second < first
        d1[r : r + 64] = np.where(swap, second, first)
        d2[r : r + 64] = np.where(swap, first, second)
        nearest[r : r + 64] = np.where(swap, order[..., 1], order[..., 0])
    return d1, d2, nearest


def synth_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair, both uint8 (size, size)."""
    n_cells = max(4, int(size * size / rng.uniform(35.0, 55.0) ** 2))
    seeds = rng.uniform(0, size, (n_cells, 2)).astype(np.float32)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    wobble = max(2, size // 48)
    grid_y += _smooth_field(rng, size, wobble, size / 90.0)
    grid_x += _smooth_field(rng, size, wobble, size / 90.0)
    d1, d2, nearest = _two_nearest(grid_y, grid_x, seeds)

    thickness = rng.uniform(2.0, 4.5) + _smooth_field(rng, size, max(2, size // 64), 0.8)
    membrane = (d2 - d1) < np.clip(thickness, 1.2, None)

    cell_grey = rng.uniform(150, 215, n_cells).astype(np.float32)
    image = cell_grey[nearest] + _smooth_field(rng, size, max(2, size // 16), 6.0)
    for _ in range(int(n_cells * rng.uniform(0.5, 1.5))):  # organelles: dark, not membrane
        centre = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        axes = (int(rng.uniform(2, 7)), int(rng.uniform(2, 5)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(70, 120)), -1)
    image[membrane] = rng.uniform(35, 75)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 1.4))
    illumination = 1.0 + _smooth_field(rng, size, 3, 0.12)
    image = image * illumination + rng.normal(0, rng.uniform(6, 12), image.shape).astype(np.float32)
    label = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError("PNG encoding failed")
    return data.tobytes()


STACK_NAMES = ("image.tif", "label.tif")


def write_synthetic_dataset(out: str | Path, count: int = 24, size: int = 256, seed: int = 0) -> Path:
    """Write ``out/image/NNN.png`` and ``out/label/NNN.png`` (each file atomically)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name in pair_names(count):
        image, label = synth_pair(size, rng)
        atomic_write_bytes(out / "image" / name, _png(image))
        atomic_write_bytes(out / "label" / name, _png(label))
    return out


def pair_names(count: int) -> list[str]:
    """The file names of a dataset of ``count`` pairs: 000.png, 001.png, ..."""
    width = max(3, len(str(count - 1)))
    return [f"{i:0{width}d}.png" for i in range(count)]


def write_page_stack(path: Path, pages: list[Path]) -> None:
    """The PNGs ``pages`` (8-bit grey, one shape) as one multi-page TIFF at ``path``, page i
    = file i, uncompressed like the ISBI 2012 volumes; atomically, one page in memory."""
    try:
        import tifffile
    except ModuleNotFoundError:
        from fcnx.runtime.backends.base import MissingExtra

        raise MissingExtra('writing TIFF stacks needs tifffile: pip install "fcnx[volumes]"') from None

    def read(page: Path) -> np.ndarray:
        array = cv2.imread(str(page), cv2.IMREAD_GRAYSCALE)
        if array is None:
            raise OSError(f"{page}: cannot read the PNG just written")
        return array

    first = read(pages[0])
    with atomic_path(path, suffix=".tif") as tmp, tifffile.TiffWriter(tmp) as tif:
        tif.write(
            (read(page) for page in pages),
            shape=(len(pages), *first.shape),
            dtype=np.uint8,
            photometric="minisblack",
            metadata={"axes": "ZYX"},
        )


def write_synthetic_stacks(out: str | Path, count: int) -> tuple[Path, Path]:
    """``out/image.tif`` and ``out/label.tif``: the ``count`` image and label PNGs that
    ``write_synthetic_dataset`` wrote, as two multi-page TIFF stacks, page i = pair i (the
    ISBI 2012 layout)."""
    out = Path(out)
    written = []
    for folder, name in zip(("image", "label"), STACK_NAMES):
        write_page_stack(out / name, [out / folder / page for page in pair_names(count)])
        written.append(out / name)
    return written[0], written[1]
