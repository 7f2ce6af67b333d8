"""Image/label folders -> validated in-memory samples -> tf.data pipelines.

The layout is the write-up's: ``DATA/image/*.png`` and ``DATA/label/*.png`` paired by
file stem. A file of either folder may be a stack (a multi-page TIFF, as ISBI 2012's
``train-volume.tif`` / ``train-labels.tif``): page i of the image pairs with page i of the
label of the same stem. A pair of stacks can also be given directly (``stack_pairs``).
Everything is read and checked before training starts, and all problems are reported
together, each naming its file (and page).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.images import ImageError, list_images, read_image, read_label
from fcnx.runtime.intensity import Note

from .config import AugmentConfig
from .labels import ClassSpec, LabelError, detect_classes


class DataError(ValueError):
    """The dataset cannot be used; the message lists every file at fault."""


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path
    page: int | None = None  # a plane of a stack: page i of the image with page i of the label

    @property
    def name(self) -> str:
        return self.image.stem if self.page is None else f"{self.image.stem}-{self.page:04d}"

    @property
    def where(self) -> str:
        return "" if self.page is None else f" page {self.page}"


def _is_stack(path: Path) -> bool:
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    from fcnx.runtime.arrays.readers import is_array_input

    return is_array_input(path)


def _planes(path: Path) -> tuple[int, int, int]:
    """(planes, height, width) of a stack."""
    from fcnx.runtime.arrays.readers import open_array

    with open_array(str(path)) as source:
        return source.info.planes, source.info.height, source.info.width


def stack_pairs(image: str | Path, label: str | Path) -> list[Pair]:
    """The pages of an image stack paired by index with the pages of its label stack (the
    ISBI 2012 layout); a DataError naming both files when their page counts or sizes differ."""
    image, label = Path(image), Path(label)
    for path in (image, label):
        if not path.is_file():
            raise DataError(f"{path}: no such stack file")
    try:
        (n, h, w), (m, lh, lw) = _planes(image), _planes(label)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    if n != m:
        raise DataError(f"{label}: {m} pages, but its image stack {image} has {n}; pages pair by index")
    if (h, w) != (lh, lw):
        raise DataError(f"{label}: pages are {lw}x{lh} but the image stack's ({image}) are {w}x{h}")
    return [Pair(image, label, page) for page in range(n)]


def _read_pair(pair: Pair, intensity: str, notes: Note | None) -> tuple[np.ndarray, np.ndarray]:
    """The image (uint8 (H, W, 3)) and label (as stored) of a pair, a page of a stack too."""
    if pair.page is None:
        return read_image(pair.image, 3, intensity=intensity, note=notes), read_label(pair.label)
    from fcnx.runtime.arrays.readers import open_array
    from fcnx.runtime.images import to_channels, to_uint8

    with open_array(str(pair.image)) as source:
        image = source.read_plane(pair.page)
    where = f"{pair.image}{pair.where}"
    image = to_channels(to_uint8(image, where, intensity, None, notes), 3)
    with open_array(str(pair.label)) as source:
        label = source.read_plane(pair.page)
    if label.dtype != np.uint8:
        raise ImageError(pair.label, f"page {pair.page}: labels must be 8-bit, got {label.dtype}")
    label = label[:, :, 0] if label.shape[2] == 1 else label[:, :, :3]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


@dataclass
class Samples:
    """Decoded images (H, W, C) uint8 and masks (H, W) of class ids, in pair order."""

    pairs: list[Pair]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    classes: ClassSpec
    fingerprint: str  # sha256 over every image and label file's bytes

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices: list[int]) -> Samples:
        return Samples(
            [self.pairs[i] for i in indices],
            [self.images[i] for i in indices],
            [self.masks[i] for i in indices],
            self.classes,
            self.fingerprint,
        )

    @property
    def sizes(self) -> set[tuple[int, int]]:
        return {(m.shape[0], m.shape[1]) for m in self.masks}


def _report(problems: list[str], what: str) -> DataError:
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return DataError(f"{what}:\n  {shown}{more}")


def find_pairs(folder: str | Path) -> list[Pair]:
    """Pair ``folder/image/X.*`` with ``folder/label/X.*`` by stem; any file without a
    partner is an error listing them all."""
    folder = Path(folder)
    image_dir, label_dir = folder / "image", folder / "label"
    missing = [str(d) for d in (image_dir, label_dir) if not d.is_dir()]
    if missing:
        raise DataError(
            f"{folder}: expected the folders image/ and label/ side by side; missing {', '.join(missing)}"
        )
    problems: list[str] = []

    def by_stem(files: list[Path]) -> dict[str, Path]:
        seen: dict[str, Path] = {}
        for f in files:
            if f.stem in seen:
                problems.append(f"{f}: same name as {seen[f.stem]}; cannot tell which to pair")
            seen[f.stem] = f
        return seen

    images, labels = by_stem(list_images(image_dir)), by_stem(list_images(label_dir))
    problems += [
        f"{images[s]}: no label with the same name in {label_dir}"
        for s in sorted(images.keys() - labels.keys())
    ]
    problems += [
        f"{labels[s]}: no image with the same name in {image_dir}"
        for s in sorted(labels.keys() - images.keys())
    ]
    if problems:
        raise _report(problems, f"{folder}: image and label files do not pair up")
    if not images:
        raise DataError(f"{image_dir}: no images found (.png, .jpg, .tif, ...)")
    pairs = []
    for stem in sorted(images):
        image, label = images[stem], labels[stem]
        try:
            stacked = _is_stack(image) or _is_stack(label)
        except (OSError, ValueError):
            stacked = False  # not a readable TIFF: reading it reports that, naming it
        if not stacked:
            pairs.append(Pair(image, label))
            continue
        try:
            pairs += stack_pairs(image, label)
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise _report(problems, f"{folder}: image and label stacks do not pair up")
    return pairs


def find_samples(data: str | Path, labels: str | Path | None = None) -> list[Pair]:
    """The pairs of a dataset: a folder with image/ and label/, or with ``labels`` an image
    stack and its label stack (pages paired by index)."""
    return find_pairs(data) if labels is None else stack_pairs(data, labels)


def load_samples(
    folder: str | Path,
    channels: int | None = None,
    classes: ClassSpec | None = None,
    intensity: str = "full",
    notes: Note | None = None,
    labels: str | Path | None = None,
) -> Samples:
    """Read and check every pair (of ``find_samples(folder, labels)``). ``channels=None``
    picks 3 if any image is in colour, else 1; ``classes=None`` detects the label encoding
    over the whole set; 16-bit images are mapped to 8 bits by ``intensity``
    (fcnx.runtime.intensity, as ``fcnx predict`` reads them), whose warnings about an image
    go to ``notes``."""
    pairs = find_samples(folder, labels)
    problems: list[str] = []
    raw_images: list[np.ndarray] = []
    raw_labels: list[np.ndarray] = []
    digest = hashlib.sha256()
    hashed: set[Path] = set()
    for pair in pairs:
        try:
            image, label = _read_pair(pair, intensity, notes)
        except (ImageError, ValueError, OSError) as exc:
            problems.append(str(exc) if pair.page is None else f"{pair.image}{pair.where}: {exc}")
            continue
        if image.shape[:2] != label.shape[:2]:
            problems.append(
                f"{pair.label}{pair.where}: label is {label.shape[1]}x{label.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
            continue
        for path in (pair.image, pair.label):
            if path in hashed:  # a stack's bytes once
                continue
            hashed.add(path)
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        raw_images.append(image)
        raw_labels.append(label)
    if problems:
        raise _report(problems, f"{folder}: unreadable or mismatched files")

    if channels is None:
        colour = any(
            not (im[..., 0] == im[..., 1]).all() or not (im[..., 1] == im[..., 2]).all() for im in raw_images
        )
        channels = 3 if colour else 1
    images = [im if channels == 3 else np.ascontiguousarray(im[..., :1]) for im in raw_images]

    if classes is None:
        values: set[int] = set()
        colour_files = []
        for pair, label in zip(pairs, raw_labels):
            if label.ndim == 3:
                colour_files.append(str(pair.label))
            else:
                values.update(np.unique(label).tolist())
        try:
            classes = detect_classes(values, colour_files)
        except LabelError as exc:
            raise DataError(f"{Path(folder) / 'label'}: {exc}") from None
    masks = []
    for pair, label in zip(pairs, raw_labels):
        try:
            masks.append(classes.decode(label, pair.label))
        except LabelError as exc:
            problems.append(str(exc))
    if problems:
        raise _report(problems, f"{folder}: label values out of range")
    return Samples(pairs, images, masks, classes, digest.hexdigest())


def split_samples(samples: Samples, val_fraction: float, seed: int) -> tuple[Samples, Samples]:
    """A deterministic (by seed) train/validation split; at least one of each."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction must be between 0 and 1, got {val_fraction}")
    n = len(samples)
    if n < 2:
        raise DataError(f"need at least 2 image pairs to split off validation, found {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    return samples.subset(sorted(order[n_val:])), samples.subset(sorted(order[:n_val]))


def training_dataset(samples: Samples, crop: int, batch_size: int, augment: AugmentConfig, seed: int) -> Any:
    """Endless batches of augmented random crops: cache -> shuffle -> augment -> crop ->
    batch -> prefetch. Each sample's randomness is seeded by (seed, sample counter)."""
    import tensorflow as tf

    from .augment import augment_pair, random_crop_pair

    too_small = [
        f"{p.image} ({m.shape[1]}x{m.shape[0]})"
        for p, m in zip(samples.pairs, samples.masks)
        if min(m.shape) < crop
    ]
    if too_small:
        raise _report(too_small, f"crop {crop} is larger than these images; lower --crop")
    channels = samples.images[0].shape[2]

    def generate() -> Any:
        for image, mask in zip(samples.images, samples.masks):
            yield image, mask[:, :, None]

    spec = (
        tf.TensorSpec((None, None, channels), tf.uint8),
        tf.TensorSpec((None, None, 1), tf.uint8),
    )
    pairs = tf.data.Dataset.from_generator(generate, output_signature=spec).cache()
    pairs = pairs.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True).repeat()
    counter = tf.data.Dataset.counter()

    def transform(pair: Any, index: Any) -> Any:
        image, mask = pair
        sample_seed = tf.stack([tf.constant(seed, tf.int64), index])
        image, mask = augment_pair(image, mask, augment, sample_seed)
        return random_crop_pair(image, mask, crop, sample_seed)

    ds = tf.data.Dataset.zip((pairs, counter)).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def validation_dataset(samples: Samples, multiple: int) -> Any:
    """Whole images, one per batch, mirror-padded to a multiple of the model stride with
    zero sample weight on the padding, so metrics count exactly the real pixels."""
    import tensorflow as tf

    from fcnx.runtime.images import pad_to_multiple

    xs, ys, ws = [], [], []
    for image, mask in zip(samples.images, samples.masks):
        weight = np.ones(mask.shape, np.float32)
        xs.append(pad_to_multiple(image, multiple))
        ys.append(pad_to_multiple(mask[:, :, None], multiple))
        ws.append(np.pad(weight, [(0, -mask.shape[0] % multiple), (0, -mask.shape[1] % multiple)]))
    channels = xs[0].shape[2]

    def generate() -> Any:
        yield from zip(xs, ys, ws)

    spec = (
        tf.TensorSpec((None, None, channels), tf.uint8),
        tf.TensorSpec((None, None, 1), tf.uint8),
        tf.TensorSpec((None, None), tf.float32),
    )
    return tf.data.Dataset.from_generator(generate, output_signature=spec).cache().batch(1)
