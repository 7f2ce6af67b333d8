"""Command-line flags generated from frozen config dataclasses, 1:1 with their fields.

``batch_size: int = opt(4, "crops per batch")`` becomes ``--batch-size N`` with that
help; bools become ``--flag/--no-flag`` (argparse.BooleanOptionalAction); optional
values default to None; ``tuple[float, ...]`` takes several values. Fields with
``metadata={"cli": False}`` are filled by the command itself (positionals, data).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field that is also a flag: ``opt(4, "crops per batch")``. Extra metadata:
    ``choices``, ``metavar``, ``cli=False`` (set by the command, not a flag)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def cli_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [
        (f, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.metadata.get("cli", True) and "help" in f.metadata
    ]


def add_dataclass_flags(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One ``--flag`` per field of ``cls`` (its default shown in the help)."""
    for f, tp in cli_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default}
        help_text = f.metadata["help"]
        base = _unwrap_optional(tp)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs["type"] = typing.get_args(base)[0]
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "V"
        else:
            kwargs["type"] = base
            kwargs["metavar"] = f.metadata.get("metavar", "NAME" if base is str else "N")
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
            kwargs.pop("metavar", None)
        if f.default not in (None, (), "") and base is not bool:  # an empty default says nothing
            help_text += f" (default: {str(f.default).replace('%', '%%')})"  # argparse %-formats help
        parser.add_argument(flag, help=help_text, **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """Build ``cls`` from the parsed flags of its fields plus ``extra`` values."""
    values = {f.name: getattr(args, f.name) for f, _ in cli_fields(cls)}
    for f, tp in cli_fields(cls):
        if typing.get_origin(_unwrap_optional(tp)) is tuple and values[f.name] is not None:
            values[f.name] = tuple(values[f.name])
    values.update(extra)
    return cls(**values)


def add_tiling_flags(parser: argparse.ArgumentParser) -> None:
    """``--tile`` and ``--overlap`` as ``fcnx predict`` has them, for the commands that
    segment through the same Segmenter (evaluate, parity)."""
    parser.add_argument(
        "--tile",
        default="auto",
        metavar="HxW|off",
        help="tiles for images larger than the model's input size, HxW or off (default: auto, the "
        "model's input size, 512x512 for a dynamic model; as fcnx predict)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        metavar="PX",
        help="pixels neighbouring tiles overlap (default: 3/16 of the tile side)",
    )
