"""benchmarks/gpu_check.py is ready for its one call on a GPU machine: its --dry-run (the
CPU provider, tiny sizes) runs every check it can here and records the others as
skipped with the reason, writing its JSON and Markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_records_every_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {r["check"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["rows"]}
    assert (
        rows["environment"]["status"] == "ok" and "CPUExecutionProvider" in rows["environment"]["providers"]
    )
    for name in ("fcn2s fp32 ort-cpu", "fcn2s fp16 ort-cpu", "fixed-batch copy (cuda graphs on a GPU)"):
        assert rows[name]["status"] == "ok" and all(r["status"] == "ok" for r in rows[name]["rows"]), rows[
            name
        ]
    assert rows["fcn2s fp16 masks vs Keras"]["within_budget"] is True
    assert rows["matmul ceiling"]["cpu_fp32"]["peak_gflops"] > 0
    assert rows["keras on torch (GPU)"] == {"check": "keras on torch (GPU)", "status": "skipped",
                                            "reason": "dry run: no GPU", "seconds": 0.0}  # fmt: skip
    assert "| environment | ok |" in (tmp_path / "gpu_check.md").read_text()
