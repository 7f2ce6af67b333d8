"""``OUT/.fcnx-predict.json``: which model wrote the masks in an output folder.

A rerun into the same folder skips every input whose outputs all exist (they were
written atomically, so existing means complete) and redoes the rest, but only when
the folder's manifest names the same model (sha256 of the file) and the same fit: a
folder never ends up holding masks from two models. ``--overwrite`` with another
model first deletes exactly the outputs the old one was asked to write
(``OUT/.fcnx-predict.outputs.jsonl``, written before any of them), then starts afresh:
only regular files (and the ``.zarr`` folders of array inputs, with what an unfinished
write of them left beside them), only below OUT (links resolved), only names of fcnx
outputs; a list that says anything else is refused whole, before anything is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from ..arrays.tiff_stack import PARTS
from ..arrays.writers import progress_paths
from ..arrays.zarr_bands import PARTIAL
from ..atomic import atomic_write_text, is_temp_name
from ..card import sha256_file
from ..names import is_os_name, shown
from .lock import LOCK_NAME, OWNER_NAME
from .outputs import is_output_name

MANIFEST_NAME = ".fcnx-predict.json"
# every output the folder's model was asked to write: a header line, then one JSON string
# per output (ASCII escapes: any bytes of a name round-trip, no name spans two lines)
OUTPUTS_NAME = ".fcnx-predict.outputs.jsonl"
LIST_HEADER = {"fcnx": "predict outputs", "version": 2}
LEGACY_OUTPUTS_NAME = ".fcnx-predict.outputs"  # version 1: one name per line (ambiguous)
OWN_FILES = {MANIFEST_NAME, OUTPUTS_NAME, LOCK_NAME, OWNER_NAME}


@dataclass(frozen=True)
class Manifest:
    model: str
    model_sha256: str
    fit: str

    def same_model(self, other: Manifest) -> bool:
        return self.model_sha256 == other.model_sha256 and self.fit == other.fit


def fingerprint(model: str | Path) -> str:
    """sha256 of the model file (a run folder: its best.keras; a deploy folder: its
    artifact's files, model.*, so a deploy choosing the same artifact again is the same model)."""
    path = Path(model)
    if path.is_dir() and not (path / "best.keras").is_file():
        files = sorted(p for p in path.glob("model.*") if p.is_file())
        if files:
            return hashlib.sha256("".join(f"{p.name} {sha256_file(p)}\n" for p in files).encode()).hexdigest()
    return sha256_file(path / "best.keras" if path.is_dir() else path)


def read_manifest(out: Path) -> Manifest | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, RecursionError, UnicodeDecodeError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
        raise ValueError(
            f"{path}: unreadable fcnx manifest ({reason}); remove it or use --overwrite"
        ) from None


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


def _list_error(out: Path, detail: str) -> ValueError:
    return ValueError(
        f"{out / OUTPUTS_NAME}: {detail}; nothing was deleted. This list says what --overwrite may "
        "delete: use another -o folder, or empty this one yourself"
    )


def _checked_entry(out: Path, line: str, number: int) -> str:
    """One line of the list: a JSON string naming a relative path below OUT that is an output
    fcnx writes (a mask, overlay or probabilities file), in any bytes the OS allows."""
    try:
        rel = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise _list_error(out, f"line {number} is not a JSON string") from None
    if not isinstance(rel, str) or not rel or not is_os_name(rel):
        raise _list_error(out, f"line {number} is not a file name")
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise _list_error(out, f"line {number} ({shown(rel)}) is not a path inside {out}")
    if not is_output_name(parts[-1]):
        raise _list_error(out, f"line {number} ({shown(rel)}) is not a file fcnx predict writes")
    return rel


def recorded_outputs(out: Path) -> list[str]:
    """The outputs (relative POSIX paths, any bytes) this folder's model was asked to
    write, in order. A list that does not parse, or names anything but an output inside
    OUT, is refused with one line (ValueError): nothing is ever deleted on its word."""
    if (out / LEGACY_OUTPUTS_NAME).exists():
        raise ValueError(
            f"{out / LEGACY_OUTPUTS_NAME}: the outputs list of an older fcnx (one name per line, which a "
            "name holding a newline makes ambiguous): fcnx will not delete on its word; use another -o "
            "folder, or empty this one yourself"
        )
    path = out / OUTPUTS_NAME
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise _list_error(out, "not an fcnx outputs list (not ASCII JSON lines)") from None
    if lines[-1] == "":
        lines.pop()
    try:
        header = json.loads(lines[0]) if lines else None
    except (json.JSONDecodeError, RecursionError):
        header = None
    if header != LIST_HEADER:
        raise _list_error(out, "not an fcnx outputs list (its first line is not the fcnx header)")
    return [_checked_entry(out, line, number) for number, line in enumerate(lines[1:], start=2)]


def record_outputs(out: Path, paths: list[Path]) -> None:
    """Add the outputs a run is about to write to the folder's list, before it writes any:
    the list is always a superset of what the folder's model wrote."""
    known = recorded_outputs(out)
    seen = set(known)
    new = [rel for rel in (p.relative_to(out).as_posix() for p in paths) if rel not in seen]
    if new or not (out / OUTPUTS_NAME).is_file():
        lines = [json.dumps(LIST_HEADER), *(json.dumps(rel) for rel in [*known, *new])]
        atomic_write_text(out / OUTPUTS_NAME, "".join(f"{line}\n" for line in lines))


def remove_recorded_outputs(out: Path) -> int:
    """Delete the outputs the list names (those that exist) and the list; returns how many.
    Every entry is checked first (a relative path to an output, whose folder, links
    resolved, is OUT or below it); one that is not stops it all before anything is deleted.
    Only regular files are deleted (a link of an output's name is left alone)."""
    entries = recorded_outputs(out)
    root = os.path.realpath(out)
    targets = []
    for rel in entries:
        target = out / rel
        folder = os.path.realpath(target.parent)
        if folder != root and not folder.startswith(root + os.sep):
            raise _list_error(out, f"{shown(rel)} leads outside {out} (through a link to {shown(folder)})")
        targets.append(target)
    removed = remove_outputs(targets)
    (out / OUTPUTS_NAME).unlink(missing_ok=True)
    return removed


def remove_outputs(targets: list[Path]) -> int:
    """Delete these outputs (paths below OUT that fcnx plans or recorded) and what an
    unfinished write of an array output left beside each; returns how many outputs."""
    removed = 0
    for target in targets:
        for progress in progress_paths(target):  # an array output's unfinished write
            _remove(progress)
        removed += _remove(target)
    return removed


def _remove(target: Path) -> int:
    """A regular file, or an array output's folder (never a link, never through one)."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(mode):
        target.unlink()
        return 1
    if stat.S_ISDIR(mode) and target.name.endswith((".zarr", PARTS, PARTIAL)):
        shutil.rmtree(target)  # rmtree never follows a link inside the tree
        return 1
    return 0


def remove_stale_temp_files(out: Path) -> int:
    """Delete the temp files killed runs left behind (``atomic_path`` names them
    ``.NAME.[RUN-]<12 hex>.tmp``; nothing of another shape is touched, and linked folders
    are not entered); returns how many. Only call it holding the folder's lock: then no
    live run can own one. A file that is already gone is not an error."""
    removed = 0
    for root, _, files in os.walk(out):
        for name in files:
            if is_temp_name(name) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed
