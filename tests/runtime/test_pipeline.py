"""fcnx predict over real files with a real onnxruntime session: bad files are recorded
and skipped without touching the good ones, runs resume, folders never mix models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from fcnx.runtime.backends.registry import load
from fcnx.runtime.cli import main
from fcnx.runtime.predict.job import EXIT_FAILURES, predict_folder
from fcnx.runtime.predict.manifest import MANIFEST_NAME

from .image_files import assert_threshold_masks, bad_files, good_files, masks, png
from .predict_jobs import predict_config


def test_bad_files_are_recorded_and_good_masks_match_a_clean_run(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    sizes = good_files(tmp_path / "clean")
    clean = predict_folder(
        predict_config(threshold_onnx, [tmp_path / "clean"], tmp_path / "out_clean", batch=2)
    )
    assert clean["counts"] == {"total": 5, "written": 5, "skipped": 0, "failed": 0}

    good_files(tmp_path / "mixed")
    reasons = bad_files(tmp_path / "mixed")
    mixed = predict_folder(
        predict_config(threshold_onnx, [tmp_path / "mixed"], tmp_path / "out_mixed", batch=2)
    )
    assert mixed["counts"] == {"total": 9, "written": 5, "skipped": 0, "failed": 4}
    assert mixed["backend"] == "ort-cpu" and mixed["provider"] == "CPUExecutionProvider"

    assert masks(tmp_path / "out_clean") == masks(tmp_path / "out_mixed")  # byte-identical
    assert_threshold_masks(tmp_path / "clean", tmp_path / "out_clean", sizes)

    lines = (tmp_path / "out_mixed" / "failures.jsonl").read_text().splitlines()
    failures = {Path(r["path"]).name: r for r in map(json.loads, lines)}
    assert set(failures) == set(reasons)
    for name, word in reasons.items():
        assert failures[name]["stage"] == "read" and word in failures[name]["reason"], failures[name]
    assert not list((tmp_path / "out_mixed").rglob(".*.tmp"))
    summary = json.loads((tmp_path / "out_mixed" / "summary.json").read_text())
    assert summary["counts"]["failed"] == 4 and summary["versions"]["fcnx"]


def test_palette_png_npy_and_overlay_outputs(threshold_onnx: Path, tmp_path: Path) -> None:
    good_files(tmp_path / "in")
    predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "png", overlay=True))
    mask = Image.open(tmp_path / "png" / "sub" / "odd.png")
    assert mask.mode == "P" and mask.getpalette()[:6] == [0, 0, 0, 255, 255, 255]
    overlay = cv2.imread(str(tmp_path / "png" / "sub" / "odd.overlay.jpg"))
    assert overlay.shape == (45, 77, 3)

    predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "npy", format="npy"))
    array = np.load(tmp_path / "npy" / "sub" / "odd.npy")
    np.testing.assert_array_equal(array, np.array(mask))


class _StopAfter:
    """The real backend, interrupted (as by Ctrl-C) at its n-th batch."""

    def __init__(self, backend: Any, batches: int) -> None:
        self._backend, self._left = backend, batches

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._left -= 1
        if self._left < 0:
            raise KeyboardInterrupt
        return self._backend.infer(batch)  # type: ignore[no-any-return]

    def infer_stream(self, batches: Any) -> Any:
        for batch in batches:
            yield self.infer(batch)


def test_an_interrupted_run_resumes_without_redoing_finished_files(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i in range(10):
        (tmp_path / "in" / f"{i:02d}.png").write_bytes(png(rng.integers(0, 256, (64, 64), np.uint8)))
    out = tmp_path / "out"
    config = predict_config(threshold_onnx, [tmp_path / "in"], out, batch=2)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(config, backend=_StopAfter(load(threshold_onnx, "ort-cpu"), batches=2))
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 2 <= len(first) < 10
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    (out / ".05.png.a1b2c3d4-0123456789ab.tmp").write_bytes(b"half a mask")  # what a kill -9 mid-write leaves
    (out / ".05.png.mine.tmp").write_bytes(b"the user's")  # not a name fcnx makes: never touched

    again = predict_folder(config)
    assert again["counts"]["skipped"] == len(first)
    assert again["counts"]["written"] == 10 - len(first)
    assert again["stale_temp_files_removed"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in first} == first
    assert len(list(out.glob("*.png"))) == 10 and [p.name for p in out.glob(".*.tmp")] == [".05.png.mine.tmp"]


def test_a_folder_never_mixes_models(threshold_onnx: Path, tiny_onnx_fixed: Path, tmp_path: Path) -> None:
    good_files(tmp_path / "in")
    out = tmp_path / "out"
    predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], out))
    with pytest.raises(ValueError, match="holds outputs of another model"):
        predict_folder(predict_config(tiny_onnx_fixed, [tmp_path / "in"], out))
    redone = predict_folder(predict_config(tiny_onnx_fixed, [tmp_path / "in"], out, overwrite=True))
    assert redone["counts"]["written"] == 5 and redone["batch"] == 3
    assert json.loads((out / MANIFEST_NAME).read_text())["model"] == str(tiny_onnx_fixed)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not written by fcnx predict"):
        predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "other"))


def test_cli_exit_status_says_completed_with_failures(
    threshold_onnx: Path, tmp_path: Path, capsys: Any
) -> None:
    good_files(tmp_path / "in")
    (tmp_path / "in" / "grey.jpg").write_bytes(png(np.zeros((64, 64), np.uint8)))  # same output as grey.png
    code = main(
        ["predict", str(threshold_onnx), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]
    )
    assert code == EXIT_FAILURES
    text = capsys.readouterr().out
    assert "5 written, 0 already done, 1 failed of 6" in text and "failures.jsonl" in text
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert failure["stage"] == "output" and "is also the mask of" in failure["reason"]

    assert main(["predict", str(threshold_onnx), str(tmp_path / "missing"), "-o", str(tmp_path / "o2")]) == 1
    assert "no such file, folder or matching pattern" in capsys.readouterr().err


def test_write_failures_are_recorded_per_file(threshold_onnx: Path, tmp_path: Path) -> None:
    good_files(tmp_path / "in")
    out = tmp_path / "out"
    predict_folder(predict_config(threshold_onnx, [tmp_path / "in" / "grey.png"], out))  # claims the folder
    (out / "rgba.png").mkdir()  # a folder where a mask must go
    summary = predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], out))
    assert summary["counts"] == {"total": 5, "written": 3, "skipped": 1, "failed": 1}
    failure = json.loads((out / "failures.jsonl").read_text())
    assert failure["stage"] == "write" and failure["path"].endswith("rgba.png")


def test_the_same_model_with_another_fit_is_another_model(tiny_onnx: Path, tmp_path: Path) -> None:
    good_files(tmp_path / "in")
    out = tmp_path / "out"
    assert predict_folder(predict_config(tiny_onnx, [tmp_path / "in"], out, fit="resize"))["fit"] == "resize"
    with pytest.raises(
        ValueError, match=r"holds outputs of another model .*fit resize\); this run is .*fit pad\)"
    ):
        predict_folder(predict_config(tiny_onnx, [tmp_path / "in"], out, fit="pad"))
    again = predict_folder(predict_config(tiny_onnx, [tmp_path / "in"], out, fit="resize"))
    assert again["counts"]["skipped"] == 5 and again["counts"]["written"] == 0
