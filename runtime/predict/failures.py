"""``failures.jsonl``: one JSON object per file that could not be read, segmented or
written, with the stage and the one-line reason; the run goes on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..images import ImageError

Report = Callable[[str, str, str], None]  # a runner's word on one file: (path, stage, error or "" if written)


def describe_error(exc: BaseException) -> str:
    """The one-line reason recorded for a failed file."""
    if isinstance(exc, ImageError):
        return exc.reason
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


class FailureLog:
    """Streamed to a temp file in OUT and put in place by ``close`` (also after an interrupt)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "failures.jsonl"
        self._context = atomic_path(self.path)
        self._tmp = self._context.__enter__()
        self._file = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.count = 0

    def record(self, path: str, stage: str, reason: str, regions: list[dict[str, Any]] | None = None) -> None:
        """One failed input; ``regions``: the bounds and reason of each of its regions that
        failed (``fcnx predict --ray`` over an array input)."""
        line: dict[str, Any] = {"path": path, "stage": stage, "reason": reason}
        if regions:
            line["regions"] = regions
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()
        self._context.__exit__(None, None, None)
