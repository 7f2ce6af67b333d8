"""Writing the model folder ``REPO/NAME``: ``write_repository`` reads the served model,
builds its config, and writes ``config.pbtxt``, version 1's model file, the model card
(engines: their sidecar too) into a temp folder inside REPO, each file fsynced, then
``_swap_into_place`` renames it to NAME, so Triton never sees half a model folder; an
existing one (with --force) is moved aside first and put back if the rename fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import remove_stale_temps, temp_folder
from fcnx.runtime.backends.trt.sidecar import sidecar_path

from ..onnx_export import ExportError
from .config import TritonRepoConfig, build_model_config, summarize_config
from .model import read_served_model

CARD_FILE = "fcnx-card.json"
SIDECAR_FILE = "fcnx-engine.json"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_synced(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def write_repository(config: TritonRepoConfig) -> dict[str, Any]:
    """Write REPO/NAME (config, version 1's model file, card; engines: sidecar) atomically."""
    from google.protobuf import text_format

    if not config.name:
        raise ExportError("a Triton model needs a name: --name NAME")
    repo = Path(config.repo)
    target = repo / config.name
    if repo.exists() and not repo.is_dir():
        raise ExportError(f"{repo}: is a file, not a model repository folder")
    if target.exists() and not config.force:
        raise ExportError(f"{target}: already exists; pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: is a file, not a model folder")
    served = read_served_model(config.model)
    message, note = build_model_config(served, config)
    text = text_format.MessageToString(message)

    repo.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)  # what a killed export of REPO/NAME left: .NAME.*.tmp / .old folders
    tmp = temp_folder(target)
    try:
        os.chmod(tmp, 0o755)  # made 0700; Triton's container user must read it
        (tmp / "1").mkdir()
        _copy_synced(served.path, tmp / "1" / served.filename)
        _write_synced(tmp / "config.pbtxt", text.encode("utf-8"))
        _write_synced(tmp / CARD_FILE, (served.card.to_json() + "\n").encode("utf-8"))
        if served.sidecar is not None:
            _copy_synced(sidecar_path(served.path), tmp / SIDECAR_FILE)
        _swap_into_place(tmp, target, config.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [target / "config.pbtxt", target / "1" / served.filename, target / CARD_FILE]
    if served.sidecar is not None:
        files.append(target / SIDECAR_FILE)
    return {
        "path": str(target),
        "files": [str(f) for f in files],
        "platform": served.platform,
        "max_batch_size": message.max_batch_size,
        "config": text,
        "summary": summarize_config(message),
        "note": note,
        "tensorrt_version": served.sidecar.tensorrt_version if served.sidecar else None,
        "compute_capability": served.sidecar.compute_capability if served.sidecar else None,
        "gpu_name": served.sidecar.gpu_name if served.sidecar else None,
    }


def _swap_into_place(tmp: Path, target: Path, force: bool) -> None:
    """Rename the finished folder to ``target``; an existing one (with --force) is moved
    aside first and removed after, or put back if the rename fails."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not force:
        raise ExportError(f"{target}: already exists; pass --force to replace it")
    old = temp_folder(target, ".old")
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
