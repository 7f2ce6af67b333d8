"""``OUT/.fcnx-predict.json``: which model wrote the masks in an output folder.

A rerun into the same folder skips every input whose outputs all exist (they were
written atomically, so existing means complete) and redoes the rest, but only when
the folder's manifest names the same model (sha256 of the file) and the same fit: a
folder never ends up holding masks from two models. ``--overwrite`` with another
model first deletes exactly the outputs the old one was asked to write
(``OUT/.fcnx-predict.outputs``, written before any of them), then starts afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..card import sha256_file
from .lock import LOCK_NAME, OWNER_NAME

MANIFEST_NAME = ".fcnx-predict.json"
OUTPUTS_NAME = ".fcnx-predict.outputs"  # every output the folder's model was asked to write
OWN_FILES = {MANIFEST_NAME, OUTPUTS_NAME, LOCK_NAME, OWNER_NAME}


@dataclass(frozen=True)
class Manifest:
    model: str
    model_sha256: str
    fit: str

    def same_model(self, other: Manifest) -> bool:
        return self.model_sha256 == other.model_sha256 and self.fit == other.fit


def fingerprint(model: str | Path) -> str:
    """sha256 of the model file (a run folder: its best.keras)."""
    path = Path(model)
    return sha256_file(path / "best.keras" if path.is_dir() else path)


def read_manifest(out: Path) -> Manifest | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable fcnx manifest ({exc}); remove it or use --overwrite") from None


def claim_folder(out: Path, manifest: Manifest, overwrite: bool) -> tuple[bool, int]:
    """Make ``out`` this model's folder (the caller holds its lock). Returns (resume, removed):
    resume is True when existing outputs may be kept; removed counts the outputs of
    another model that ``--overwrite`` deleted, so the folder holds one model's masks."""
    previous = read_manifest(out)
    if previous is not None and not previous.same_model(manifest) and not overwrite:
        raise ValueError(
            f"{out} holds outputs of another model ({previous.model}, sha256 {previous.model_sha256[:12]}, "
            f"fit {previous.fit}); this run is {manifest.model} (sha256 {manifest.model_sha256[:12]}, fit "
            f"{manifest.fit}). Use another -o folder, or --overwrite to replace them"
        )
    if previous is None and not overwrite and any(p.name not in OWN_FILES for p in out.iterdir()):
        # outputs without a manifest: not ours to mix with
        raise ValueError(
            f"{out} is not empty and was not written by fcnx predict; use another -o folder, or --overwrite"
        )
    removed = 0
    if previous is not None and not previous.same_model(manifest):
        removed = remove_recorded_outputs(out)
    atomic_write_text(out / MANIFEST_NAME, json.dumps(asdict(manifest), indent=2) + "\n")
    return previous is not None and not overwrite, removed


def recorded_outputs(out: Path) -> list[str]:
    """The outputs (relative paths) this folder's model was asked to write, in order."""
    path = out / OUTPUTS_NAME
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def record_outputs(out: Path, paths: list[Path]) -> None:
    """Add the outputs a run is about to write to the folder's list, before it writes any:
    the list is always a superset of what the folder's model wrote."""
    known = recorded_outputs(out)
    seen = set(known)
    new = [rel for rel in (p.relative_to(out).as_posix() for p in paths) if rel not in seen]
    if new:
        atomic_write_text(out / OUTPUTS_NAME, "".join(f"{rel}\n" for rel in [*known, *new]))


def remove_recorded_outputs(out: Path) -> int:
    """Delete the outputs the list names (those that exist) and the list; returns how many."""
    removed = 0
    for rel in recorded_outputs(out):
        target = out / rel
        if target.is_file() and not target.is_symlink():
            target.unlink(missing_ok=True)
            removed += 1
    (out / OUTPUTS_NAME).unlink(missing_ok=True)
    return removed


def remove_stale_temp_files(out: Path) -> int:
    """Delete the temp files killed runs left behind (``atomic_path`` names them
    ``.NAME.<random>.tmp``); returns how many. Only call it holding the folder's lock:
    then no live run can own one. A file that is already gone is not an error."""
    removed = 0
    for root, _, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed
