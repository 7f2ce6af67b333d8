"""What a deploy computed, kept by what it depends on, so a killed deploy's rerun continues
and a repeated one takes seconds.

``CACHE/<keras sha256>/<split digest>/`` holds each artifact's export
(``exports/<artifact>-<options digest>/``: the files, then ``result.json`` written last,
atomically: an export without it is not done and is made again) and each measurement
(``measure/<machine digest>-<rows digest>.json``: every row of one side-by-side run, so
rows are only ever compared with rows timed beside them). The machine digest covers the
CPU, its flags, the cores, the GPUs and the library versions: another machine (or an
upgraded onnxruntime) measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import atomic_write_text


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fcnx" / "deploy"


def digest(value: Any) -> str:
    """A stable digest of any JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def machine_key(machine: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``describe_machine()`` a speed depends on."""
    return {k: machine.get(k) for k in ("cpu", "cores", "cpu_flags", "gpus", "versions")}


def _read_json(path: Path) -> Any:
    """What ``path`` holds as JSON, or None when it is missing or unreadable (made again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class DeployCache:
    def __init__(self, root: Path, keras_sha256: str, split_digest: str) -> None:
        self.base = Path(root) / keras_sha256[:24] / split_digest[:24]

    def export_dir(self, artifact: str, options: dict[str, Any]) -> Path:
        return self.base / "exports" / f"{artifact}-{digest(options)[:12]}"

    @staticmethod
    def export_result(folder: Path) -> dict[str, Any] | None:
        """The recorded result of a finished export in ``folder``, or None."""
        result = _read_json(folder / "result.json")
        return result if isinstance(result, dict) else None

    @staticmethod
    def finish_export(folder: Path, result: dict[str, Any]) -> None:
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1, sort_keys=True, default=str))

    def measurement_path(self, machine: dict[str, Any], rows: Any) -> Path:
        return self.base / "measure" / f"{digest(machine_key(machine))[:12]}-{digest(rows)[:12]}.json"

    def measurement(self, machine: dict[str, Any], rows: Any) -> list[dict[str, Any]] | None:
        found = _read_json(self.measurement_path(machine, rows))
        return found if isinstance(found, list) else None

    def keep_measurement(self, machine: dict[str, Any], rows: Any, measured: list[dict[str, Any]]) -> None:
        path = self.measurement_path(machine, rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(measured, indent=1, sort_keys=True))
