"""The model card: what an artifact is, so no command needs flags the model already knows.

A frozen dataclass that round-trips through JSON. It lives in a run folder as
``card.json``, in ONNX ``metadata_props["fcnx.card"]`` and next to engines as a sidecar.
Unknown keys are an error, never silently dropped.

A card is read from files anyone can edit, so it is never believed: every field is
checked for its type and its range when a card is made (``__post_init__``, so also by
``from_dict`` / ``from_json``), JSON nesting is bounded before ``json.loads`` could
recurse, and every violation is one ``CardError`` line naming the file and the field.
Where the graph fixes its input shape, ``input_contradictions`` says what the card gets
wrong about it (each backend calls it when it loads an artifact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .card_json import (
    CardError,
    check_json_value,
    is_int,
    is_number,
    json_object,
    json_type,
    one_line,
    shown,
)
from .intensity import IntensityError, parse_intensity

CARD_VERSION = 1
OUTPUT_KINDS = ("softmax", "sigmoid")
INPUT_CHANNELS = (1, 3)
INPUT_DTYPES = ("uint8",)  # the deployable graph takes uint8 images (normalization is inside it)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # ONNX fp32/fp16/int8, OpenVINO and keras-bf16 bf16
MAX_CLASSES = 256  # masks are uint8 class ids
MAX_INPUT_SIDE = 2**20  # a deployed input size in pixels; beyond it a card is lying
MAX_INPUT_MULTIPLE = 1024  # an FCN's stride (fcnx's encoders: 32)


@dataclass(frozen=True)
class ModelCard:
    architecture: str  # "fcn8s", "fcn2s", ...
    classes: tuple[str, ...]  # class names, index = class id in masks
    palette: tuple[tuple[int, int, int], ...]  # RGB colour per class, for masks and overlays
    input_channels: int  # 1 (grayscale) or 3 (RGB)
    input_height: int | None = None  # the size the model is deployed at; None = any
    input_width: int | None = None
    input_multiple: int = 32  # sides must be multiples of this
    input_dtype: str = "uint8"
    norm_mean: float = 0.0  # the graph computes (x - mean) / std; recorded, not re-applied
    norm_std: float = 255.0
    intensity: str = "full"  # how 16-bit images become uint8 (intensity.py); cards before it: full
    output_kind: str = "softmax"  # "softmax": probs (N,H,W,C); "sigmoid": probs (N,H,W,1)
    width: str = "slim"
    training: dict[str, Any] = field(default_factory=dict)  # data, split, metrics
    source: dict[str, str] = field(default_factory=dict)  # sha256 of inputs it came from
    versions: dict[str, str] = field(default_factory=dict)  # fcnx and library versions
    model_config: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # of the artifact carrying the card: fp32, fp16, int8
    export: dict[str, Any] = field(default_factory=dict)  # format, opset, outputs, source hash
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes)
        data["palette"] = [list(c) for c in self.palette]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "card") -> ModelCard:
        """The card ``data`` describes (parsed JSON), or one CardError line starting with ``origin``."""
        try:
            return cls._from_dict(data)
        except CardError as exc:
            raise CardError(f"{origin}: {exc}") from None
        except (TypeError, ValueError) as exc:  # a check missed something: still one line, never a traceback
            raise CardError(f"{origin}: malformed card: {one_line(exc)}") from None

    @classmethod
    def _from_dict(cls, data: Any) -> ModelCard:
        if not isinstance(data, dict):
            raise CardError(f"a card is a JSON object, got {json_type(data)}")
        version = data.get("card_version", CARD_VERSION)
        if not is_int(version) or version < 1:
            raise CardError(f"card field card_version must be an integer >= 1, got {shown(version)}")
        if version > CARD_VERSION:
            raise CardError(
                f"card version {version} is newer than this fcnx reads ({CARD_VERSION}); upgrade fcnx"
            )
        reject_unknown_keys(cls, data, "unknown card keys")
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in data:
                raise CardError(f"missing card key {f.name!r}")
        values = dict(data)
        if isinstance(values["classes"], list):
            values["classes"] = tuple(values["classes"])
        if isinstance(values["palette"], list):
            values["palette"] = tuple(tuple(c) if isinstance(c, list) else c for c in values["palette"])
        return cls(**values)  # __post_init__ checks every field

    @classmethod
    def from_json(cls, text: str, origin: str = "card") -> ModelCard:
        return cls.from_dict(json_object(text, origin, "card"), origin)

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CardError(f"{path}: cannot read card: {exc.strerror}") from None
        return cls.from_json(text, origin=str(path))

    def write(self, path: str | Path) -> None:
        from .atomic import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")


def check_fields(card: ModelCard) -> None:
    """Every field of ``card`` has its type and a value a deployable model can have; the
    first one that does not is a one-line CardError naming the field (``from_dict`` puts
    the file in front)."""
    values = {f.name: getattr(card, f.name) for f in dataclasses.fields(card)}
    for name, value in values.items():
        check_json_value(value, name)
    hints = _field_hints(type(card))
    for name, value in values.items():
        if name in _RULES or name == "palette":
            continue
        hint = hints[name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = typing.get_args(hint) if union else (hint,)
        if not any(_is_a(value, kind) for kind in allowed):
            expected = " or ".join(_TYPE_NAMES.get(typing.get_origin(k) or k, str(k)) for k in allowed)
            raise CardError(f"card field {name} must be {expected}, got {shown(value)}")
        if typing.get_args(hint) == (str, str) and not all(isinstance(v, str) for v in value.values()):
            raise CardError(f"card field {name} must be a JSON object of strings, got {shown(value)}")
    for name, (expected, ok) in _RULES.items():
        if not ok(values[name]):
            raise CardError(f"card field {name} must be {expected}, got {shown(values[name])}")
    classes, palette = card.classes, card.palette
    if not isinstance(palette, tuple) or len(palette) != len(classes):
        count = f"{len(palette)} colours" if isinstance(palette, tuple) else shown(palette)
        raise CardError(
            f"card field palette must be one [r, g, b] colour per class ({len(classes)}), got {count}"
        )
    for colour in palette:
        if not (
            isinstance(colour, tuple)
            and len(colour) == 3
            and all(is_int(v) and 0 <= v <= 255 for v in colour)
        ):
            raise CardError(
                f"card field palette must hold [r, g, b] colours of 3 integers in 0..255, got {shown(colour)}"
            )
    if card.output_kind == "sigmoid" and len(classes) != 2:
        raise CardError(
            f"card field output_kind is sigmoid, a binary output, but the card has {len(classes)} classes"
        )
    metrics = card.training.get("val_metrics", {})
    if not isinstance(metrics, dict):
        raise CardError(f"card field training.val_metrics must be a JSON object, got {shown(metrics)}")
    for key in ("miou", "pixel_accuracy", "mean_dice"):  # printed as numbers by info and reports
        if key in metrics and not is_number(metrics[key]):
            raise CardError(
                f"card field training.val_metrics.{key} must be a number, got {shown(metrics[key])}"
            )


def input_contradictions(card: ModelCard, shape: Sequence[int | None]) -> list[str]:
    """What a graph's (N, H, W, C) input ``shape`` says against ``card``'s input size and
    channels, one phrase each (a dynamic dim, None, says nothing). Every backend calls this
    when it loads an artifact and reports the phrases with its file."""
    _, height, width, channels = shape
    problems = []
    if channels is not None and channels != card.input_channels:
        problems.append(f"the card says {card.input_channels} input channels, the graph has {channels}")
    for what, said, has in (("height", card.input_height, height), ("width", card.input_width, width)):
        if said is not None and has is not None and said != has:
            problems.append(f"the card says input {what} {said}, the graph has {has}")
    return problems


def _is_finite(value: Any) -> bool:
    try:
        return is_number(value) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and low <= v <= high


def _class_names(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and 2 <= len(value) <= MAX_CLASSES
        and all(isinstance(c, str) and c.strip() and c.isprintable() for c in value)
        and len(set(value)) == len(value)
    )


def _one_of(choices: tuple[str, ...]) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices


def _intensity(value: Any) -> bool:
    try:
        return isinstance(value, str) and parse_intensity(value) is not None
    except IntensityError:
        return False


def _side(value: Any) -> bool:
    return value is None or _int_in(1, MAX_INPUT_SIDE)(value)


# field -> (what it must be, the check); fields not here are checked by their declared type
_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "card_version": (f"an integer in 1..{CARD_VERSION}", _int_in(1, CARD_VERSION)),
    "classes": (f"a list of 2 to {MAX_CLASSES} distinct, non-empty, printable names", _class_names),
    "input_channels": ("1 or 3", lambda v: is_int(v) and v in INPUT_CHANNELS),
    "input_height": (f"null (any) or an integer in 1..{MAX_INPUT_SIDE}", _side),
    "input_width": (f"null (any) or an integer in 1..{MAX_INPUT_SIDE}", _side),
    "input_multiple": (f"an integer in 1..{MAX_INPUT_MULTIPLE}", _int_in(1, MAX_INPUT_MULTIPLE)),
    "input_dtype": _one_of(INPUT_DTYPES),
    "norm_mean": ("a finite number", _is_finite),
    "norm_std": ("a finite number other than 0", lambda v: _is_finite(v) and v != 0),
    "output_kind": _one_of(OUTPUT_KINDS),
    "intensity": ("auto, full, bits:N (N 9..16) or percentile:P1,P2 (0 <= P1 < P2 <= 100)", _intensity),
    "precision": _one_of(PRECISIONS),
}
_TYPE_NAMES: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a JSON object",
    type(None): "null",
}


_HINTS: dict[type, dict[str, Any]] = {}


def _field_hints(cls: type) -> dict[str, Any]:
    """The dataclass's field types, resolved once (``typing.get_type_hints`` is slow)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _is_a(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    kind = typing.get_origin(kind) or kind
    if kind in (int, float):  # JSON has one number type; bools are not numbers here
        return (is_number if kind is float else is_int)(value)
    return isinstance(value, kind)


def reject_unknown_keys(cls: Any, data: dict[str, Any], message: str) -> None:
    """Unknown keys are an error, never silently dropped (a typo or a newer writer)."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)}, key=str)
    if unknown:
        raise CardError(f"{message} {shown(unknown)}")


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (cards and manifests name sources by it)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Black/white for two classes, then the PASCAL VOC colour map."""
    if num_classes == 2:
        return ((0, 0, 0), (255, 255, 255))
    palette = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return tuple(palette)
