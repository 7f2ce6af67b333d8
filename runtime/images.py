"""Reading images from disk into the uint8 arrays the models take.

One function per job, each raising ``ImageError`` that names the file and what was
wrong, so a caller can record it and move on to the next file.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

MAX_PIXELS = 200_000_000  # decompression-bomb guard: checked on the header, then on the decoded size
HEADER_BYTES = 1 << 16  # enough for PNG/TIFF/BMP headers and JPEG markers up to the frame header
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """A file that cannot be used as an image: the message names it and says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _pillow_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header by Pillow's format plugins, constructed directly:
    their header parsing without ``Image.open``'s process-wide ``MAX_IMAGE_PIXELS`` check
    (fcnx applies its own limit and never changes Pillow's for the host process)."""
    Image.init()
    prefix = head[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:
            accepted = accept(prefix) if accept is not None else True
            if isinstance(accepted, str) or not accepted:
                continue
            with factory(io.BytesIO(head), "") as im:
                return int(im.size[0]), int(im.size[1])
        except Exception:  # this plugin cannot parse it (from this prefix): the next one may
            continue
    return None


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding pixels; None when Pillow does
    not know the format (OpenCV may still)."""
    for head in (data[:HEADER_BYTES], data) if data.size > HEADER_BYTES else (data,):
        size = _pillow_size(head.tobytes())
        if size is not None:
            return size
    return None


def _decode(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    header = _header_size(data)
    if header is not None and header[0] * header[1] > MAX_PIXELS:
        # checked before decoding: a decompression bomb is a few KB that decode to gigabytes
        raise ImageError(path, f"{header[0]}x{header[1]} pixels is over the limit of {MAX_PIXELS}")
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:  # e.g. a header whose size OpenCV's own checks refuse
        detail = str(exc).strip().splitlines()[-1].strip()
        raise ImageError(path, f"not a decodable image (OpenCV: {detail[:160]})") from None
    if image is None:
        raise ImageError(path, "not a decodable image (truncated, corrupt or not an image)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(path, f"{image.shape[1]}x{image.shape[0]} pixels is over the limit of {MAX_PIXELS}")
    return image


def to_uint8(image: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """8-bit as is; 16-bit scaled to 8 bits; anything else is an error."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageError(path, f"unsupported pixel type {image.dtype} (8- or 16-bit images only)")


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) RGB(A) -> (H, W, channels); alpha is dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    have = image.shape[2]
    if have == channels:
        return np.ascontiguousarray(image)
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise ValueError(f"cannot convert {have} channels to {channels}")


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """An image file as uint8 (H, W, channels), RGB order, EXIF orientation applied,
    16-bit scaled to 8, alpha dropped."""
    path = Path(path)
    image = _decode(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    image = to_uint8(image, path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return to_channels(image, channels)


def read_label(path: str | Path) -> np.ndarray:
    """A label file exactly as stored: uint8 (H, W) for index/binary masks, (H, W, 3)
    RGB for colour masks. No orientation or colour conversion beyond BGR -> RGB."""
    path = Path(path)
    label = _decode(path, cv2.IMREAD_UNCHANGED)
    if label.dtype != np.uint8:
        raise ImageError(path, f"labels must be 8-bit, got {label.dtype}")
    if label.ndim == 3:
        if label.shape[2] == 4:
            label = label[:, :, :3]
        label = cv2.cvtColor(label, cv2.COLOR_BGR2RGB)
        if (label[:, :, 0] == label[:, :, 1]).all() and (label[:, :, 1] == label[:, :, 2]).all():
            label = label[:, :, 0]  # a grey mask saved as RGB
    return np.ascontiguousarray(label)


def dataset_images(folder: str | Path, what: str) -> list[Path]:
    """The image files of ``folder/image`` (a dataset: image/ and label/) or else of
    ``folder`` itself, sorted; an error naming the folder when there are none. ``what``
    names them in that error, e.g. "calibration images"."""
    root = Path(folder)
    images = root / "image" if (root / "image").is_dir() else root
    if not images.is_dir():
        raise ValueError(f"{root}: no such folder (of {what})")
    found = list_images(images)
    if not found:
        raise ValueError(f"{images}: no {what} ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return found


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def mirror_pad(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Mirror-pad the bottom and right of (h, w, ...) to ``hw``; the original is ``result[:h, :w]``."""
    h, w = image.shape[:2]
    if (h, w) == hw:
        return image
    pad = [(0, hw[0] - h), (0, hw[1] - w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="symmetric")


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad (H, W, ...) so H and W are multiples of ``multiple`` (a model's stride)."""
    h, w = image.shape[:2]
    return mirror_pad(image, (-(-h // multiple) * multiple, -(-w // multiple) * multiple))
