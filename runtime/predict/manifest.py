"""``OUT/.fcnx-predict.json``: which model wrote the masks in an output folder.

A rerun into the same folder skips every input whose outputs all exist (they were
written atomically, so existing means complete) and redoes the rest, but only when
the folder's manifest names the same model (sha256 of the file) and the same fit: a
folder never ends up holding masks from two models. ``--overwrite`` starts the
folder over under the new model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..card import sha256_file

MANIFEST_NAME = ".fcnx-predict.json"


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


def claim_folder(out: Path, manifest: Manifest, overwrite: bool) -> bool:
    """Make ``out`` this model's folder. Returns True when existing outputs may be kept
    (resume), False when everything is to be redone (new folder or --overwrite)."""
    previous = read_manifest(out)
    if previous is not None and not previous.same_model(manifest) and not overwrite:
        raise ValueError(
            f"{out} holds outputs of another model ({previous.model}, sha256 {previous.model_sha256[:12]}, "
            f"fit {previous.fit}); this run is {manifest.model} (sha256 {manifest.model_sha256[:12]}, fit "
            f"{manifest.fit}). Use another -o folder, or --overwrite to replace them"
        )
    if previous is None and not overwrite and out.is_dir() and any(out.iterdir()):
        # outputs without a manifest: not ours to mix with
        raise ValueError(
            f"{out} is not empty and was not written by fcnx predict; use another -o folder, or --overwrite"
        )
    atomic_write_text(out / MANIFEST_NAME, json.dumps(asdict(manifest), indent=2) + "\n")
    return previous is not None and not overwrite


def remove_stale_temp_files(out: Path) -> int:
    """Delete the temp files a killed run left behind (``atomic_path`` names them
    ``.NAME.<random>.tmp``); returns how many."""
    removed = 0
    for root, _, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
