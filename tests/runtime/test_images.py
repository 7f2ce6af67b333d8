from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnx.runtime.images import MAX_PIXELS, Header, ImageError, pad_to_multiple, read_header, read_image

from .image_files import claims


def test_importing_fcnx_leaves_pillows_bomb_guard_alone() -> None:
    code = "from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import fcnx.runtime, fcnx.runtime.cli; "
    code += "from fcnx.runtime.images import read_image; print(before, Image.MAX_IMAGE_PIXELS)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = out.stdout.split()
    assert before == after != "None"


def test_a_header_over_the_max_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    # 14200 x 14200 = 201.6 Mpx: over a 200 Mpx --max-pixels, and over Pillow's own error
    # threshold (2 x MAX_IMAGE_PIXELS = 179 Mpx), which fcnx's header read must not trip over.
    assert 14200 * 14200 > 200_000_000 > 2 * (Image.MAX_IMAGE_PIXELS or 0)
    path = tmp_path / "huge.png"
    path.write_bytes(claims(14200, 14200))
    with pytest.raises(ImageError, match=r"huge\.png: 14200x14200 pixels is over the limit of 200000000"):
        read_image(path, 1, max_pixels=200_000_000)


def test_the_default_limit_is_opencvs_unless_raised_before_import(tmp_path: Path) -> None:
    # 40000 x 30000 = 1.2 Gpx: under fcnx's default 2^32, over OpenCV's default 2^30 (a fresh
    # process: the fcnx command raises OpenCV's limit, and tests import it)
    assert 2**30 < 40000 * 30000 < MAX_PIXELS
    path = tmp_path / "big.png"
    path.write_bytes(claims(40000, 30000))
    code = (
        "import sys; from fcnx.runtime.images import read_image, ImageError\n"
        "try:\n    read_image(sys.argv[1], 1)\nexcept ImageError as exc:\n    print(exc)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert "big.png: 40000x30000 pixels is over OpenCV's limit of 1073741824" in out.stdout, out


def test_a_refusal_by_admit_comes_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    path.write_bytes(claims(19000, 10000))
    seen = []

    def admit(header: Header) -> None:
        seen.append((header.width, header.height, header.bytes_per_pixel))
        raise ImageError(path, "would not fit")

    with pytest.raises(ImageError, match="would not fit"):
        read_image(path, 1, admit=admit)
    assert seen == [(19000, 10000, 1)]
    assert read_header(path) == Header(19000, 10000, 1)


def test_a_header_under_the_limit_goes_on_to_decoding(tmp_path: Path) -> None:
    # 190 Mpx is over Pillow's threshold but under fcnx's: the header check lets it through,
    # and the decoder then finds that 8x8 pixels of data do not fill it
    path = tmp_path / "large.png"
    path.write_bytes(claims(19000, 10000))
    with pytest.raises(ImageError, match=r"large\.png: not a decodable image"):
        read_image(path, 1)


def test_pad_to_multiple_mirrors_and_keeps_the_original_top_left() -> None:
    image = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7, 1)
    padded = pad_to_multiple(image, 4)
    assert padded.shape == (8, 8, 1)
    np.testing.assert_array_equal(padded[:5, :7], image)
    np.testing.assert_array_equal(padded[5, :7], image[4])  # symmetric: the edge row repeats
    assert pad_to_multiple(image, 1) is image


def test_the_command_raises_opencvs_pixel_limit_before_opencv_loads_and_the_library_does_not() -> None:
    code = (
        "import os, sys; import fcnx.runtime; lib = os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'); "
        "import fcnx.runtime.cli; print(lib, 'cv2' in sys.modules, os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    assert out.stdout.split() == ["None", "False", str(1 << 40)]
