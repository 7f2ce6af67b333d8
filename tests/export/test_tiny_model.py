from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnx.export.tiny_model import CARD, FILENAME, threshold_probs, write_tiny_model
from fcnx.runtime import load
from fcnx.runtime.data import FOLDER


def test_committed_threshold_model_is_what_the_generator_writes(tmp_path: Path) -> None:
    written = write_tiny_model(tmp_path)
    committed = FOLDER / FILENAME
    assert committed.read_bytes() == written.read_bytes(), (
        f"{committed} differs from what fcnx.export.tiny_model writes; regenerate it with: "
        "python -m fcnx.export.tiny_model runtime/data"
    )


def test_threshold_model_computes_what_it_says() -> None:
    with load(FOLDER / FILENAME, "ort-cpu") as backend:
        assert backend.card == CARD and backend.input_hw == (None, None) and backend.max_batch is None
        images = np.arange(256, dtype=np.uint8).reshape(2, 8, 16, 1)
        out = backend.infer(images)
    np.testing.assert_array_equal(out["mask"], (images[..., 0] > 127).astype(np.uint8))
    np.testing.assert_allclose(out["probs"], threshold_probs(images), atol=1e-6)
