"""A folder written by ``fcnx deploy``: the winning artifact, ``deploy.json``, ``report.html``.

``load("DEPLOY/")`` (and so ``fcnx predict DEPLOY/ IN -o OUT``) runs the winner on the
backend it won on, with the settings it was measured with (batch, threads, infer
requests). Before anything is loaded the folder is checked against this machine: a
winner that needs what this machine lacks (BF16 instructions for a BF16 IR, the GPU an
engine was built on, the backend's library) is one line saying so, with the
``fcnx deploy`` command that chooses again here. The runtime side of deploy: it reads
the folder, never writes it (export/deploy/ does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .backends.base import Backend, BackendError

DEPLOY_FILE = "deploy.json"
DEPLOY_FORMAT = "fcnx-deploy"
DEPLOY_VERSION = 1
# What the CPU needs to run a precision fast enough to have won (any one of the flags):
PRECISION_CPU_FLAGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ov-cpu", "bf16"): ("AVX512-BF16", "AMX-BF16"),
}


def read_deploy(folder: str | Path) -> dict[str, Any]:
    """``deploy.json`` of a deploy folder, checked for what running it needs."""
    path = Path(folder) / DEPLOY_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackendError(
            f"{folder}: not a deploy folder (no {DEPLOY_FILE}); make one with fcnx deploy"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != DEPLOY_FORMAT:
        raise BackendError(f'{path}: not written by fcnx deploy (no "format": "{DEPLOY_FORMAT}")')
    if record.get("version") != DEPLOY_VERSION:
        raise BackendError(
            f"{path}: deploy format version {record.get('version')!r}; this fcnx reads {DEPLOY_VERSION}"
        )
    winner = record.get("winner")
    if not isinstance(winner, dict) or not all(
        isinstance(winner.get(k), str) for k in ("backend", "precision", "artifact")
    ):
        raise BackendError(f"{path}: no winner (backend, precision, artifact) recorded")
    artifact = Path(winner["artifact"])
    if artifact.is_absolute() or ".." in artifact.parts:
        raise BackendError(
            f"{path}: the artifact must be a file inside the folder, got {winner['artifact']!r}"
        )
    settings = winner.get("settings", {})
    if not isinstance(settings, dict):
        raise BackendError(f"{path}: winner.settings must be an object")
    for key in ("batch", "threads", "requests"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BackendError(
                f"{path}: winner.settings.{key} must be a positive integer or null, got {value!r}"
            )
    return record


def machine_mismatches(record: dict[str, Any], flags: dict[str, bool], gpus: list[str]) -> list[str]:
    """What this machine (CPU ``flags`` by name, ``gpus``) lacks to run the recorded winner."""
    winner, requires = record["winner"], record.get("requires") or {}
    problems = []
    needed = PRECISION_CPU_FLAGS.get((winner["backend"], winner["precision"]), ())
    if needed and not any(flags.get(flag) for flag in needed):
        problems.append(f"a {winner['precision'].upper()} {winner['backend']} winner needs {' or '.join(needed)}, "
                        "which this CPU lacks")  # fmt: skip
    gpu = requires.get("gpu")
    if gpu and gpu not in gpus:
        here = ", ".join(gpus) or "no NVIDIA GPU"
        problems.append(f"it was built for {gpu}; this machine has {here}")
    return problems


def rerun_command(record: dict[str, Any], folder: str | Path) -> str:
    return str(record.get("command") or f"fcnx deploy MODEL --data DIR -o {folder} --force")


def load_deployed(folder: str | Path, backend: str = "auto", options: Any = None) -> Backend:
    """The winner of a deploy folder, started with its tuned settings (``preferred_batch``
    is the batch it was measured at); one line naming what is wrong otherwise."""
    from .backends.ort import OrtOptions
    from .backends.ov import OvOptions
    from .backends.registry import backend_spec, create, unavailable_reason
    from .bench.machine import cpu_flags, gpu_names

    folder = Path(folder)
    record = read_deploy(folder)
    winner = record["winner"]
    name, settings = winner["backend"], winner.get("settings", {})
    rerun = rerun_command(record, folder)
    if backend not in ("auto", name):
        raise BackendError(f"{folder}: deployed to run on {name}, not {backend} (leave --backend out)")
    spec = backend_spec(name)
    problems = machine_mismatches(
        record, cpu_flags(), gpu_names() if spec.needs_gpu or record.get("requires", {}).get("gpu") else []
    )
    reason = unavailable_reason(spec)
    if reason is not None:
        problems.append(f"its backend {name} cannot run here: {reason}")
    if problems:
        raise BackendError(f"{folder}: {'; '.join(problems)}. Choose again on this machine: {rerun}")
    artifact = folder / winner["artifact"]
    if not artifact.is_file():
        raise BackendError(f"{folder}: its artifact {winner['artifact']} is missing; rerun: {rerun}")
    threads = settings.get("threads") or getattr(options, "threads", None)
    if name == "ov-cpu":
        options = OvOptions(
            threads=threads, requests=settings.get("requests"), batch=settings.get("batch") or 1
        )
    else:
        options = OrtOptions(
            threads=threads, trt_cache=str(folder / "trt-cache") if name == "ort-trt" else None
        )
    loaded = create(spec, artifact, options)
    loaded.preferred_batch = settings.get("batch")
    loaded.notes = [f"deployed {winner['backend']} {winner['precision']} from {folder}", *loaded.notes]
    return loaded
