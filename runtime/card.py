"""The model card: what an artifact is, so no command needs flags the model already knows.

A frozen dataclass that round-trips through JSON. It lives in a run folder as
``card.json``, in ONNX ``metadata_props["fcnx.card"]`` and next to engines as a sidecar.
Unknown keys are an error, never silently dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD_VERSION = 1
OUTPUT_KINDS = ("softmax", "sigmoid")


class CardError(ValueError):
    """A card that is missing, malformed or describes an impossible model."""


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
        if len(self.classes) < 2:
            raise CardError(f"a card needs at least 2 classes, got {list(self.classes)}")
        if len(self.palette) != len(self.classes):
            raise CardError(f"palette has {len(self.palette)} colours for {len(self.classes)} classes")
        if self.input_channels not in (1, 3):
            raise CardError(f"input_channels must be 1 or 3, got {self.input_channels}")
        if self.output_kind not in OUTPUT_KINDS:
            raise CardError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.output_kind == "sigmoid" and len(self.classes) != 2:
            raise CardError(f"a sigmoid output is binary, but the card has {len(self.classes)} classes")

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
        reject_unknown_keys(cls, data, f"{origin}: unknown card keys")
        version = data.get("card_version", CARD_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise CardError(f"{origin}: card_version must be an integer, got {version!r}")
        if version > CARD_VERSION:
            raise CardError(
                f"{origin}: card version {version} is newer than this fcnx reads ({CARD_VERSION}); "
                "upgrade fcnx"
            )
        values = dict(data)
        try:
            _check_field_types(cls, data, origin)
            if not isinstance(data["classes"], list) or not all(isinstance(c, str) for c in data["classes"]):
                raise CardError(f"{origin}: classes must be a list of names, got {data['classes']!r}")
            if not isinstance(data["palette"], list):
                raise CardError(f"{origin}: palette must be a list of [r, g, b], got {data['palette']!r}")
            values["classes"] = tuple(data["classes"])
            values["palette"] = tuple(_rgb(c) for c in data["palette"])
            return cls(**values)
        except KeyError as exc:
            raise CardError(f"{origin}: missing card key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CardError):
                raise CardError(f"{origin}: {exc}") from None
            raise CardError(f"{origin}: malformed card: {exc}") from None

    @classmethod
    def from_json(cls, text: str, origin: str = "card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"{origin}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CardError(f"{origin}: a card is a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, origin)

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


def _is_a(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    kind = typing.get_origin(kind) or kind
    if kind in (int, float):  # JSON has one number type; bools are not numbers here
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_field_types(cls: Any, data: dict[str, Any], origin: str) -> None:
    """Every field has its declared type (a JSON file can hold anything)."""
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name in ("classes", "palette"):  # checked element by element
            continue
        hint = hints[name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = typing.get_args(hint) if union else (hint,)
        if not any(_is_a(value, kind) for kind in allowed):
            raise CardError(f"{origin}: {name} must be {hint}, got {value!r}")


def _rgb(value: Any) -> tuple[int, int, int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"a palette colour is 3 integers in 0..255, got {value!r}")
    colour = tuple(value)
    if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
        raise ValueError(f"a palette colour is 3 values in 0..255, got {list(value)}")
    return (colour[0], colour[1], colour[2])


def reject_unknown_keys(cls: Any, data: dict[str, Any], message: str) -> None:
    """Unknown keys are an error, never silently dropped (a typo or a newer writer)."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise CardError(f"{message} {unknown}")


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
