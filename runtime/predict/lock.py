"""One run at a time per output folder: ``OUT/.fcnx-predict.lock``, held for the whole run.

The driver of a ``fcnx predict`` run (local or Ray) takes an exclusive ``flock`` on the
lock file (``filelock``) before it reads or writes anything in OUT, and gives it back
when the run ends; the kernel releases it when the process dies, however it dies. A
second run on the same folder is refused at once with who holds it (read from
``OUT/.fcnx-predict.owner``). Holding the lock is also what makes clean-up safe: the
temp files in OUT can only belong to runs that are gone.

Not protected: network file systems where ``flock`` is advisory or not shared between
machines (some NFS and SMB mounts); run one fcnx predict per folder there.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from ..atomic import atomic_write_text

LOCK_NAME = ".fcnx-predict.lock"
OWNER_NAME = ".fcnx-predict.owner"


class FolderInUse(ValueError):
    """Another fcnx predict holds the output folder."""


class OutputLock:
    """``with OutputLock(out) as lock:`` -- ``lock.run_id`` names this run's temp files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.run_id = secrets.token_hex(4)
        self._lock = FileLock(out / LOCK_NAME, timeout=0)

    def __enter__(self) -> OutputLock:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise FolderInUse(f"{self.out} is in use by another fcnx predict ({_owner(self.out)})") from None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        owner = {"pid": os.getpid(), "since": started, "run_id": self.run_id}
        atomic_write_text(self.out / OWNER_NAME, json.dumps(owner) + "\n")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        (self.out / OWNER_NAME).unlink(missing_ok=True)
        self._lock.release()


def check_owner(out: Path, run_id: str) -> None:
    """A RuntimeError unless the run ``run_id`` still holds ``out``: a Ray worker checks
    before each band it writes, so a worker of a killed driver never writes into a rerun's output."""
    try:
        owner = json.loads((out / OWNER_NAME).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != run_id:
        raise RuntimeError(f"{out} is no longer held by run {run_id} (its driver is gone); this region stops")


def _owner(out: Path) -> str:
    try:
        owner = json.loads((out / OWNER_NAME).read_text(encoding="utf-8"))
        return f"pid {owner['pid']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it is just starting"
