from __future__ import annotations

from pathlib import Path

import onnx

from fcnx.export.ceiling_models import write_ceiling_models
from fcnx.runtime.bench.ceiling import ceiling_model_path


def test_committed_ceiling_models_are_what_the_generator_writes(tmp_path: Path) -> None:
    written = write_ceiling_models(tmp_path)
    assert [p.name for p in written] == ["matmul_fp32.onnx", "matmul_fp16.onnx"]
    for path in written:
        committed = ceiling_model_path(path.stem.removeprefix("matmul_"))
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from what fcnx.export.ceiling_models writes; regenerate it with: "
            "python -m fcnx.export.ceiling_models runtime/data"
        )
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        dims = [
            [d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)
        ]
        assert dims == [["M", "K"], ["K", "N"], ["M", "N"]]
