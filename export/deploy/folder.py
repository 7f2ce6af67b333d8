"""DEPLOY/: the winning artifact, ``deploy.json`` and ``report.html``, written atomically.

Everything is written into a temp folder beside DEPLOY/ and renamed into place, so
DEPLOY/ exists whole or not at all; an existing DEPLOY/ is kept unless ``force``, and
then replaced by the same rename (the old one removed after). The artifact is copied
from the cache: an OpenVINO IR as ``model.xml`` + ``model.bin``, an ONNX as
``model.onnx``, an engine as ``model.engine`` + ``model.engine.json`` (its sidecar).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import remove_entry
from fcnx.runtime.deployed import DEPLOY_FILE


def companions(artifact: Path) -> list[Path]:
    """The files an artifact is: the IR's .bin beside its .xml, an engine's sidecar."""
    if artifact.suffix == ".xml":
        return [artifact, artifact.with_suffix(".bin")]
    if artifact.suffix == ".engine":
        return [artifact, artifact.with_name(artifact.name + ".json")]
    return [artifact]


def check_target(out: Path, force: bool) -> None:
    """Before any work: an existing DEPLOY/ is kept unless ``force``."""
    if os.path.lexists(out) and not force:
        raise FileExistsError(
            f"{out}: exists; pass --force to replace it (it is kept until the new one is whole)"
        )
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")


def write_folder(
    out: Path, artifact: Path, record: dict[str, Any], report: Callable[[Path], None] | None, force: bool
) -> Path:
    """DEPLOY/ with ``artifact`` (renamed ``model.*``), ``record`` as deploy.json, and the
    report ``report(folder)`` writes; returns ``out``."""
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{secrets.token_hex(6)}.fcnx-partial")
    try:
        staging.mkdir()
        for path in companions(artifact):
            name = "model" + path.name[len(artifact.stem) :]
            shutil.copyfile(path, staging / name)
        (staging / DEPLOY_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if report is not None:
            report(staging)
        old = None
        if os.path.lexists(out):
            old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
            os.rename(out, old)
        os.rename(staging, out)
        if old is not None:
            remove_entry(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
