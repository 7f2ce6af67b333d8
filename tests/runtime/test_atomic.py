from __future__ import annotations

import os
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
