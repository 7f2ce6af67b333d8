from __future__ import annotations

from pathlib import Path

import pytest

from fcnx.runtime.cli import main


def test_export_onnx_command_prints_the_parity_table(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "onnx", str(tiny_run), "-o", str(out), "--output", "mask", "--batch", "3"]) == 0
    printed = capsys.readouterr().out
    assert "mask agree" in printed and " ok" in printed and f"wrote {out}" in printed
    assert out.is_file()
    assert main(["export", "onnx", str(tiny_run), "-o", str(out)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err


def test_export_onnx_bad_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.keras"
    bad.write_text("hello")
    assert main(["export", "onnx", str(bad), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "bad.keras: not a Keras .keras file" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()
