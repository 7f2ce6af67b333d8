"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A reader (or a resumed run) sees either the old file or the complete new one, never
half of one. Used for every file fcnx writes: cards, masks, ONNX, engines, and (through
``replace_durably``) the training checkpoints Keras writes itself.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import re
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

# What fcnx names its temps: ``.NAME.[TAG-]<12 hex>SUFFIX`` beside NAME (files from
# ``atomic_path``, folders from ``temp_folder``). Clean-up removes only names of this
# shape: a user's own ``.NAME.swp`` or ``.NAME.bak`` beside an fcnx file is never touched.
_TEMP_TAIL = r"\.(?:[0-9A-Za-z_]+-)?[0-9a-f]{12}(?:\.[0-9A-Za-z_.]+)?"
_ANY_TEMP = re.compile(r"\..+" + _TEMP_TAIL, re.DOTALL)


def is_temp_name(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a temp fcnx creates (for the file named ``of``, when given)."""
    if of is None:
        return _ANY_TEMP.fullmatch(name) is not None
    return re.fullmatch(r"\." + re.escape(of) + _TEMP_TAIL, name, re.DOTALL) is not None


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None, tag: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path``, on error it
    is removed. ``suffix`` keeps an extension writers insist on (Keras wants ``.keras``);
    ``tag`` goes into the temp's name (fcnx predict: the run's id).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path, suffix if suffix is not None else ".tmp", tag)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_durably(tmp: str | Path, path: str | Path) -> None:
    """Put the finished ``tmp`` in place of ``path``: its bytes reach the disk first, so
    after a power cut ``path`` is the old file or the whole new one, never an empty one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fault_point("before-replace", Path(path))
    os.replace(tmp, path)
    _fault_point("after-replace", Path(path))


# Fault injection for the reliability tests: FCNX_KILL_AT="before-replace:GLOB" (or
# "after-replace:GLOB", optionally "#N" for the N-th matching write) makes this process
# SIGKILL itself at that moment of a write whose file name matches GLOB. A random kill
# rarely lands inside a millisecond-long write; this lands exactly there. Unset: one
# environment lookup per write.
KILL_AT = "FCNX_KILL_AT"
_fault_lock = threading.Lock()
_fault_hits: dict[str, int] = {}


def _fault_point(moment: str, path: Path) -> None:
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    when, _, pattern = spec.partition(":")
    pattern, _, nth = pattern.partition("#")
    if when != moment or not fnmatch.fnmatch(path.name, pattern):
        return
    with _fault_lock:
        _fault_hits[spec] = _fault_hits.get(spec, 0) + 1
        if _fault_hits[spec] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temps(path: str | Path) -> int:
    """Remove what killed writes of ``path`` left beside it: the temp files and temp folders
    fcnx names ``.NAME.[TAG-]<12 hex>[SUFFIX]`` (nothing else, however it is named); returns
    how many. A link of that name is removed as a link, never followed. A writer calls it
    before it writes ``path`` again (a SIGKILL runs no clean-up of its own)."""
    path = Path(path)
    removed = 0
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*") if path.parent.is_dir() else ():
        if not is_temp_name(stale.name, of=path.name):
            continue
        remove_entry(stale)
        removed += 1
    return removed


def remove_entry(entry: Path) -> None:
    """Remove a file, a link (the link only) or a real folder (its tree, links in it not
    followed); gone already is fine."""
    try:
        mode = entry.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def temp_folder(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty folder ``.NAME.<12 hex>SUFFIX`` beside ``path`` (mode 0700), named as
    ``remove_stale_temps(path)`` recognises it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return folder


def atomic_write_bytes(path: str | Path, data: bytes, tag: str = "") -> None:
    with atomic_path(path, tag=tag) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _create_temp(path: Path, suffix: str, tag: str) -> Path:
    """A new empty ``.NAME.[TAG-]<random><suffix>`` next to ``path``, created exclusively with
    mode 0666 so the process's umask applies (as for any file the user's programs write)."""
    while True:
        tmp = path.with_name(f".{path.name}.{tag + '-' if tag else ''}{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
