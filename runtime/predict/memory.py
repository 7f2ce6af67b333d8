"""What one image costs in memory on its way through ``fcnx predict``, and what there is.

An out-of-memory kill is not an exception a run can catch, so an image whose input,
tiles, blend band and outputs would not fit is refused before it is decoded, from its
header, with the estimate in the reason. The estimate is deliberately simple (every
large buffer the pipeline holds for the image, counted once, plus the tiles in flight)
and ``benchmarks/large_images.py`` reports it beside the measured peak.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..images import Header
from .segmenter import Segmenter

GIB = 1 << 30
# A model holds its activations for every pixel it runs at once (a batch of tiles, or a
# whole image): measured for the default slim FCN on onnxruntime CPU, 4.4 GiB peak RSS for
# one whole 4096² image, ~280 B per input pixel. For a batch of tiles onnxruntime's arena
# held about twice that (1.1 GiB for 8 tiles of 512², measured): it grows in doublings.
ACTIVATION_BYTES_PER_PIXEL = 280
ARENA_GROWTH = 2
IN_FLIGHT_BATCHES = 3  # being filled, in the backend, being handed back


def image_bytes(segmenter: Segmenter, header: Header, probs_bytes: int = 0, overlay: bool = False) -> int:
    """Bytes one image of this header needs: its decoded copy (and a model-channel copy
    when the channels differ), the mask and the encoder's copy of it, kept probabilities
    (``probs_bytes`` per value), the overlay, and the model's activations for what runs
    at once: a batch of tiles (with the tiles in flight and the blend band), or the
    whole image."""
    h, w = header.height, header.width
    pixels = h * w
    channels = segmenter.card.input_channels
    classes = segmenter.card_classes
    total = pixels * header.bytes_per_pixel + 2 * pixels  # decoded; mask and its encoding
    if header.bytes_per_pixel != channels:  # 16-bit, colour to grey, grey to colour: converted
        total += pixels * channels
    total += pixels * classes * probs_bytes + (pixels * 3 * 3 if overlay else 0)
    if segmenter.tiled((h, w)):
        total += _tiling_bytes(segmenter, w)
    else:
        total += pixels * (ACTIVATION_BYTES_PER_PIXEL + 4 * classes * len(segmenter.passes))
    return total


def window_bytes(
    segmenter: Segmenter, header: Header, band_rows: int, bands_held: int, probs_bytes: int = 0
) -> int:
    """Bytes one plane read by windows needs (runtime/predict/volumes.py), whatever its
    height: the rows of tiles read at once with their overlap (and their model-channel
    copy), the blend accumulator, the rows waiting to fill an output band, the
    ``bands_held`` output bands queued for or inside the writer (mask and kept
    probabilities), and the tiles in flight with the model's activations for a batch."""
    assert segmenter.tile is not None
    th, tw = segmenter.tile
    w, channels, classes = header.width, segmenter.card.input_channels, segmenter.card_classes
    padded_w = -(-w // tw) * tw + tw
    total = 2 * th * padded_w * (header.bytes_per_pixel + channels)  # a row of tiles + the next one's read
    total += (band_rows + th) * w * (1 + classes * probs_bytes)  # rows filling a band
    total += bands_held * band_rows * w * (1 + classes * probs_bytes)
    return total + _tiling_bytes(segmenter, w)


def _tiling_bytes(segmenter: Segmenter, width: int) -> int:
    """What tiled inference holds for an image of this width, whole or windowed: the blend
    accumulator and weights, a finished band (probabilities, argmax), the batches of tiles
    in flight and the model's activations for one."""
    assert segmenter.tile is not None
    th, tw = segmenter.tile
    channels, classes = segmenter.card.input_channels, segmenter.card_classes
    padded_w = -(-width // tw) * tw + tw
    total = th * padded_w * (classes + 1) * 4  # accumulator and weights
    total += th * width * (4 * classes + 8)  # a finished band: probabilities, argmax
    total += IN_FLIGHT_BATCHES * segmenter.batch_size * th * tw * (channels + 4 * classes + 1)
    return total + segmenter.batch_size * th * tw * ACTIVATION_BYTES_PER_PIXEL * ARENA_GROWTH


def batch_bytes(segmenter: Segmenter) -> int | None:
    """Bytes a full batch needs whatever the images are (the model's activations for it,
    with the batches in flight), when every piece has one size: tiles, or a fixed-size
    model's inputs. None when pieces take the images' own sizes (tiling off)."""
    hw = segmenter.tile or segmenter.input_hw
    if hw is None:
        return None
    pixels = hw[0] * hw[1]
    channels, classes = segmenter.card.input_channels, segmenter.card_classes
    per_piece = pixels * (
        ACTIVATION_BYTES_PER_PIXEL * ARENA_GROWTH + IN_FLIGHT_BATCHES * (channels + 4 * classes + 1)
    )
    return segmenter.batch_size * per_piece


def check_batch(segmenter: Segmenter) -> None:
    """Refuse, once and before any image is read, a batch size whose batch alone would not
    fit in the memory available (else every image would fail with the same reason)."""
    need, free = batch_bytes(segmenter), available_bytes()
    if need is None or free is None or need <= free:
        return
    hw = segmenter.tile or segmenter.input_hw
    assert hw is not None
    batch = segmenter.batch_size
    fits = free // (need // batch)
    advice = f"use --batch {fits} or less" if fits >= 1 else "not even --batch 1 fits: free memory"
    raise ValueError(
        f"--batch {batch}: a batch of {batch} pieces of {hw[0]}x{hw[1]} needs about {describe(need)} "
        f"({segmenter.describe()}); {describe(free)} is available: {advice}"
    )


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, or less when a
    cgroup (a container's limit) allows less. None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        cap, used = _read_int(Path(limit)), _read_int(Path(usage))
        if cap is not None and used is not None and cap < 1 << 60:
            found.append(max(0, cap - used))
    if not found and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def describe(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 10 else f"{n / (1 << 20):.0f} MiB"
