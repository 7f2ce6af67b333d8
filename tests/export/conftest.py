from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported once: FP32, dynamic batch, probs and mask."""
    from fcnx.export.onnx_export import OnnxExportConfig, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(OnnxExportConfig(model=str(tiny_run), out=str(out), data=str(synthetic_data)))
    return out
