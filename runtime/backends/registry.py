"""The one table of backends, and ``load(path, backend="auto")``.

Every command that needs to know which backend runs which file (``load``, ``fcnx
bench``, ``fcnx info``, ``fcnx export triton``) reads ``MODEL_KINDS`` and ``BACKENDS``
here; nothing else lists them. Factories are named by module path and imported only
when used, so the runtime never imports Keras (the ``keras`` backend lives in
fcnx.train) and a missing extra is a one-line error with the pip command.

``auto`` tries the backends of the file's kind in table order, taking the first that
this machine offers *and* that actually starts; every one skipped on the way is
recorded in ``backend.notes`` with the reason. A named backend is that backend or a
BackendError, never a silent fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, MissingExtra


@dataclass(frozen=True)
class ModelKind:
    name: str  # "onnx" | "openvino" | "engine" | "keras" | "deploy"
    suffixes: tuple[str, ...]  # file suffixes of this kind (a training run folder is "keras")
    what: str  # for messages
    loader: str = ""  # "module:function" that loads this kind itself (a folder naming its own backend)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    kind: str  # the ModelKind it loads
    needs_gpu: bool
    factory: str  # "module:Class"; the class takes (path, name, options)
    extra: str  # the pip extra that provides its libraries
    provider: str = ""  # onnxruntime's execution provider, for the ort-* backends
    requires: str = ""  # the module whose presence means the backend can be tried here
    precisions: tuple[str, ...] = ()  # what fcnx deploy exports for it (its candidates)


MODEL_KINDS: tuple[ModelKind, ...] = (
    ModelKind("onnx", (".onnx",), "an ONNX file from fcnx export onnx"),
    ModelKind("openvino", (".xml",), "an OpenVINO IR (.xml + .bin) from fcnx export openvino"),
    ModelKind("engine", (".engine", ".plan", ".trt"), "a TensorRT engine with its sidecar ENGINE.json"),
    ModelKind("keras", (".keras",), "a .keras file or a training run folder"),
    ModelKind(
        "deploy", (), "a folder written by fcnx deploy (deploy.json)", "fcnx.runtime.deployed:load_deployed"
    ),
)

_ORT = "fcnx.runtime.backends.ort:OrtBackend"
_KERAS = "fcnx.train.keras_backend:KerasBackend"
BACKENDS: tuple[BackendSpec, ...] = (  # auto order within a kind: first offered that starts
    BackendSpec("ort-trt", "onnx", True, _ORT, "gpu", "TensorrtExecutionProvider", "onnxruntime",
                precisions=("fp16", "int8")),
    BackendSpec("ort-cuda", "onnx", True, _ORT, "gpu", "CUDAExecutionProvider", "onnxruntime",
                precisions=("fp32", "fp16")),
    BackendSpec("ort-cpu", "onnx", False, _ORT, "cpu", "CPUExecutionProvider", "onnxruntime",
                precisions=("fp32", "fp16", "int8")),
    BackendSpec("ov-cpu", "openvino", False, "fcnx.runtime.backends.ov:OvBackend", "openvino",
                requires="openvino", precisions=("fp32", "bf16", "int8")),
    BackendSpec("trt", "engine", True, "fcnx.runtime.backends.trt.backend:TrtBackend", "tensorrt",
                requires="tensorrt", precisions=("fp16", "int8")),
    BackendSpec("keras", "keras", False, _KERAS, "train", requires="keras"),
    BackendSpec("keras-bf16", "keras", False, _KERAS, "train", requires="keras"),  # mixed_bfloat16 policy
)  # fmt: skip

BACKEND_NAMES = tuple(spec.name for spec in BACKENDS)
CHOICES = ("auto", *BACKEND_NAMES)


def backend_spec(name: str) -> BackendSpec:
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    raise BackendError(f"unknown backend {name!r}; one of {', '.join(CHOICES)}")


def backends_for(kind: str) -> tuple[BackendSpec, ...]:
    return tuple(spec for spec in BACKENDS if spec.kind == kind)


def model_kind(path: str | Path) -> str:
    """ "onnx", "openvino", "engine" or "keras", from the file name (a folder is a training run)."""
    path = Path(path)
    if path.is_dir():
        if (path / "best.keras").is_file():
            return "keras"
        if (path / "deploy.json").is_file():
            return "deploy"
        raise BackendError(
            f"{path}: a folder, but neither a training run (best.keras) nor a deploy (deploy.json)"
        )
    suffix = path.suffix.lower()
    for kind in MODEL_KINDS:
        if suffix in kind.suffixes:
            return kind.name
    known = "; ".join(f"{'/'.join(k.suffixes)} ({k.what})" for k in MODEL_KINDS)
    raise BackendError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected {known}")


def onnxruntime_providers() -> list[str]:
    """The execution providers this onnxruntime install offers ([] without onnxruntime)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def unavailable_reason(spec: BackendSpec, providers: list[str] | None = None) -> str | None:
    """Why ``spec`` cannot even be tried on this machine (library or provider missing), or
    None when it can (it may still fail to start: no GPU, a too-old driver)."""
    if spec.requires and importlib.util.find_spec(spec.requires) is None:
        return f'{spec.requires} is not installed: pip install "fcnx[{spec.extra}]"'
    if spec.provider:
        offered = onnxruntime_providers() if providers is None else providers
        if spec.provider not in offered:
            return f"this onnxruntime has no {spec.provider}"
    return None


def offered_backends(kind: str | None = None) -> list[str]:
    """The backends (of ``kind``, or all) that can be tried here, in auto order."""
    providers = onnxruntime_providers()
    specs = BACKENDS if kind is None else backends_for(kind)
    return [s.name for s in specs if unavailable_reason(s, providers) is None]


def create(spec: BackendSpec, path: Path, options: Any = None) -> Backend:
    """One backend of the table, started on ``path``. A library missing when its module is
    imported or when the backend starts is the pip line of the backend's extra."""
    module_name, _, attribute = spec.factory.partition(":")
    try:
        backend: Backend = getattr(importlib.import_module(module_name), attribute)(path, spec.name, options)
    except BackendError:
        raise
    except ModuleNotFoundError as exc:
        raise MissingExtra(
            f'the {spec.name} backend needs {exc.name}, which is not installed: pip install "fcnx[{spec.extra}]"'
        ) from None
    except ValueError as exc:  # the model file's own problem, already naming it
        raise BackendError(str(exc)) from None
    return backend


def load(path: str | Path, backend: str = "auto", options: Any = None) -> Backend:
    """The backend for ``path``; ``backend`` is "auto" or a name of ``BACKENDS``.
    ``options`` (an ``OrtOptions``, or an ``OvOptions`` for ov-cpu) tunes the backend."""
    path = Path(path)
    if backend != "auto":
        backend_spec(backend)  # an unknown name is an error before anything else
    if not path.exists():
        raise BackendError(f"{path}: no such model file or folder")
    kind = model_kind(path)
    loader = next(k.loader for k in MODEL_KINDS if k.name == kind)
    if loader:  # a deploy folder: its winner on the backend it won on, with its tuned settings
        module_name, _, attribute = loader.partition(":")
        loaded: Backend = getattr(importlib.import_module(module_name), attribute)(path, backend, options)
        return loaded
    candidates = backends_for(kind)
    if backend != "auto":
        spec = backend_spec(backend)
        if spec.kind != kind:
            raise BackendError(
                f"{path}: a {kind} model runs on {' / '.join(s.name for s in candidates)}, not {backend}"
                + (" (build an engine with: fcnx export engine MODEL.onnx)" if spec.kind == "engine" else "")
            )
        return create(spec, path, options)
    notes: list[str] = []  # the last candidate is always tried: its own error says best what is missing
    providers = onnxruntime_providers()
    for i, spec in enumerate(candidates):
        last = i == len(candidates) - 1
        reason = unavailable_reason(spec, providers)
        if reason is not None and not last:
            notes.append(f"{spec.name}: {reason}")
            continue
        try:
            chosen = create(spec, path, options)
        except BackendError as exc:
            if last:
                raise
            notes.append(f"{spec.name}: {exc}")
            continue
        chosen.notes = notes + chosen.notes  # what was skipped, then the backend's own (compiles)
        return chosen
    raise BackendError(f"{path}: no backend loads {kind} models")  # unreachable: every kind has one
