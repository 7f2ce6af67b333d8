"""The candidates of a deploy: every (backend, precision) this machine can run.

Backends and the precisions fcnx exports for each come from the backend registry
(``BackendSpec.precisions``); a candidate is offered when its backend's library (and
provider) is installed, a GPU is present for GPU backends, and the CPU has what the
precision needs (``PRECISION_CPU_FLAGS``: OpenVINO BF16 on AVX512-BF16 or AMX). What is
not offered is still listed, with the reason, so deploy.json says why a candidate was
never tried. Keras FP32 and BF16 are baselines: measured, never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fcnx.runtime.backends.registry import BACKENDS, BackendSpec, onnxruntime_providers
from fcnx.runtime.deployed import PRECISION_CPU_FLAGS

# What each candidate's artifact is: the export that makes it (its file suffix)
ARTIFACTS = {"onnx": ".onnx", "openvino": ".xml", "engine": ".engine"}
BASELINES = (("keras", "fp32"), ("keras-bf16", "bf16"))
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")  # ties go to the more exact precision


@dataclass(frozen=True)
class Machine:
    """What decides the candidates: CPU flags by name, NVIDIA GPUs, onnxruntime's providers
    and the optional modules installed (tests fake it)."""

    cpu_flags: dict[str, bool]
    gpus: tuple[str, ...]
    providers: tuple[str, ...]
    modules: frozenset[str] = field(default_factory=frozenset)  # importable among openvino, tensorrt, ...

    @classmethod
    def here(cls) -> Machine:
        import importlib.util

        from fcnx.runtime.bench.machine import cpu_flags, gpu_names

        modules = {m for m in ("openvino", "tensorrt", "nncf", "onnxruntime") if importlib.util.find_spec(m)}
        return cls(cpu_flags(), tuple(gpu_names()), tuple(onnxruntime_providers()), frozenset(modules))


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    kind: str  # the registry's model kind: onnx | openvino | engine
    available: bool
    reason: str = ""  # why not, when not available

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def key(self) -> str:
        """File-name form: ``ov-cpu-int8``."""
        return f"{self.backend}-{self.precision}"


def why_not(spec: BackendSpec, precision: str, machine: Machine) -> str:
    """Why ``spec`` cannot run ``precision`` on ``machine``; "" when it can."""
    if spec.requires and spec.requires not in machine.modules:
        return f'{spec.requires} is not installed: pip install "fcnx[{spec.extra}]"'
    if spec.provider and spec.provider not in machine.providers:
        return f"this onnxruntime has no {spec.provider}"
    if spec.needs_gpu and not machine.gpus:
        return "no NVIDIA GPU"
    needed = PRECISION_CPU_FLAGS.get((spec.name, precision), ())
    if needed and not any(machine.cpu_flags.get(flag) for flag in needed):
        return f"the CPU has no {' or '.join(needed)}"
    if precision == "int8" and spec.kind == "openvino" and "nncf" not in machine.modules:
        return (
            'OpenVINO INT8 is quantized by NNCF, which is not installed: pip install "fcnx[openvino-export]"'
        )
    return ""


def candidates(machine: Machine) -> list[Candidate]:
    """Every (backend, precision) of the registry, available or not (with the reason)."""
    rows = []
    for spec in BACKENDS:
        for precision in spec.precisions:
            reason = why_not(spec, precision, machine)
            rows.append(Candidate(spec.name, precision, spec.kind, not reason, reason))
    return rows
