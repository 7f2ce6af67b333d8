"""16-bit images holding 10/12/14-bit data: the explicit intensity mapping (intensity.py),
the bit depth read from file headers, the card's field, and the warning path."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin, TiffTags

from fcnx.runtime.card import CardError, ModelCard, default_palette
from fcnx.runtime.images import png_significant_bits, read_header, read_image, to_uint8
from fcnx.runtime.intensity import (
    LOW_RANGE,
    IntensityError,
    NoteCounter,
    bits_table,
    map_to_uint8,
    parse_intensity,
    percentiles,
)
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.job import format_summary, predict_folder
from fcnx.runtime.predict.segmenter import Segmenter

from ..fakes import FakeBackend, threshold_mask
from .image_files import png

TWELVE_BIT = np.random.default_rng(12).integers(0, 4096, (48, 64), np.uint16)  # a 12-bit camera's values


# -- files: 16-bit PNGs with an sBIT chunk, TIFFs with sample-value tags -------------------------------------


def png16(array: np.ndarray, sbit: bytes | None = None) -> bytes:
    """A 16-bit PNG of ``array``; with ``sbit``, an sBIT chunk (one byte per sample) after IHDR."""
    data = png(array)
    assert data[12:16] == b"IHDR"
    if sbit is None:
        return data
    chunk = struct.pack(">I", len(sbit)) + b"sBIT" + sbit + struct.pack(">I", zlib.crc32(b"sBIT" + sbit))
    return data[:33] + chunk + data[33:]  # signature (8) + IHDR (4 + 4 + 13 + 4)


def tiff16(path: Path, array: np.ndarray, **tags: int) -> Path:
    """A 16-bit greyscale TIFF written by Pillow, with ``max_sample_value=`` (281) and/or
    ``smax_sample_value=`` (341) when given (BitsPerSample stays 16, as most writers store 12-bit data)."""
    info = TiffImagePlugin.ImageFileDirectory_v2()
    for name, tag in (("max_sample_value", 281), ("smax_sample_value", 341)):
        if name in tags:
            info[tag] = tags[name]
            info.tagtype[tag] = TiffTags.SHORT
    Image.fromarray(array).save(path, tiffinfo=info)
    return path


# -- specs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("auto", "auto"),
        ("full", "full"),
        (" Bits:12 ", "bits:12"),
        ("bits:9", "bits:9"),
        ("bits:16", "bits:16"),
        ("percentile:1,99", "percentile:1,99"),
        ("percentile:0.5,99.5", "percentile:0.5,99.5"),
        ("percentile:0,100", "percentile:0,100"),
    ],
)
def test_good_specs_parse_and_print_back(spec: str, canonical: str) -> None:
    assert str(parse_intensity(spec)) == canonical
    assert parse_intensity(canonical) == parse_intensity(spec)


@pytest.mark.parametrize(
    "spec",
    ["", "bits", "bits:8", "bits:17", "bits:12.5", "bits:-12", "percentile:99,1", "percentile:1",
     "percentile:1,2,3", "percentile:-1,99", "percentile:1,101", "percentile:a,b", "linear", "auto:12"],
)  # fmt: skip
def test_a_bad_spec_is_one_line_naming_it(spec: str) -> None:
    with pytest.raises(IntensityError) as err:
        parse_intensity(spec, "--intensity")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--intensity must be auto, full, bits:N (N 9..16) or percentile:P1,P2")
    assert message.endswith(f"got {spec!r}")


def test_predict_refuses_a_bad_intensity_before_anything_runs() -> None:
    with pytest.raises(ValueError, match=r"^--intensity must be .* got 'bits:20'$"):
        PredictConfig(model="m.onnx", inputs=("in",), out="out", intensity="bits:20")
    assert PredictConfig(model="m.onnx", inputs=("in",), out="out").intensity is None


# -- each mapping's numbers ----------------------------------------------------------------------------------

EVERY_VALUE = np.arange(1 << 16, dtype=np.uint16)


def test_full_is_what_fcnx_did_before_and_bits_16_is_the_same() -> None:
    before = ((EVERY_VALUE.astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(map_to_uint8(EVERY_VALUE, "full"), before)
    np.testing.assert_array_equal(map_to_uint8(EVERY_VALUE, "bits:16"), before)
    np.testing.assert_array_equal(to_uint8(EVERY_VALUE), before)  # the default stays "full"


@pytest.mark.parametrize("bits", [9, 10, 12, 14, 16])
def test_bits_maps_0_to_2_to_the_n_minus_1_onto_0_to_255_rounded_and_clips_above(bits: int) -> None:
    top = (1 << bits) - 1
    expected = np.rint(np.minimum(EVERY_VALUE, top) * 255.0 / top).astype(np.uint8)
    mapped = map_to_uint8(EVERY_VALUE, f"bits:{bits}")
    np.testing.assert_array_equal(mapped, expected)
    assert mapped[0] == 0 and mapped[top] == 255 and mapped[-1] == 255


def test_bits_12_numbers() -> None:
    values = np.array([0, 9, 2047, 2048, 4095, 4096, 65535], np.uint16)
    assert map_to_uint8(values, "bits:12").tolist() == [0, 1, 127, 128, 255, 255, 255]
    assert map_to_uint8(values, "full").tolist() == [0, 0, 8, 8, 16, 16, 255]  # the nearly black image


def test_percentile_stretches_each_images_percentiles_to_0_255_and_clips() -> None:
    image = np.random.default_rng(1).integers(300, 1300, (64, 80), np.uint16)
    low, high = np.percentile(image, (1, 99))
    assert percentiles(image, 1, 99) == pytest.approx((low, high))
    expected = np.clip(np.rint((image - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(map_to_uint8(image, "percentile:1,99"), expected)
    mapped = map_to_uint8(image, "percentile:0,100")
    assert mapped.min() == 0 and mapped.max() == 255
    flat = np.full((8, 8), 1000, np.uint16)  # one value: nothing to stretch, no division by zero
    assert map_to_uint8(flat, "percentile:1,99").tolist() == np.zeros((8, 8), np.uint8).tolist()


@pytest.mark.parametrize("q", [(0, 100), (1, 99), (2.5, 97.5), (50, 50.5)])
def test_percentiles_from_the_histogram_are_numpys(q: tuple[float, float]) -> None:
    image = np.random.default_rng(2).integers(0, 65536, (37, 41), np.uint16)
    assert percentiles(image, *q) == pytest.approx(tuple(np.percentile(image, q)))


def test_a_large_image_is_mapped_in_blocks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import fcnx.runtime.intensity as intensity

    monkeypatch.setattr(intensity, "_CHUNK", 1000)  # many blocks, a ragged last one
    image = np.random.default_rng(3).integers(0, 4096, (301, 97, 3), np.uint16)
    np.testing.assert_array_equal(map_to_uint8(image, "bits:12"), bits_table(12)[image])
    assert percentiles(image, 1, 99) == pytest.approx(tuple(np.percentile(image, (1, 99))))


@pytest.mark.parametrize("spec", ["auto", "full", "bits:12", "percentile:1,99"])
def test_8_bit_images_pass_through_every_mapping_unchanged(spec: str, tmp_path: Path) -> None:
    image = np.random.default_rng(4).integers(0, 40, (16, 16), np.uint8)  # dark, and left dark
    assert to_uint8(image, intensity=spec) is image
    (tmp_path / "a.png").write_bytes(png(image))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", 1, intensity=spec)[..., 0], image)


def test_auto_uses_the_recorded_depth_else_the_full_range_with_a_note() -> None:
    notes = NoteCounter()
    np.testing.assert_array_equal(
        map_to_uint8(TWELVE_BIT, "auto", 12, "a", notes), bits_table(12)[TWELVE_BIT]
    )
    assert notes.count == 0  # the file said: nothing to warn about
    np.testing.assert_array_equal(
        map_to_uint8(TWELVE_BIT, "auto", None, "b", notes), bits_table(16)[TWELVE_BIT]
    )
    bright = TWELVE_BIT.copy()
    bright[0, 0] = LOW_RANGE  # uses 1/16 of the range: not reported
    map_to_uint8(bright, "auto", None, "c", notes)
    map_to_uint8(TWELVE_BIT, "full", None, "d", notes)  # asked for: not reported
    map_to_uint8(TWELVE_BIT, "auto", None, "e", notes)
    assert notes.count == 2
    assert notes.first is not None and notes.first[0] == "b"
    assert "values up to 4095" in notes.first[1] and "--intensity bits:12" in notes.first[1]
    line = notes.line()
    assert line.startswith("warning: b: 16-bit image with values up to 4095") and "\n" not in line
    assert line.endswith("(and 1 more image like it)")
    assert notes.to_dict() == {"count": 2, "first": {"path": "b", "message": notes.first[1]}}


# -- the bit depth from the header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "sbit", "bits"),
    [
        (TWELVE_BIT, b"\x0c", 12),
        (TWELVE_BIT, b"\x0a", 10),
        (TWELVE_BIT, b"\x10", 16),
        (TWELVE_BIT, None, None),
        (np.dstack([TWELVE_BIT] * 3), b"\x0c\x0e\x0c", 14),  # colour: the deepest sample
        (np.dstack([TWELVE_BIT] * 4), b"\x0c\x0c\x0c\x10", 12),  # an alpha's depth is not the image's
    ],
)
def test_png_sbit_is_read_from_the_header(
    array: np.ndarray, sbit: bytes | None, bits: int | None, tmp_path: Path
) -> None:
    data = png16(array, sbit)
    assert png_significant_bits(data[:64]) == bits
    path = tmp_path / "a.png"
    path.write_bytes(data)
    header = read_header(path)
    assert header is not None and header.significant_bits == bits
    assert (header.width, header.height) == (64, 48)


def test_an_sbit_after_the_image_data_or_in_no_png_says_nothing() -> None:
    data = png16(TWELVE_BIT)
    idat = data.index(b"IDAT") - 4
    chunk = struct.pack(">I", 1) + b"sBIT\x0c" + struct.pack(">I", zlib.crc32(b"sBIT\x0c"))
    assert png_significant_bits(data[:idat] + data[idat:-12] + chunk + data[-12:]) is None
    assert png_significant_bits(b"II*\x00" + bytes(60)) is None
    assert png_significant_bits(png16(TWELVE_BIT, b"\x0c")[:40]) is None  # cut inside the chunk


@pytest.mark.parametrize(
    ("tags", "bits"),
    [
        ({"max_sample_value": 4095}, 12),
        ({"smax_sample_value": 4095}, 12),
        ({"smax_sample_value": 1023, "max_sample_value": 65535}, 10),  # the sample values, first
        ({"max_sample_value": 16383}, 14),
        ({}, None),  # BitsPerSample 16 alone is the container's depth: it says nothing
    ],
)
def test_tiff_sample_value_tags_are_read_from_the_header(
    tags: dict[str, int], bits: int | None, tmp_path: Path
) -> None:
    header = read_header(tiff16(tmp_path / "a.tif", TWELVE_BIT, **tags))
    assert header is not None and header.significant_bits == bits
    assert (header.width, header.height, header.bytes_per_pixel) == (64, 48, 2)


def test_the_depth_comes_from_the_header_not_a_second_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcnx.runtime.images as images

    calls = []
    decode = images.cv2.imdecode
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: calls.append(1) or decode(*a))
    monkeypatch.setattr(Image.Image, "load", lambda *_: pytest.fail("Pillow decoded pixels"))
    path = tmp_path / "a.png"
    path.write_bytes(png16(TWELVE_BIT, b"\x0c"))
    image = read_image(path, 1, intensity="auto")
    assert calls == [1]
    np.testing.assert_array_equal(image[..., 0], bits_table(12)[TWELVE_BIT])


# -- the card ----------------------------------------------------------------------------------------------


def _card(**changes: Any) -> ModelCard:
    return ModelCard("threshold", ("bg", "fg"), default_palette(2), 1, **changes)


def test_the_card_round_trips_its_intensity_and_an_old_card_reads_as_full() -> None:
    card = _card(intensity="bits:12")
    assert ModelCard.from_json(card.to_json()).intensity == "bits:12"
    old = card.to_dict()
    del old["intensity"]
    assert ModelCard.from_dict(old).intensity == "full"
    assert _card().intensity == "full"


def test_a_model_whose_card_predates_the_field_loads_as_full(threshold_onnx: Path, tmp_path: Path) -> None:
    import onnx

    from fcnx.runtime import load

    model = onnx.load(str(threshold_onnx))
    prop = next(p for p in model.metadata_props if p.key == "fcnx.card")
    stored = json.loads(prop.value)
    assert stored["intensity"] == "full"  # the shipped model says it explicitly
    del stored["intensity"]
    prop.value = json.dumps(stored)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with load(tmp_path / "old.onnx", "ort-cpu") as backend:
        assert backend.card.intensity == "full"


@pytest.mark.parametrize("value", ["bits:20", "gamma", 12, None])
def test_a_bad_card_intensity_is_one_line_naming_the_field(value: Any) -> None:
    data = _card().to_dict() | {"intensity": value}
    with pytest.raises(CardError) as err:
        ModelCard.from_dict(data, "model.onnx")
    message = str(err.value)
    assert message.startswith("model.onnx: card field intensity must be") and "\n" not in message


def test_the_segmenter_maps_16_bit_arrays_as_its_card_says() -> None:
    backend = FakeBackend()
    plain = Segmenter(backend).predict([TWELVE_BIT])[0]
    assert not plain.any()  # "full" (an old card): the 12-bit image is nearly black, one class
    backend.card = backend.card.replace(intensity="bits:12")
    mapped = Segmenter(backend).predict([TWELVE_BIT])[0]
    np.testing.assert_array_equal(mapped, threshold_mask(bits_table(12)[TWELVE_BIT]))


# -- the requirement: a real model, 12-bit data in 16-bit files == the same data mapped to 8 bits ----------


def _predict(model: Path, inputs: Path, out: Path, **options: Any) -> dict[str, Any]:
    config = PredictConfig(model=str(model), inputs=(str(inputs),), out=str(out), progress=False, **options)
    return predict_folder(config)


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) for p in sorted(out.glob("*.png"))}


def test_a_12_bit_image_in_16_bit_files_gets_the_masks_of_its_8_bit_conversion(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    deep, eight = tmp_path / "deep", tmp_path / "eight"
    deep.mkdir()
    eight.mkdir()
    (deep / "sbit.png").write_bytes(png16(TWELVE_BIT, b"\x0c"))
    tiff16(deep / "max.tif", TWELVE_BIT, max_sample_value=4095)
    tiff16(deep / "smax.tif", TWELVE_BIT, smax_sample_value=4095)
    converted = map_to_uint8(TWELVE_BIT, "bits:12")  # the same mapping, applied ahead
    for name in ("sbit", "max", "smax"):
        (eight / f"{name}.png").write_bytes(png(converted))

    auto = _predict(threshold_onnx, deep, tmp_path / "auto", intensity="auto")
    _predict(threshold_onnx, eight, tmp_path / "auto8", intensity="auto")
    reference = _masks(tmp_path / "auto8")
    masks = _masks(tmp_path / "auto")
    assert sorted(masks) == sorted(reference) == ["max", "sbit", "smax"]
    expected = threshold_mask(np.rint(TWELVE_BIT * 255.0 / 4095).astype(np.uint8))
    assert 0.4 < expected.mean() < 0.6  # both classes: a real segmentation, not one class
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, reference[name], err_msg=name)
        np.testing.assert_array_equal(mask, expected, err_msg=name)
    assert auto["counts"]["written"] == 3
    assert auto["intensity"] == {
        "mapping": "auto",
        "from": "--intensity",
        "warnings": {"count": 0, "first": None},
    }

    # the model's old card says "full": today's behaviour, every mask one class
    full = _predict(threshold_onnx, deep, tmp_path / "full")
    assert full["intensity"]["mapping"] == "full" and full["intensity"]["from"] == "model card"
    assert all(not m.any() for m in _masks(tmp_path / "full").values())


def test_images_that_say_nothing_are_warned_about_once_with_a_count(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        (inputs / f"{i}.png").write_bytes(png16(TWELVE_BIT >> i))  # no sBIT: the file says nothing
    (inputs / "bright.png").write_bytes(png16(TWELVE_BIT << 4))  # the whole range: nothing to say
    (inputs / "eight.png").write_bytes(png(np.zeros((8, 8), np.uint8)))  # 8-bit: nothing to say
    summary = _predict(threshold_onnx, inputs, tmp_path / "out", intensity="auto", workers=3)
    warnings = summary["intensity"]["warnings"]
    assert warnings["count"] == 5
    assert Path(warnings["first"]["path"]).name in {f"{i}.png" for i in range(5)}
    assert "--intensity bits:" in warnings["first"]["message"]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["intensity"]["warnings"] == warnings
    lines = [line for line in format_summary(summary).splitlines() if "16-bit image" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "(and 4 more images like it)" in lines[0]
