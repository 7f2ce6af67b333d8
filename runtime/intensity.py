"""How 16-bit pixel values become the 8-bit input the models take: one mapping, used by
training and inference alike and recorded in the model card (``ModelCard.intensity``).

A spec is one of::

    auto                  the bit depth the file records (PNG sBIT, TIFF MaxSampleValue,
                          SMaxSampleValue or a BitsPerSample under 16), else the full range;
                          an image under 1/16 of the full range then gets a note
    full                  0..65535 -> 0..255 (x / 257): what fcnx did before this existed
    bits:N                0..2^N-1 -> 0..255, brighter values clipped (N from 9 to 16)
    percentile:P1,P2      each image's P1th..P2th percentile (over all its channels) -> 0..255,
                          clipped

Mappings apply to 16-bit images only: 8-bit images are used as they are under every one.
A note (``Note``) is a one-line remark about one image that a run counts rather than
prints per file (``NoteCounter``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INTENSITY_HELP = (
    "how 16-bit images become the model's 8-bit input (8-bit images are used as they are): auto (the bit "
    "depth the file records: PNG sBIT, TIFF MaxSampleValue/SMaxSampleValue; else the full 16-bit range, "
    "with a warning for images using under 1/16 of it), full (0..65535 -> 0..255), bits:N (0..2^N-1 -> "
    "0..255, clipped; N 9..16), percentile:P1,P2 (each image's P1..P2 percentiles -> 0..255, clipped)"
)
LOW_RANGE = 1 << 12  # an image whose maximum is under this uses less than 1/16 of the 16-bit range
_CHUNK = 1 << 20  # values looked up at once: bounds the index copy numpy makes for a table lookup

Note = Callable[[str, str], None]  # (path, message): a one-line remark about one image


class IntensityError(ValueError):
    """A malformed intensity spec; the message is one line naming it."""


@dataclass(frozen=True)
class Intensity:
    """A parsed spec: ``kind`` auto, full, bits (with ``bits``) or percentile (``low``, ``high``)."""

    kind: str
    bits: int = 16
    low: float = 0.0
    high: float = 100.0

    def __str__(self) -> str:
        if self.kind == "bits":
            return f"bits:{self.bits}"
        if self.kind == "percentile":
            return f"percentile:{self.low:g},{self.high:g}"
        return self.kind


def parse_intensity(spec: str | Intensity, what: str = "intensity") -> Intensity:
    """``spec`` as an ``Intensity``; a one-line ``IntensityError`` naming ``what`` (e.g. the
    flag) and the spec when malformed."""
    if isinstance(spec, Intensity):
        return spec
    usage = "auto, full, bits:N (N 9..16) or percentile:P1,P2 (0 <= P1 < P2 <= 100)"
    text = spec.strip().lower() if isinstance(spec, str) else ""
    kind, _, value = text.partition(":")
    try:
        if text in ("auto", "full"):
            return Intensity(text)
        if kind == "bits" and value.strip().isdigit() and 9 <= int(value) <= 16:
            return Intensity("bits", bits=int(value))
        if kind == "percentile":
            low, high = (float(v) for v in value.split(","))
            if 0.0 <= low < high <= 100.0:
                return Intensity("percentile", low=low, high=high)
    except ValueError:
        pass
    raise IntensityError(f"{what} must be {usage}, got {spec!r}")


def _lookup(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[image]`` for a uint16 image, a block of rows at a time (numpy copies the
    indices to intp: 8 bytes a value, so never for the whole image at once)."""
    out = np.empty(image.shape, np.uint8)
    per_row = max(1, image[0].size if image.ndim > 1 else 1)
    step = max(1, _CHUNK // per_row)
    for start in range(0, image.shape[0], step):
        out[start : start + step] = table[image[start : start + step]]
    return out


def _histogram(image: np.ndarray) -> np.ndarray:
    counts = np.zeros(1 << 16, np.int64)
    flat = image.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        counts += np.bincount(flat[start : start + _CHUNK], minlength=1 << 16)
    return counts


def percentiles(image: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """``np.percentile(image, (low, high))`` (linear interpolation) of a uint16 image, from
    its histogram: no sorted copy of a large image."""
    cumulative = np.cumsum(_histogram(image))
    n = int(cumulative[-1])

    def at(q: float) -> float:
        rank = (n - 1) * q / 100.0
        below = int(np.floor(rank))
        lo, hi = np.searchsorted(cumulative, [below + 1, min(below + 2, n)], side="left")
        return float(lo + (hi - lo) * (rank - below))

    return at(low), at(high)


@functools.cache
def bits_table(bits: int) -> np.ndarray:
    """0..2^bits-1 -> 0..255 for every uint16 value, brighter ones clipped: round(x * 255 /
    top) in integers (top is odd, so there is never a tie); 16 bits is (x + 128) // 257."""
    top = (1 << bits) - 1
    values = np.minimum(np.arange(1 << 16, dtype=np.int64), top)
    table = ((values * 255 + top // 2) // top).astype(np.uint8)
    table.flags.writeable = False
    return table


def _table(intensity: Intensity, image: np.ndarray, significant_bits: int | None) -> np.ndarray:
    if intensity.kind == "percentile":
        low, high = percentiles(image, intensity.low, intensity.high)
        scaled = (np.arange(1 << 16, dtype=np.float64) - low) * (255.0 / max(high - low, 1e-9))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if intensity.kind == "bits":
        return bits_table(intensity.bits)
    if intensity.kind == "auto" and significant_bits is not None:
        return bits_table(min(max(significant_bits, 1), 16))
    return bits_table(16)


def map_to_uint8(
    image: np.ndarray,
    intensity: str | Intensity = "full",
    significant_bits: int | None = None,
    path: str = "<array>",
    note: Note | None = None,
) -> np.ndarray:
    """A uint16 image mapped to uint8 by ``intensity``. ``significant_bits``: the bit
    depth the file records (None: it does not say), for ``auto``; ``note(path, message)``
    gets the one-line warning of an ``auto`` image that says nothing and uses under 1/16
    of the range."""
    spec = parse_intensity(intensity)
    if image.dtype != np.uint16:
        raise ValueError(f"{path}: intensity mappings take 16-bit images, got {image.dtype}")
    if image.size == 0:
        return np.zeros(image.shape, np.uint8)
    if spec.kind == "auto" and significant_bits is None and note is not None:
        top = int(image.max())
        if top < LOW_RANGE:
            note(
                path,
                f"16-bit image with values up to {top} (under 1/16 of the range) and no bit depth in its "
                f"file: mapped from 0..65535, so nearly black; pass --intensity bits:{max(9, top.bit_length())} "
                "or percentile:1,99",
            )
    return _lookup(image, _table(spec, image, significant_bits))


class NoteCounter:
    """Notes from any number of images and threads, kept as a count and the first one:
    a run on a million files says it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.first: tuple[str, str] | None = None

    def __call__(self, path: str, message: str) -> None:
        with self._lock:
            self.count += 1
            if self.first is None:
                self.first = (str(path), message)

    def to_dict(self) -> dict[str, Any]:
        """For a summary: ``count`` and the ``first`` note (``path``, ``message``) or None."""
        first = None if self.first is None else {"path": self.first[0], "message": self.first[1]}
        return {"count": self.count, "first": first}

    def line(self, show: Callable[[str], str] = str) -> str:
        """One line for the terminal ("" when there was no note)."""
        return note_line(self.to_dict(), show)


def note_line(notes: dict[str, Any], show: Callable[[str], str] = str) -> str:
    """``NoteCounter.to_dict()`` as one line: the first note and how many more ("" if none);
    ``show`` prints the path (e.g. escaping what the terminal must not get)."""
    first = notes.get("first")
    if not first:
        return ""
    more = notes["count"] - 1
    others = f" (and {more} more image{'s' if more > 1 else ''} like it)" if more > 0 else ""
    return f"warning: {show(first['path'])}: {first['message']}{others}"
