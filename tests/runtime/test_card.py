from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcnx.runtime.card import CardError, ModelCard, default_palette


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


def test_round_trips_through_json(tmp_path: Path) -> None:
    card = _card()
    assert ModelCard.from_json(card.to_json()) == card
    card.write(tmp_path / "card.json")
    assert ModelCard.read(tmp_path / "card.json") == card
    assert json.loads((tmp_path / "card.json").read_text())["classes"] == ["membrane", "cell"]


def test_unknown_keys_are_errors() -> None:
    data = _card().to_dict()
    data["colour_space"] = "rgb"
    with pytest.raises(CardError, match=r"my.json: unknown card keys \['colour_space'\]"):
        ModelCard.from_dict(data, origin="my.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(classes=("one",), palette=((0, 0, 0),)), "at least 2 classes"),
        (dict(palette=((0, 0, 0),)), "palette has 1 colours for 2 classes"),
        (dict(input_channels=2), "input_channels must be 1 or 3"),
        (dict(output_kind="logits"), "output_kind"),
        (
            dict(output_kind="sigmoid", classes=("a", "b", "c"), palette=default_palette(3)),
            "sigmoid output is binary",
        ),
    ],
)
def test_impossible_cards_are_refused(change: dict, message: str) -> None:
    with pytest.raises(CardError, match=message):
        _card(**change)


def test_malformed_json_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match=r"card.json: not valid JSON"):
        ModelCard.read(path)
    data = _card().to_dict()
    del data["classes"]
    with pytest.raises(CardError, match=r"missing card key 'classes'"):
        ModelCard.from_dict(data)
    data = _card().to_dict()
    data["palette"] = [[0, 0, 0], [300, 0, 0]]
    with pytest.raises(CardError, match=r"0\.\.255"):
        ModelCard.from_dict(data)
    with pytest.raises(CardError, match="cannot read card"):
        ModelCard.read(tmp_path / "absent.json")


def test_newer_card_version_says_upgrade() -> None:
    data = _card().to_dict()
    data["card_version"] = 99
    with pytest.raises(CardError, match="upgrade fcnx"):
        ModelCard.from_dict(data)


def test_default_palettes() -> None:
    assert default_palette(2) == ((0, 0, 0), (255, 255, 255))
    voc = default_palette(4)
    assert voc[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
