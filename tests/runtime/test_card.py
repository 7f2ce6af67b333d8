from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnx.runtime.card import CardError, ModelCard, default_palette, input_contradictions
from fcnx.runtime.card_json import MAX_DEPTH, json_depth


def _card(**changes: object) -> ModelCard:
    base = dict(
        architecture="fcn8s",
        classes=("membrane", "cell"),
        palette=((0, 0, 0), (255, 255, 255)),
        input_channels=1,
        input_height=512,
        input_width=512,
        training={"val_metrics": {"miou": 0.8}},
    )
    base.update(changes)
    return ModelCard(**base)  # type: ignore[arg-type]


def _refused(data: dict[str, Any] | str, origin: str = "model.onnx metadata") -> str:
    """The CardError message ``data`` (a card dict or JSON text) is refused with; it is one line
    that names ``origin`` once, at its start."""
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(CardError) as caught:
        ModelCard.from_json(text, origin=origin)
    message = str(caught.value)
    assert message.startswith(f"{origin}: ") and message.count(origin) == 1, message
    assert "\n" not in message and len(message) < 400, message
    return message


def test_round_trips_through_json(tmp_path: Path) -> None:
    card = _card()
    assert ModelCard.from_json(card.to_json()) == card
    card.write(tmp_path / "card.json")
    assert ModelCard.read(tmp_path / "card.json") == card
    assert json.loads((tmp_path / "card.json").read_text())["classes"] == ["membrane", "cell"]


def test_unknown_keys_are_errors() -> None:
    data = _card().to_dict()
    data["colour_space"] = "rgb"
    with pytest.raises(CardError, match=r"^my.json: unknown card keys \['colour_space'\]$"):
        ModelCard.from_dict(data, origin="my.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(classes=("one",), palette=((0, 0, 0),)), "classes must be a list of 2 to 256 distinct"),
        (
            dict(palette=((0, 0, 0),)),
            r"palette must be one \[r, g, b\] colour per class \(2\), got 1 colours",
        ),
        (dict(input_channels=2), "input_channels must be 1 or 3, got 2"),
        (dict(output_kind="logits"), "output_kind must be one of softmax, sigmoid, got 'logits'"),
        (
            dict(output_kind="sigmoid", classes=("a", "b", "c"), palette=default_palette(3)),
            "output_kind is sigmoid, a binary output, but the card has 3 classes",
        ),
        (dict(input_multiple=0), "input_multiple must be an integer in 1..1024, got 0"),
        (dict(input_height=-512), "input_height must be null"),
        (dict(input_height="512"), "input_height must be null"),
    ],
)
def test_impossible_cards_are_refused(change: dict, message: str) -> None:
    with pytest.raises(CardError, match=f"^card field {message}"):
        _card(**change)


# field, a hostile value, what the one-line error says about it (after "card field ")
HOSTILE = [
    ("input_multiple", 0, "input_multiple must be an integer in 1..1024, got 0"),
    ("input_multiple", -32, "input_multiple must be an integer in 1..1024, got -32"),
    ("input_multiple", 32.0, "input_multiple must be an integer in 1..1024, got 32.0"),
    ("input_multiple", True, "input_multiple must be an integer in 1..1024, got True"),
    ("input_height", -512, "input_height must be null (any) or an integer in 1..1048576, got -512"),
    ("input_width", 0, "input_width must be null (any) or an integer in 1..1048576, got 0"),
    ("input_width", 2**21, "input_width must be null (any) or an integer in 1..1048576, got 2097152"),
    ("input_height", "512", "input_height must be null (any) or an integer in 1..1048576, got '512'"),
    ("input_channels", 4, "input_channels must be 1 or 3, got 4"),
    ("input_channels", None, "input_channels must be 1 or 3, got None"),
    ("input_dtype", "float32", "input_dtype must be one of uint8, got 'float32'"),
    ("norm_std", 0, "norm_std must be a finite number other than 0, got 0"),
    ("norm_std", 1e999, "norm_std must be a finite number other than 0, got inf"),
    ("norm_std", "255", "norm_std must be a finite number other than 0, got '255'"),
    ("norm_mean", float("nan"), "norm_mean must be a finite number, got nan"),
    ("output_kind", "logits", "output_kind must be one of softmax, sigmoid, got 'logits'"),
    ("precision", "fp64", "precision must be one of fp32, fp16, bf16, int8, got 'fp64'"),
    (
        "classes",
        ["a", "a"],
        "classes must be a list of 2 to 256 distinct, non-empty, printable names, got ['a', 'a']",
    ),
    ("classes", ["a", ""], "classes must be a list of 2 to 256 distinct"),
    ("classes", ["a", "b\nc"], "classes must be a list of 2 to 256 distinct"),
    ("classes", ["a", 5], "classes must be a list of 2 to 256 distinct"),
    ("classes", "ab", "classes must be a list of 2 to 256 distinct"),
    ("classes", [f"c{i}" for i in range(257)], "classes must be a list of 2 to 256 distinct"),
    (
        "palette",
        [[0, 0, 0], [1, 2]],
        "palette must hold [r, g, b] colours of 3 integers in 0..255, got [1, 2]",
    ),
    ("palette", [[0, 0, 0], [256, 0, 0]], "palette must hold [r, g, b] colours of 3 integers in 0..255"),
    ("palette", [[0, 0, 0], [0, 0, -1]], "palette must hold [r, g, b] colours of 3 integers in 0..255"),
    ("palette", [[0, 0, 0], "white"], "palette must hold [r, g, b] colours of 3 integers in 0..255"),
    ("palette", {"0": [0, 0, 0]}, "palette must be one [r, g, b] colour per class (2), got {'0': [0, 0, 0]}"),
    ("card_version", "1", "card_version must be an integer >= 1, got '1'"),
    ("card_version", 0, "card_version must be an integer >= 1, got 0"),
    ("architecture", 8, "architecture must be a string, got 8"),
    ("training", [], "training must be a JSON object, got []"),
    ("versions", {"onnx": 1}, "versions must be a JSON object of strings, got {'onnx': 1}"),
    ("training", {"val_metrics": [0.8]}, "training.val_metrics must be a JSON object, got [0.8]"),
    ("training", {"val_metrics": {"miou": "high"}}, "training.val_metrics.miou must be a number, got 'high'"),
]


@pytest.mark.parametrize(("field", "value", "says"), HOSTILE, ids=[f"{f}={v!r}"[:40] for f, v, _ in HOSTILE])
def test_each_hostile_field_is_one_line_naming_the_file_and_the_field(
    field: str, value: Any, says: str
) -> None:
    data = _card().to_dict()
    data[field] = value
    message = _refused(data)
    assert message.startswith(f"model.onnx metadata: card field {says}"), message


def test_the_origin_is_named_once() -> None:
    """It used to repeat itself: ``x.onnx metadata: x.onnx metadata: ...``."""
    data = _card().to_dict()
    for field, value in (("input_height", "512"), ("classes", ["a", 1]), ("palette", "x"), ("training", 1)):
        _refused({**data, field: value}, origin="x.onnx metadata")


def test_what_exports_write_is_valid() -> None:
    from fcnx.export.tiny_model import CARD

    metrics = {"miou": float("nan"), "per_class_iou": {"cell": None}, "confusion_matrix": [[1, 2], [3, 4]]}
    export = {"format": "onnx", "opset": 17, "batch": "dynamic", "outputs": ["probs", "mask"],
              "gflops_per_image": 1.5, "gflops_size": [512, 512], "calibration": {"images": 8}}  # fmt: skip
    trained = _card(
        input_multiple=32, norm_mean=0.0, norm_std=255.0, precision="int8", width="slim",
        training={"val_metrics": metrics}, export=export,
        versions={"python": "3.11.7", "onnx": "1.17.0"}, source={"data_sha256": "0" * 64},
    )  # fmt: skip
    for card in (CARD, trained, _card(precision="bf16", input_height=None, input_width=None)):
        assert ModelCard.from_json(card.to_json()).to_json() == card.to_json()


def test_malformed_json_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match=r"card.json: not valid JSON"):
        ModelCard.read(path)
    data = _card().to_dict()
    del data["classes"]
    with pytest.raises(CardError, match=r"^card: missing card key 'classes'$"):
        ModelCard.from_dict(data)
    data = _card().to_dict()
    data["palette"] = [[0, 0, 0], [300, 0, 0]]
    with pytest.raises(CardError, match=r"0\.\.255"):
        ModelCard.from_dict(data)
    with pytest.raises(CardError, match="cannot read card"):
        ModelCard.read(tmp_path / "absent.json")
    assert "a card is a JSON object, got array" in _refused("[1, 2]")
    assert "not valid JSON: Exceeds the limit" in _refused('{"input_height": 1' + "0" * 5000 + "}")
    with pytest.raises(CardError, match=r"^d: a card is a JSON object, got array$"):
        ModelCard.from_dict([1], origin="d")  # type: ignore[arg-type]


def test_newer_card_version_says_upgrade() -> None:
    data = _card().to_dict()
    data["card_version"] = 99
    with pytest.raises(CardError, match="upgrade fcnx"):
        ModelCard.from_dict(data)


def _nested(levels: int) -> str:
    """A card whose training holds arrays nested so the whole card is ``levels`` deep."""
    data = _card().to_dict()
    data["training"] = {"a": "HOLE"}  # card 1, training 2, the outer array 3
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    return json.dumps(data).replace('"HOLE"', inner)


def test_deep_nesting_is_refused_before_json_recurses() -> None:
    assert json_depth(_nested(50_000)) == (MAX_DEPTH + 1, "training")  # counting stops past the limit
    message = _refused(_nested(50_000))
    assert message == f"model.onnx metadata: card field training nests more than {MAX_DEPTH} levels deep"
    root = _refused("[" * 50_000 + "]" * 50_000)  # not in any field
    assert root == f"model.onnx metadata: the card's JSON nests more than {MAX_DEPTH} levels deep"
    _refused(_nested(MAX_DEPTH + 1))
    assert ModelCard.from_json(_nested(MAX_DEPTH)).training["a"] is not None  # the limit itself is fine
    # brackets inside strings are not nesting (an escaped quote does not end the string)
    text = _card(architecture='fcn\\"' + "[" * 500).to_json()
    assert json_depth(text)[0] == 3 and ModelCard.from_json(text).architecture.endswith("[" * 500)


def test_deep_nesting_of_parsed_data_is_refused_without_recursion() -> None:
    deep: list[Any] = []
    for _ in range(50_000):
        deep = [deep]
    data = {**_card().to_dict(), "training": {"a": deep}}
    with pytest.raises(CardError, match=rf"^d: card field training nests more than {MAX_DEPTH} levels deep$"):
        ModelCard.from_dict(data, origin="d")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(CardError, match="card field export nests more than"):
        ModelCard.from_dict({**_card().to_dict(), "export": cycle}, origin="d")
    with pytest.raises(CardError, match=r"^d: card field source has an object key that is not a string$"):
        ModelCard.from_dict({**_card().to_dict(), "source": {1: "x"}}, origin="d")
    with pytest.raises(CardError, match=r"^d: card field training holds a set, which JSON cannot$"):
        ModelCard.from_dict({**_card().to_dict(), "training": {"s": {1}}}, origin="d")


def test_input_contradictions_name_both_values() -> None:
    card = _card(input_channels=3, input_height=512, input_width=256)
    assert input_contradictions(card, (None, 512, 256, 3)) == []
    assert input_contradictions(card, (1, None, None, None)) == []  # dynamic dims say nothing
    assert input_contradictions(card, (None, 384, 256, 1)) == [
        "the card says 3 input channels, the graph has 1",
        "the card says input height 512, the graph has 384",
    ]
    assert input_contradictions(_card(input_height=None, input_width=None), (None, 64, 64, 1)) == []


def test_default_palettes() -> None:
    assert default_palette(2) == ((0, 0, 0), (255, 255, 255))
    voc = default_palette(4)
    assert voc[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))


# -- Hypothesis: one field of a valid card at a time, and random nesting --------------------------------

VALID = _card(input_multiple=32, export={"outputs": ["probs", "mask"]}).to_dict()
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, 3, 32, 255, 256, 1024, 1025, 2**20, 2**20 + 1, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(["uint8", "fp16", "bf16", "softmax", "sigmoid", "fp32", "int8"])
)
RGB = st.lists(st.integers(-2, 258), min_size=2, max_size=4)
VALUES = st.recursive(
    SCALARS | RGB,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


def _wrapped(value: Any, levels: int, kind: str) -> str:
    """``value`` as JSON inside ``levels`` arrays or objects, built as text (no recursion)."""
    opening, closing = ("[", "]") if kind == "list" else ('{"k": ', "}")
    return opening * levels + json.dumps(value) + closing * levels


def _is_one_card_error(text: str) -> None:
    try:
        card = ModelCard.from_json(text, origin="fuzz.onnx metadata")
    except CardError as exc:
        message = str(exc)
        assert message.startswith("fuzz.onnx metadata: ") and message.count("fuzz.onnx metadata") == 1
        assert "\n" not in message
        return
    again = ModelCard.from_json(card.to_json())  # whatever is accepted is a card that round-trips...
    assert again.to_json() == card.to_json()
    assert card.input_multiple >= 1 and card.num_classes == len(card.palette) >= 2  # ...and is sane
    assert card.input_height is None or card.input_height >= 1
    assert math.isfinite(card.norm_std) and card.norm_std != 0


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(sorted(VALID)),
    value=VALUES,
    levels=st.integers(0, 3 * MAX_DEPTH) | st.just(0),
    kind=st.sampled_from(["list", "dict"]),
    drop=st.booleans(),
)
def test_a_card_with_one_field_mutated_is_a_card_or_one_card_error(
    key: str, value: Any, levels: int, kind: str, drop: bool
) -> None:
    data = dict(VALID)
    if drop:
        data.pop(key)
        _is_one_card_error(json.dumps(data))
        return
    data[key] = "HOLE"
    _is_one_card_error(json.dumps(data).replace('"HOLE"', _wrapped(value, levels, kind)))
