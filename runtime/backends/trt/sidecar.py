"""``model.engine.json``: what a TensorRT plan is and where it can run.

A TensorRT plan only loads on the TensorRT version and GPU kind that built it, and
a failed deserialization says little. So every engine gets a sidecar (the model card
plus TensorRT version, GPU, compute capability, profile, precision, ONNX hash), and
the runtime checks it before deserializing, answering "rebuild with: ..." instead.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...atomic import atomic_write_text
from ...card import CardError, ModelCard, input_contradictions, json_object, reject_unknown_keys
from ..base import BackendError


class EngineMismatch(BackendError):
    """The engine was built for another TensorRT version or GPU kind."""


@dataclass(frozen=True)
class BatchProfile:
    """One optimization profile over the batch axis: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}"
            )

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """'1:8:32' -> (1, 8, 32); a single 'N' means N:N:N."""
        parts = text.split(":")
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"batch profile must be MIN:OPT:MAX like 1:8:32 (or one number), got {text!r}")
        return cls(*(int(p) for p in parts))

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineSidecar:
    card: ModelCard
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"
    input_name: str
    input_shape: tuple[int, int, int]  # (H, W, C), fixed in the profile
    batch: BatchProfile
    precision: str
    onnx_sha256: str
    onnx_file: str
    build_seconds: float = 0.0
    built_at: str = ""
    outputs: tuple[str, ...] = ("probs", "mask")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A sidecar that contradicts itself describes no engine fcnx built: refuse it."""
        h, w, c = self.input_shape
        if c != self.card.input_channels:
            raise ValueError(
                f"input_shape {list(self.input_shape)} has {c} channels, its card {self.card.input_channels}"
            )
        problems = input_contradictions(self.card, (None, h, w, c))
        if problems:
            raise ValueError(
                f"input_shape {list(self.input_shape)} contradicts its card: {'; '.join(problems)}"
            )
        if not self.outputs or not set(self.outputs) <= {"probs", "mask"}:
            raise ValueError(f"outputs must be probs and/or mask, got {list(self.outputs)}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["card"] = self.card.to_dict()
        data["input_shape"] = list(self.input_shape)
        data["outputs"] = list(self.outputs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "sidecar") -> EngineSidecar:
        reject_unknown_keys(cls, data, f"{origin}: unknown sidecar keys")
        try:
            values = dict(data)
            values["card"] = ModelCard.from_dict(data["card"], origin)
            values["batch"] = BatchProfile(**data["batch"])
            values["input_shape"] = tuple(int(v) for v in data["input_shape"])
            values["outputs"] = tuple(data.get("outputs", ("probs", "mask")))
            return cls(**values)
        except KeyError as exc:
            raise CardError(f"{origin}: missing sidecar key {exc.args[0]!r}") from None
        except CardError:
            raise  # the card's own, already naming the file
        except (TypeError, ValueError) as exc:
            raise CardError(f"{origin}: malformed sidecar: {exc}") from None

    def rebuild_command(self, engine_path: str | Path) -> str:
        return f"fcnx export engine {self.onnx_file} -o {engine_path} --batch {self.batch} --force"


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(engine_path)
    atomic_write_text(path, json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise CardError(
            f"{path}: missing; every fcnx engine has this sidecar (rebuild the engine with fcnx export engine)"
        )
    data = json_object(path.read_text(encoding="utf-8"), str(path), "sidecar")
    return EngineSidecar.from_dict(data, origin=str(path))


def check_compatible(
    sidecar: EngineSidecar,
    engine_path: str | Path,
    tensorrt_version: str,
    compute_capability: str,
    gpu_name: str,
) -> list[str]:
    """Raise EngineMismatch when this machine cannot load the engine; return warnings
    (same compute capability, different GPU model: it loads, tuned for the other GPU)."""
    problems = []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(
            f"built with TensorRT {sidecar.tensorrt_version}, this machine has {tensorrt_version}"
        )
    if sidecar.compute_capability != compute_capability:
        problems.append(
            f"built for compute capability {sidecar.compute_capability} ({sidecar.gpu_name}), "
            f"this GPU is {compute_capability} ({gpu_name})"
        )
    if problems:
        raise EngineMismatch(
            f"{engine_path}: cannot load here: {'; '.join(problems)}. "
            f"Rebuild with: {sidecar.rebuild_command(engine_path)}"
        )
    if sidecar.gpu_name != gpu_name:
        return [
            f"{engine_path}: built on {sidecar.gpu_name}, running on {gpu_name}: it loads, but rebuild for best speed"
        ]
    return []
