"""Image files for predict tests: good ones of every kind, and bad ones of every kind."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def claims(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(png(np.zeros((8, 8), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bomb() -> bytes:
    """A few bytes whose header claims 70000 x 70000 pixels (over the default --max-pixels)."""
    return claims(70000, 70000)


def exif_rotated_jpeg(array: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def good_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Good images of every kind -> the mask size each must get."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    grey = rng.integers(0, 256, (64, 64), np.uint8)
    (folder / "grey.png").write_bytes(png(grey))
    (folder / "sub" / "odd.png").write_bytes(png(rng.integers(0, 256, (45, 77), np.uint8)))
    (folder / "deep16.png").write_bytes(png(rng.integers(0, 65536, (64, 48), np.uint16)))
    rgba = rng.integers(0, 256, (40, 64, 4), np.uint8)
    (folder / "rgba.png").write_bytes(png(rgba))
    (folder / "photo.jpg").write_bytes(exif_rotated_jpeg(rng.integers(0, 256, (32, 64, 3), np.uint8)))
    return {"grey.png": (64, 64), "sub/odd.png": (45, 77), "deep16.png": (64, 48), "rgba.png": (40, 64),
            "photo.jpg": (64, 32)}  # fmt: skip


def bad_files(folder: Path) -> dict[str, str]:
    """Bad files -> a word their failure reason must contain."""
    good = png(np.zeros((64, 64), np.uint8))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "bomb.png").write_bytes(bomb())
    return {"empty.png": "empty", "truncated.png": "decodable", "notes.png": "decodable", "bomb.png": "limit"}


def masks(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def assert_threshold_masks(inputs: Path, out: Path, names: dict[str, tuple[int, int]]) -> None:
    """Each good input's mask in OUT is exactly what the threshold model answers for it
    (pixel > 127 of the image as fcnx reads it: grey, 8-bit, EXIF orientation applied)."""
    from fcnx.runtime.images import read_image

    from ..fakes import threshold_mask

    for rel, size in names.items():
        mask = np.array(Image.open(out / Path(rel).with_suffix(".png")))
        assert mask.shape == size, rel
        np.testing.assert_array_equal(mask, threshold_mask(read_image(inputs / rel, 1)), err_msg=rel)
