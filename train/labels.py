"""What label files mean: binary 0/255 masks, class-index PNGs, or colour palettes.

A classes file has one class per line, in class-id order: ``name`` (labels are
class-index PNGs) or ``name R G B`` (labels are colour images in that palette).
Blank lines and ``#`` comments are ignored. Without a classes file the format is
detected once for the whole dataset, never per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnx.runtime.card import ModelCard, default_palette

MAX_AUTO_CLASSES = 32


class LabelError(ValueError):
    pass


@dataclass(frozen=True)
class ClassSpec:
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    encoding: str  # "binary" (0/255), "index" (0..n-1) or "palette" (RGB colours)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def decode(self, label: np.ndarray, path: str | Path) -> np.ndarray:
        """Raw label pixels -> class ids (H, W) uint8; out-of-range values name the file."""
        if self.encoding == "palette":
            return self._decode_palette(label, path)
        if label.ndim != 2:
            raise LabelError(
                f"{path}: expected a single-channel {self.encoding} mask, got a colour image "
                "(colour masks need a classes file with a colour per class)"
            )
        if self.encoding == "binary":
            bad = (label != 0) & (label != 255)
            if bad.any():
                values = np.unique(label[bad])[:5].tolist()
                raise LabelError(f"{path}: binary masks hold only 0 and 255, found {values}")
            return (label == 255).astype(np.uint8)
        if int(label.max()) >= self.num_classes:
            values = np.unique(label[label >= self.num_classes])[:5].tolist()
            raise LabelError(f"{path}: class ids must be 0..{self.num_classes - 1}, found {values}")
        return label.astype(np.uint8, copy=False)

    def _decode_palette(self, label: np.ndarray, path: str | Path) -> np.ndarray:
        if label.ndim != 3:
            raise LabelError(f"{path}: expected an RGB colour mask, got a single-channel image")
        packed = (
            (label[..., 0].astype(np.int32) << 16) | (label[..., 1].astype(np.int32) << 8) | label[..., 2]
        )
        ids = np.full(packed.shape, 255, dtype=np.uint8)
        for k, (r, g, b) in enumerate(self.palette):
            ids[packed == (r << 16 | g << 8 | b)] = k
        unknown = ids == 255
        if unknown.any():
            colour = label[unknown][0].tolist()
            raise LabelError(f"{path}: colour {colour} is not in the classes file's palette")
        return ids


def read_classes_file(path: str | Path) -> ClassSpec:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabelError(f"{path}: cannot read classes file ({exc.strerror})") from None
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) == 1:
            names.append(parts[0])
        elif len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts[1:]):
            names.append(parts[0])
            colours.append((int(parts[1]), int(parts[2]), int(parts[3])))
        else:
            raise LabelError(f"{path}:{number}: expected 'name' or 'name R G B' (0..255), got {raw!r}")
    if len(names) < 2:
        raise LabelError(f"{path}: a classes file needs at least 2 classes, found {len(names)}")
    if len(set(names)) != len(names):
        raise LabelError(f"{path}: class names must be unique")
    if colours and len(colours) != len(names):
        raise LabelError(f"{path}: give a colour for every class or for none")
    if colours:
        if len(set(colours)) != len(colours):
            raise LabelError(f"{path}: two classes share a colour")
        return ClassSpec(tuple(names), tuple(colours), "palette")
    return ClassSpec(tuple(names), default_palette(len(names)), "index")


def detect_classes(values: set[int], colour_files: list[str]) -> ClassSpec:
    """Pick the encoding from the union of label values over the whole dataset."""
    if colour_files:
        raise LabelError(
            f"{colour_files[0]}: colour masks need a classes file ('name R G B' per line, --classes)"
        )
    if values <= {0, 255}:
        return ClassSpec(("background", "foreground"), default_palette(2), "binary")
    top = max(values)
    if top < MAX_AUTO_CLASSES:
        n = max(2, top + 1)
        return ClassSpec(tuple(f"class{k}" for k in range(n)), default_palette(n), "index")
    raise LabelError(
        f"labels hold values {sorted(values)[:8]}{'...' if len(values) > 8 else ''}: not 0/255 "
        f"binary masks nor class ids below {MAX_AUTO_CLASSES}; write a classes file (--classes)"
    )


def class_spec_from_card(card: ModelCard) -> ClassSpec:
    encoding = str(card.training.get("label_encoding", "index"))
    return ClassSpec(card.classes, card.palette, encoding)
