"""16-bit images holding 12-bit data through real ``fcnx`` processes: the masks of the
mapped data, the card's mapping by default, ``--intensity`` over it, one warning line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from fcnx.runtime.intensity import map_to_uint8

from ..fakes import THRESHOLD_ONNX, threshold_mask
from ..runtime.image_files import png
from ..runtime.test_intensity import TWELVE_BIT, png16, tiff16
from .runs import CLI, predict_command, run


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) for p in sorted(out.glob("*.png"))}


def _summary(out: Path) -> dict[str, object]:
    return json.loads((out / "summary.json").read_text())


def _deep_inputs(folder: Path) -> Path:
    """The 12-bit image as a 16-bit PNG with sBIT 12 and as TIFFs with MaxSampleValue or
    SMaxSampleValue 4095 (BitsPerSample 16)."""
    folder.mkdir()
    (folder / "sbit.png").write_bytes(png16(TWELVE_BIT, b"\x0c"))
    tiff16(folder / "max.tif", TWELVE_BIT, max_sample_value=4095)
    tiff16(folder / "smax.tif", TWELVE_BIT, smax_sample_value=4095)
    return folder


def _model_with_intensity(tmp_path: Path, intensity: str) -> Path:
    """The threshold model whose card records ``intensity`` (as a training with it writes)."""
    model = onnx.load(str(THRESHOLD_ONNX))
    prop = next(p for p in model.metadata_props if p.key == "fcnx.card")
    prop.value = json.dumps(json.loads(prop.value) | {"intensity": intensity})
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_predict_auto_gives_the_masks_of_the_8_bit_conversion(tmp_path: Path) -> None:
    deep = _deep_inputs(tmp_path / "deep")
    eight = tmp_path / "eight"
    eight.mkdir()
    for name in ("sbit", "max", "smax"):
        (eight / f"{name}.png").write_bytes(png(map_to_uint8(TWELVE_BIT, "bits:12")))
    done = run(predict_command(deep, tmp_path / "out", "--intensity", "auto"))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stdout + done.stderr  # every file said its depth
    reference = run(predict_command(eight, tmp_path / "out8"))
    assert reference.returncode == 0, reference.stderr
    masks, expected = _masks(tmp_path / "out"), _masks(tmp_path / "out8")
    assert sorted(masks) == sorted(expected) == ["max", "sbit", "smax"]
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    assert 0.4 < masks["sbit"].mean() < 0.6  # two classes, not the one class of a nearly black image


def test_predict_uses_the_cards_mapping_and_the_flag_overrides_it(tmp_path: Path) -> None:
    deep = _deep_inputs(tmp_path / "deep")
    model = _model_with_intensity(tmp_path, "bits:12")
    info = run([*CLI, "info", str(model)])
    assert "images mapped to 8-bit by bits:12" in info.stdout, info.stderr
    done = run(predict_command(deep, tmp_path / "card", model=model))
    assert done.returncode == 0, done.stderr
    summary = _summary(tmp_path / "card")
    assert summary["intensity"] == {
        "mapping": "bits:12",
        "from": "model card",
        "warnings": {"count": 0, "first": None},
    }
    expected = threshold_mask(np.rint(TWELVE_BIT * 255.0 / 4095).astype(np.uint8))
    for name, mask in _masks(tmp_path / "card").items():
        np.testing.assert_array_equal(mask, expected, err_msg=name)

    full = run(predict_command(deep, tmp_path / "full", "--intensity", "full", model=model))
    assert full.returncode == 0, full.stderr
    assert _summary(tmp_path / "full")["intensity"]["from"] == "--intensity"
    assert all(not m.any() for m in _masks(tmp_path / "full").values())  # 0..15: one class


def test_files_that_say_no_depth_make_one_warning_line_and_a_count(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(7):
        (inputs / f"{i}.png").write_bytes(png16(TWELVE_BIT >> (i % 3)))  # 16-bit PNGs, no sBIT
    model = _model_with_intensity(tmp_path, "auto")
    done = run(predict_command(inputs, tmp_path / "out", "--workers", "3", model=model))
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "warning" in line]
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("warning: ") and "(and 6 more images like it)" in lines[0]
    assert "--intensity bits:" in lines[0]
    warnings = _summary(tmp_path / "out")["intensity"]["warnings"]
    assert warnings["count"] == 7 and warnings["first"]["path"] in lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["predict", str(THRESHOLD_ONNX), "{tmp}/in", "-o", "{tmp}/out"],
        ["train", "{tmp}/data", "-o", "{tmp}/run"],
        ["evaluate", "{tmp}/run", "{tmp}/data"],
        ["parity", "{tmp}/run", "{tmp}/model.onnx"],
    ],
)
def test_a_bad_intensity_is_a_one_line_error_before_anything_runs(command: list[str], tmp_path: Path) -> None:
    done = run([*CLI, *(c.format(tmp=tmp_path) for c in command), "--intensity", "bits:20"], timeout=300)
    assert done.returncode == 1, done.stderr
    first = done.stderr.splitlines()[0]
    assert first == (
        "error: --intensity must be auto, full, bits:N (N 9..16) or percentile:P1,P2 "
        "(0 <= P1 < P2 <= 100), got 'bits:20'"
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_predict_help_says_mappings_apply_to_16_bit_images_only() -> None:
    done = run([*CLI, "predict", "--help"])
    text = " ".join(done.stdout.split())
    assert "--intensity SPEC" in text and "8-bit images are used as they are" in text
    assert "default: the model card's" in text
