"""``fcnx.runtime.load(path, backend="auto")``: the right backend for a model file.

- ``.engine`` / ``.plan``: the native TensorRT backend (``trt``).
- ``.onnx``: ``auto`` tries the TensorRT EP, the CUDA EP, then the CPU EP, taking the
  first that this onnxruntime install offers *and* that actually starts; every
  provider skipped on the way is recorded in ``backend.notes`` with the reason.
- ``.keras`` or a run folder: the Keras model (``keras``, from fcnx.export; needs the
  ``train`` extra).

Asking for a named backend gets exactly that backend or a BackendError; never a
silent fallback.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .backend import Backend, BackendError
from .ort_backend import AUTO_ORDER, PROVIDERS, OrtBackend, OrtOptions, available_backends

BACKENDS = ("auto", *AUTO_ORDER, "trt", "keras")
ENGINE_SUFFIXES = (".engine", ".plan")


def model_kind(path: str | Path) -> str:
    """ "onnx", "engine" or "keras", from the file name (a folder is a training run)."""
    path = Path(path)
    if path.is_dir():
        if (path / "best.keras").is_file():
            return "keras"
        raise BackendError(f"{path}: a folder, but not a training run (no best.keras in it)")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix == ".keras":
        return "keras"
    raise BackendError(
        f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected .onnx, .engine/.plan, "
        ".keras or a training run folder"
    )


def _load_keras(path: Path) -> Any:
    try:
        module = importlib.import_module("fcnx.export.keras_backend")
        return module.KerasBackend(path)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f'the keras backend needs {exc.name}, which is not installed: pip install "fcnx[train]"'
        ) from None
    except ValueError as exc:  # the model file's own problem, already naming it
        raise BackendError(str(exc)) from None


def _load_trt(path: Path) -> Any:
    from .trt_backend import TrtBackend

    return TrtBackend(path)


def load(path: str | Path, backend: str = "auto", ort_options: OrtOptions | None = None) -> Backend:
    """The backend for ``path``; ``backend`` is one of BACKENDS."""
    path = Path(path)
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise BackendError(f"{path}: no such model file or folder")
    kind = model_kind(path)
    wanted = {"onnx": (*AUTO_ORDER,), "engine": ("trt",), "keras": ("keras",)}[kind]
    if backend != "auto" and backend not in wanted:
        raise BackendError(
            f"{path}: a {kind} model runs on {' / '.join(wanted)}, not {backend}"
            + (" (build an engine with: fcnx export engine MODEL.onnx)" if backend == "trt" else "")
        )
    if kind == "keras":
        return _load_keras(path)
    if kind == "engine":
        return _load_trt(path)
    if backend != "auto":
        return OrtBackend(path, backend, ort_options)
    notes = []
    offered = available_backends()
    for name in AUTO_ORDER:
        if name not in offered:
            notes.append(f"{name}: this onnxruntime has no {PROVIDERS[name]}")
            continue
        try:
            chosen = OrtBackend(path, name, ort_options)
        except BackendError as exc:
            if name == "ort-cpu":
                raise
            notes.append(f"{name}: {exc}")
            continue
        chosen.notes = notes
        return chosen
    raise BackendError('onnxruntime is not installed: pip install "fcnx[cpu]" (or "fcnx[gpu]")')
