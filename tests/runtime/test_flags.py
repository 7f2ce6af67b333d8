"""flags.py: one --flag per config field, with help argparse can print."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args, opt


@dataclass(frozen=True)
class Example:
    source: str = opt("", "set by the command", cli=False)
    batch_size: int = opt(4, "crops per batch")
    limit: float | None = opt(None, "at most this, if given")
    shuffle: bool = opt(True, "shuffle every epoch")
    weights: tuple[float, ...] = opt((), "one per class")
    mode: str = opt("fast", "how", choices=("fast", "exact"))
    pattern: str = opt("50%_*.png", "files to take; 100%% of them by default")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_dataclass_flags(parser, Example)
    return parser


def test_each_field_is_one_flag_and_help_prints_with_percent_signs() -> None:
    text = " ".join(_parser().format_help().split())  # argparse %-formats help: a bare % would crash it
    assert "--batch-size N" in text and "crops per batch (default: 4)" in text
    assert "--shuffle, --no-shuffle" in text and "--source" not in text
    assert "100% of them by default (default: 50%_*.png)" in text
    assert "{fast,exact}" in text and "(default: ())" not in text


def test_parsed_flags_build_the_dataclass() -> None:
    args = _parser().parse_args(
        ["--batch-size", "8", "--no-shuffle", "--weights", "1", "2.5", "--limit", "0.5"]
    )
    config = dataclass_from_args(Example, args, source="data/")
    assert config == Example(source="data/", batch_size=8, limit=0.5, shuffle=False, weights=(1.0, 2.5))
    assert dataclass_from_args(Example, _parser().parse_args([])) == Example()


def test_wrong_values_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--batch-size", "four"], ["--mode", "slow"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
    err = capsys.readouterr().err
    assert "invalid int value: 'four'" in err and "invalid choice: 'slow'" in err
