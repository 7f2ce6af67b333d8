"""Property-based fuzzing (Hypothesis) of what comes from outside: image files and model
cards. A bad input is always a clean, recorded failure (ImageError / CardError), never a
crash of another kind, never a hang (a deadline of 10 s per file: OpenCV takes ~1.3 s on a
small PNG whose chunk length was mutated to ~3 GB, which the fuzzer found); a good one is
always a correct array."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnx.runtime.card import CardError, ModelCard, default_palette
from fcnx.runtime.images import ImageError, read_image
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.job import predict_folder

from ..fakes import THRESHOLD_ONNX

FUZZ = settings(
    max_examples=150, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _encoded() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    grey, colour = rng.integers(0, 256, (24, 31), np.uint8), rng.integers(0, 256, (20, 17, 3), np.uint8)
    files = {fmt: cv2.imencode(fmt, grey)[1].tobytes() for fmt in (".png", ".jpg", ".bmp")}
    files[".rgb.png"] = cv2.imencode(".png", colour)[1].tobytes()
    tiff = io.BytesIO()
    Image.fromarray(grey).save(tiff, "TIFF")
    files[".tif"] = tiff.getvalue()
    return files


REAL = _encoded()


def _check(path: Path) -> None:
    try:
        image = read_image(path, 1)
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ") and exc.reason
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 1 and image.size > 0


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.png"
    path.write_bytes(data)
    _check(path)


@FUZZ
@given(kind=st.sampled_from(sorted(REAL)), cut=st.floats(0.0, 1.0))
def test_truncated_real_files(tmp_path: Path, kind: str, cut: float) -> None:
    data = REAL[kind]
    path = tmp_path / f"cut{kind}"
    path.write_bytes(data[: int(len(data) * cut)])
    _check(path)


@FUZZ
@given(
    kind=st.sampled_from(sorted(REAL)),
    edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_headers(tmp_path: Path, kind: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(REAL[kind])
    for offset, value in edits:
        data[offset % len(data)] = value
    path = tmp_path / f"mutated{kind}"
    path.write_bytes(bytes(data))
    _check(path)


def test_a_folder_of_broken_files_is_recorded_and_the_good_ones_get_correct_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    folder.mkdir()
    good = {}
    for i, (kind, data) in enumerate(sorted(REAL.items())):
        (folder / f"good{i}{kind[-4:]}").write_bytes(data)
        good[f"good{i}"] = data
        cut = bytearray(data[: rng.integers(1, len(data))])
        (folder / f"bad{i}{kind[-4:]}").write_bytes(bytes(cut))
    summary = predict_folder(
        PredictConfig(
            model=str(THRESHOLD_ONNX), inputs=(str(folder),), out=str(tmp_path / "out"), progress=False
        )
    )
    counts = summary["counts"]
    assert counts["written"] + counts["failed"] == counts["total"] == 2 * len(REAL)
    for name in good:
        (source,) = folder.glob(f"{name}.*")
        mask = np.array(Image.open(tmp_path / "out" / f"{name}.png"))
        np.testing.assert_array_equal(mask, (read_image(source, 1)[..., 0] > 127).astype(np.uint8))


VALID = ModelCard(
    architecture="fcn8s", classes=("background", "membrane"), palette=default_palette(2), input_channels=1
).to_dict()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(value=JSON)
def test_any_json_is_a_card_or_a_card_error(value: object) -> None:
    with contextlib.suppress(CardError):
        ModelCard.from_json(json.dumps(value))


@FUZZ
@given(key=st.sampled_from(sorted(VALID)), value=JSON, drop=st.booleans())
def test_a_card_with_one_field_changed_or_missing_is_a_card_or_a_card_error(
    key: str, value: object, drop: bool
) -> None:
    data = dict(VALID)
    if drop:
        data.pop(key)
    else:
        data[key] = value
    try:
        card = ModelCard.from_json(json.dumps(data))
    except CardError as exc:
        assert str(exc).startswith("card: ")
        return
    assert ModelCard.from_json(card.to_json()) == card  # whatever is accepted round-trips


@pytest.mark.slow
@settings(max_examples=3000, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(REAL)),
    cut=st.floats(0.0, 1.0),
    edits=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=16),
)
def test_long_sweep_of_truncated_and_mutated_files(
    tmp_path: Path, kind: str, cut: float, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(REAL[kind][: max(1, int(len(REAL[kind]) * cut))])
    for offset, value in edits:
        data[offset % len(data)] = value
    path = tmp_path / f"sweep{kind}"
    path.write_bytes(bytes(data))
    _check(path)
