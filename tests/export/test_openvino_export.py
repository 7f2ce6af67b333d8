"""fcnx export openvino on the tiny trained model: FP32, BF16 and NNCF INT8 IR pairs proven
against Keras by their budgets through ov-cpu, a refusal writes nothing, the card and the
inference precision live in the IR's rt_info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnx.export import parity
from fcnx.export.onnx_export import ExportError, ParityError
from fcnx.export.openvino_export import OpenvinoExportConfig, export_openvino
from fcnx.runtime.backends.ov_ir import bin_path, read_fcnx_info
from fcnx.runtime.backends.registry import load
from fcnx.runtime.cli import main

pytest.importorskip("openvino", reason='openvino is not installed: pip install "fcnx[openvino-export]"')


def _export(run: Path, out: Path, **options: object) -> dict[str, object]:
    return export_openvino(OpenvinoExportConfig(model=str(run), out=str(out), **options))  # type: ignore[arg-type]


def test_fp32_export_is_within_the_fp32_budget(tiny_run: Path, synthetic_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.xml"
    result = _export(tiny_run, out, data=str(synthetic_data))
    row = result["parity"][0]  # type: ignore[index]
    assert row.passed and row.precision == "fp32" and row.max_abs_prob <= 1e-4
    info = read_fcnx_info(out)
    assert info["inference_precision"] == "f32" and len(info["bin_sha256"]) == 64
    with load(out) as backend:
        assert backend.card.precision == "fp32" and backend.card.export["format"] == "openvino"
        assert backend.card.export["gflops_per_image"] > 0  # counted on the ONNX it came from
        assert "openvino" in backend.card.versions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]  # no temps left
    with pytest.raises(ExportError, match="already exists; pass --force"):
        _export(tiny_run, out)


def test_bf16_export_is_judged_by_the_half_precision_budget(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.bf16.xml"
    try:
        result = _export(tiny_run, out, precision="bf16")
    except ParityError as exc:  # a CPU without BF16 cannot prove it: nothing is written
        assert "no BF16 support" in str(exc.rows[0].failures)
        assert not out.exists() and not bin_path(out).exists()
        return
    row = result["parity"][0]  # type: ignore[index]
    assert row.passed and row.precision == "bf16"
    assert row.max_abs_prob > parity.BUDGETS["fp32"].max_abs_prob  # bfloat16 ran, not FP32 quietly
    assert parity.BUDGETS["bf16"] is parity.BUDGETS["fp16"]
    assert read_fcnx_info(out)["inference_precision"] == "bf16"


def test_an_export_over_budget_writes_nothing(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tight = parity.Budget(max_abs_prob=1e-12, mask_agreement=1.0, miou_change=None)
    monkeypatch.setitem(parity.BUDGETS, "fp32", tight)
    out = tmp_path / "over.xml"
    with pytest.raises(ParityError, match="not written, parity over budget: max abs prob error"):
        _export(tiny_run, out)
    assert list(tmp_path.iterdir()) == []


def test_int8_export_through_the_command(
    tiny_run: Path, synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.int8.xml"
    args = ["export", "openvino", str(tiny_run), "-o", str(out), "--precision", "int8"]
    assert (
        main([*args, "--calib", str(synthetic_data), "--calib-count", "6", "--data", str(synthetic_data)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "mask agree" in printed and " ok" in printed and f"wrote {bin_path(out)} and {out}" in printed
    with load(out) as backend:
        card = backend.card
        assert card.precision == "int8" and backend.precision_run == "fp32"  # the float parts stay f32
        assert card.export["calibration"]["images"] == 6
        floats = card.export["calibration"]["float_nodes"]  # --keep-float decoder, the default
        assert any("transpose" in name for name in floats) and any("score" in name for name in floats)
        masks = backend.infer(np.zeros((2, 64, 64, 1), np.uint8))["mask"]
    assert masks.shape == (2, 64, 64) and masks.dtype == np.uint8
    assert bin_path(out).stat().st_size < 0.5 * 4 * 4_996_326  # int8 weights, not float ones
    assert main([*args, "--calib", str(synthetic_data), "--ignore", "no_such_node", "--force"]) == 1
    assert "--ignore: no OpenVINO nodes named no_such_node" in capsys.readouterr().err


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"NAME\.xml"):
        OpenvinoExportConfig(model="m", out=str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="needs --calib"):
        OpenvinoExportConfig(model="m", out=str(tmp_path / "m.xml"), precision="int8")
    with pytest.raises(ExportError, match="for --precision int8"):
        OpenvinoExportConfig(model="m", out=str(tmp_path / "m.xml"), calib="x")
