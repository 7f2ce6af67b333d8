"""Reading images from disk into the uint8 arrays the models take.

One function per job, each raising ``ImageError`` that names the file and what was
wrong, so a caller can record it and move on to the next file.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .intensity import Intensity, Note, map_to_uint8

# Decompression-bomb guard (``fcnx predict --max-pixels``): checked on the header before
# decoding, then on the decoded size. 2^32 px (65536²) by default: what memory, not the
# guard, should refuse (the predict job estimates what an image needs before it decodes).
MAX_PIXELS = 1 << 32
# OpenCV refuses images over 2^30 px unless this is set before cv2 is imported; the fcnx
# CLI sets it (fcnx never changes a library user's environment).
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT_PIXELS = 1 << 30
HEADER_BYTES = 1 << 16  # enough for PNG/TIFF/BMP headers and JPEG markers up to the frame header
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_BITS_PER_SAMPLE, TIFF_MAX_SAMPLE_VALUE, TIFF_SMAX_SAMPLE_VALUE = 258, 281, 341


class ImageError(ValueError):
    """A file that cannot be used as an image: the message names it and says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """What a file's header says, before any pixel is decoded."""

    width: int
    height: int
    bytes_per_pixel: int  # of the decoded array: bands x bytes per sample
    significant_bits: int | None = None  # the bit depth the file records for its samples (PNG sBIT, TIFF)

    @property
    def pixels(self) -> int:
        return self.width * self.height


Admit = Callable[[Header], None]  # raises ImageError to refuse a file before it is decoded


def _pillow_header(head: bytes) -> Header | None:
    """Size and pixel layout from the header by Pillow's format plugins, constructed directly:
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
                bands = len(im.getbands())
                depth = 2 if "16" in im.mode else 4 if im.mode in ("I", "F") else 1
                return Header(int(im.size[0]), int(im.size[1]), bands * depth, _significant_bits(head, im))
        except Exception:  # this plugin cannot parse it (from this prefix): the next one may
            continue
    return None


def png_significant_bits(head: bytes) -> int | None:
    """The bit depth a PNG's ``sBIT`` chunk records for its colour samples (None: not a PNG,
    or no sBIT before the image data), from the chunks in the header bytes."""
    if not head.startswith(PNG_SIGNATURE):
        return None
    position, colour_type = len(PNG_SIGNATURE), -1
    while position + 8 <= len(head):
        length = int.from_bytes(head[position : position + 4], "big")
        kind, data = head[position + 4 : position + 8], head[position + 8 : position + 8 + length]
        if kind in (b"IDAT", b"IEND") or len(data) < length:
            return None
        if kind == b"IHDR" and length >= 10:
            colour_type = data[9]
        elif kind == b"sBIT":
            # grey/colour samples, then alpha's (for colour types 4 and 6), whose depth is not the image's
            samples = list(data[:-1] if colour_type in (4, 6) else data)
            return max(samples) if samples and 0 < max(samples) <= 16 else None
        position += length + 12  # length, type, data, CRC
    return None


def tiff_significant_bits(tags: Any) -> int | None:
    """The bit depth a TIFF records for its samples: the bits of its SMaxSampleValue or
    MaxSampleValue, else a BitsPerSample under 16 (16 is the container's, and says nothing)."""
    try:
        for tag in (TIFF_SMAX_SAMPLE_VALUE, TIFF_MAX_SAMPLE_VALUE):
            value = tags.get(tag)
            values = value if isinstance(value, tuple) else () if value is None else (value,)
            top = int(max((float(v) for v in values), default=0))
            if 0 < top < 1 << 16:
                return top.bit_length()
        value = tags.get(TIFF_BITS_PER_SAMPLE)
        values = value if isinstance(value, tuple) else () if value is None else (value,)
        bits = int(max(values, default=0))
        return bits if 8 < bits < 16 else None
    except (TypeError, ValueError):  # a tag of an unexpected type: the file says nothing usable
        return None


def _significant_bits(head: bytes, image: Image.Image) -> int | None:
    if image.format == "PNG":
        return png_significant_bits(head)
    if image.format == "TIFF":
        return tiff_significant_bits(getattr(image, "tag_v2", {}))
    return None


def _header(data: np.ndarray) -> Header | None:
    """The file header, without decoding pixels; None when Pillow does not know the
    format (OpenCV may still)."""
    for head in (data[:HEADER_BYTES], data) if data.size > HEADER_BYTES else (data,):
        header = _pillow_header(head.tobytes())
        if header is not None:
            return header
    return None


def open_regular(path: str | Path) -> io.FileIO:
    """``path`` opened for reading if it is a regular file (links followed). The open never
    blocks: a FIFO is opened non-blocking and refused, as are sockets and devices, with an
    ``ImageError`` saying what it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a socket file gives
            raise ImageError(path, "not a regular file (a socket)") from None
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kinds = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
        raise ImageError(path, f"not a regular file ({kinds.get(stat.S_IFMT(mode), 'a device')})")
    os.set_blocking(fd, True)
    return io.FileIO(fd, "rb", closefd=True)


def read_file(path: str | Path) -> bytes:
    """All bytes of a regular file (``open_regular``), or an ``ImageError`` naming it."""
    with open_regular(path) as file:
        try:
            return file.readall()
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None


def read_header(path: str | Path) -> Header | None:
    """The header of an image file from its first bytes (None: unknown, or unreadable, in
    which case reading the image says why)."""
    try:
        with open_regular(path) as file:
            head = file.read(HEADER_BYTES)
    except (OSError, ImageError):
        return None
    return _pillow_header(head) if head else None


def _environment_limit() -> int:
    try:
        return int(os.environ.get(OPENCV_PIXELS_ENV, OPENCV_DEFAULT_PIXELS))
    except ValueError:
        return OPENCV_DEFAULT_PIXELS


_OPENCV_PIXELS = _environment_limit()  # what OpenCV read when it loaded (it was imported just above)


def opencv_pixel_limit() -> int:
    """The largest image OpenCV decodes in this process: its environment variable as it
    was when OpenCV loaded (setting it later changes nothing), else 2^30."""
    return _OPENCV_PIXELS


def _admit(admit: Admit, header: Header, path: Path) -> None:
    try:
        admit(header)
    except MemoryError as exc:
        raise ImageError(path, f"not enough memory: {exc}") from None


def _decode(
    path: Path, flags: int, max_pixels: int = MAX_PIXELS, admit: Admit | None = None
) -> tuple[np.ndarray, Header | None]:
    data = np.frombuffer(read_file(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    header = _header(data)
    if (
        header is not None
    ):  # checked before decoding: a decompression bomb is a few KB that decode to gigabytes
        size = f"{header.width}x{header.height} pixels"
        if header.pixels > max_pixels:
            raise ImageError(path, f"{size} is over the limit of {max_pixels} (--max-pixels)")
        if header.pixels > opencv_pixel_limit():
            raise ImageError(
                path,
                f"{size} is over OpenCV's limit of {opencv_pixel_limit()}: set {OPENCV_PIXELS_ENV} before "
                "importing cv2 or fcnx (the fcnx command does)",
            )
        if admit is not None:
            _admit(admit, header, path)
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:  # e.g. a header whose size OpenCV's own checks refuse
        detail = str(exc).strip().splitlines()[-1].strip()
        raise ImageError(path, f"not a decodable image (OpenCV: {detail[:160]})") from None
    if image is None:
        raise ImageError(path, "not a decodable image (truncated, corrupt or not an image)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(
            path, f"{image.shape[1]}x{image.shape[0]} pixels is over the limit of {max_pixels} (--max-pixels)"
        )
    if header is None and admit is not None:  # a format only OpenCV knows: checked once decoded
        bands = image.shape[2] if image.ndim == 3 else 1
        _admit(admit, Header(image.shape[1], image.shape[0], image.itemsize * bands), path)
    return image, header


def to_uint8(
    image: np.ndarray,
    path: str | Path = "<array>",
    intensity: str | Intensity = "full",
    significant_bits: int | None = None,
    note: Note | None = None,
) -> np.ndarray:
    """8-bit as is; 16-bit mapped to 8 bits by ``intensity`` (intensity.py: ``auto`` uses
    ``significant_bits``, the depth the file records; ``note`` gets its warning); anything
    else is an error."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return map_to_uint8(image, intensity, significant_bits, str(path), note)
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


def read_image(
    path: str | Path,
    channels: int,
    max_pixels: int = MAX_PIXELS,
    admit: Admit | None = None,
    intensity: str | Intensity = "full",
    note: Note | None = None,
) -> np.ndarray:
    """An image file as uint8 (H, W, channels), RGB order, EXIF orientation applied,
    16-bit mapped to 8 by ``intensity`` (with the bit depth its header records; ``note``
    gets a one-line warning about the image, see intensity.py), alpha dropped. Refused
    before decoding: over ``max_pixels``, or when ``admit(header)`` raises."""
    path = Path(path)
    image, header = _decode(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR, max_pixels, admit)
    image = to_uint8(image, path, intensity, header.significant_bits if header else None, note)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return to_channels(image, channels)


def read_label(path: str | Path) -> np.ndarray:
    """A label file exactly as stored: uint8 (H, W) for index/binary masks, (H, W, 3)
    RGB for colour masks. No orientation or colour conversion beyond BGR -> RGB."""
    path = Path(path)
    label, _ = _decode(path, cv2.IMREAD_UNCHANGED)
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
