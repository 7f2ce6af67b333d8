from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcnx.runtime.atomic import atomic_path, atomic_write_text


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["out.txt"]
    assert target.stat().st_mode & 0o777 != 0o600  # normal permissions, not mkstemp's


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_files_get_the_processs_umask_and_importing_fcnx_does_not_change_it(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    code = (
        "import os; os.umask(0o027); import fcnx.runtime; from fcnx.runtime.atomic import atomic_write_text; "
        f"atomic_write_text({str(target)!r}, 'x'); print(oct(os.umask(0o022)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "0o27"  # the umask the process set, untouched by fcnx
    assert target.stat().st_mode & 0o777 == 0o640
