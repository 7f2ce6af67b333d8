"""What ``fcnx predict`` writes per image, and how.

- mask ``.png``: an indexed-colour (palette) PNG whose pixel values are the class
  indices and whose palette is the card's, so viewers show colours while programs
  read class ids (the Pascal VOC convention). OpenCV cannot write palette PNGs;
  Pillow can, and is faster at it than OpenCV's grey PNG at the same setting.
- mask ``.npy``: the uint8 class-index array.
- overlay ``.overlay.jpg``: the image with every non-background class tinted in its
  palette colour, for eyeballing results.

Every file goes through ``atomic_write_bytes``: a killed run leaves complete files or
none.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image

from ..atomic import atomic_write_bytes
from ..card import default_palette

FORMATS = ("png", "npy")
PROBS_FORMATS = ("npy", "png")  # --save-probs: float16 (H, W, K) .npy, or one uint8 PNG per class
OVERLAY_SUFFIX = ".overlay.jpg"
PROBS_TAG = ".probs"
OVERLAY_ALPHA = 0.45
PNG_COMPRESSION = 3  # zlib level: ~as small as the default 6 for masks, ~2x faster


def output_paths(
    out: Path, relative: str, format: str, overlay: bool, probs: str | None = None, classes: int = 0
) -> list[Path]:
    """The files one input gets: the mask, then the overlay if asked for, then the
    probabilities (``IMAGE.probs.npy``, or ``IMAGE.probs-K.png`` for each of ``classes``)."""
    rel = PurePosixPath(relative)
    paths = [out / rel.with_suffix("." + format)]
    if overlay:
        paths.append(out / rel.with_name(rel.stem + OVERLAY_SUFFIX))
    if probs == "npy":
        paths.append(out / rel.with_name(rel.stem + PROBS_TAG + ".npy"))
    elif probs == "png":
        paths += [out / rel.with_name(f"{rel.stem}{PROBS_TAG}-{k}.png") for k in range(classes)]
    return paths


ARRAY_OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")  # the masks of an array input (runtime/arrays/writers.py)


def is_output_name(name: str) -> bool:
    """Whether a file name has the shape of an output ``output_paths`` (or an array
    input's writer) gives: what ``--overwrite`` may delete."""
    return name.endswith(
        (
            *(f".{f}" for f in FORMATS),
            OVERLAY_SUFFIX,
            *(f".{f}" for f in PROBS_FORMATS),
            *ARRAY_OUTPUT_SUFFIXES,
        )
    )


def encode_mask_png(mask: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> bytes:
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask is uint8 (H, W), got {mask.dtype} {mask.shape}")
    image = Image.fromarray(mask, mode="P")
    image.putpalette([v for colour in palette for v in colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
    return buffer.getvalue()


def encode_mask_npy(mask: np.ndarray) -> bytes:  # any array: masks and probabilities
    buffer = io.BytesIO()
    np.save(buffer, mask, allow_pickle=False)
    return buffer.getvalue()


def overlay_colours(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """The palette, with grey entries (a binary mask's white) swapped for VOC colours: a
    white tint on a greyscale image shows nothing."""
    vivid = default_palette(max(3, len(palette) + 1))
    colours = [vivid[k] if len(set(c)) == 1 and k > 0 else c for k, c in enumerate(palette)]
    return np.asarray(colours, dtype=np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` with classes 1.. tinted in their palette colours."""
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    colours = overlay_colours(palette)[np.minimum(mask, len(palette) - 1)]
    tinted = cv2.addWeighted(image, 1 - OVERLAY_ALPHA, colours, OVERLAY_ALPHA, 0)
    return np.where((mask > 0)[:, :, None], tinted, image)


def encode_overlay_jpg(
    image: np.ndarray, mask: np.ndarray, palette: tuple[tuple[int, int, int], ...]
) -> bytes:
    rgb = overlay(image, mask, palette)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("OpenCV could not encode the overlay as JPEG")
    return data.tobytes()


def write_outputs(
    paths: list[Path],
    mask: np.ndarray,
    palette: tuple[tuple[int, int, int], ...],
    image: np.ndarray | None = None,
    run_id: str = "",
    probs: np.ndarray | None = None,
) -> None:
    """Encode and atomically write the files of ``output_paths``: the mask (format from the
    path), the overlay of ``image``, the probabilities; the temp files carry ``run_id``."""
    mask_path, *others = paths
    data = encode_mask_npy(mask) if mask_path.suffix == ".npy" else encode_mask_png(mask, palette)
    atomic_write_bytes(mask_path, data, tag=run_id)
    for path in others:
        if path.name.endswith(OVERLAY_SUFFIX):
            if image is None:
                raise ValueError("an overlay needs the image")
            atomic_write_bytes(path, encode_overlay_jpg(image, mask, palette), tag=run_id)
            continue
        if probs is None:
            raise ValueError("saving probabilities needs them")
        if path.suffix == ".npy":
            atomic_write_bytes(path, encode_mask_npy(probs.astype(np.float16, copy=False)), tag=run_id)
        else:  # IMAGE.probs-K.png: class K's probability as 0..255
            k = int(path.stem.rsplit("-", 1)[1])
            plane = np.clip(np.rint(probs[..., k].astype(np.float32) * 255), 0, 255).astype(np.uint8)
            ok, encoded = cv2.imencode(".png", plane, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
            if not ok:
                raise ValueError("OpenCV could not encode a probability PNG")
            atomic_write_bytes(path, encoded.tobytes(), tag=run_id)
