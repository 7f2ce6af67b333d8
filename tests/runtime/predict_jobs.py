"""The PredictConfig the predict tests build: a model, its inputs, an output folder, no progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnx.runtime.predict.config import PredictConfig


def predict_config(model: Path, inputs: list[Any], out: Path, **kw: Any) -> PredictConfig:
    return PredictConfig(model=str(model), inputs=tuple(str(i) for i in inputs), out=str(out),
                         progress=False, **kw)  # fmt: skip
