"""fcnx predict over real files with a real onnxruntime session: bad files are recorded
and skipped without touching the good ones, runs resume, folders never mix models."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from fcnx.runtime.cli import main
from fcnx.runtime.load import load
from fcnx.runtime.manifest import MANIFEST_NAME
from fcnx.runtime.pipeline import EXIT_FAILURES, PredictConfig, predict_folder


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def _bomb() -> bytes:
    """A valid small PNG whose header claims 20000 x 20000 pixels."""
    data = bytearray(_png(np.zeros((8, 8), np.uint8)))
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _exif_rotated_jpeg(array: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def _good_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Good images of every kind -> the mask size each must get."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    grey = rng.integers(0, 256, (64, 64), np.uint8)
    (folder / "grey.png").write_bytes(_png(grey))
    (folder / "sub" / "odd.png").write_bytes(_png(rng.integers(0, 256, (45, 77), np.uint8)))
    (folder / "deep16.png").write_bytes(_png(rng.integers(0, 65536, (64, 48), np.uint16)))
    rgba = rng.integers(0, 256, (40, 64, 4), np.uint8)
    (folder / "rgba.png").write_bytes(_png(rgba))
    (folder / "photo.jpg").write_bytes(_exif_rotated_jpeg(rng.integers(0, 256, (32, 64, 3), np.uint8)))
    return {"grey.png": (64, 64), "sub/odd.png": (45, 77), "deep16.png": (64, 48), "rgba.png": (40, 64),
            "photo.jpg": (64, 32)}  # fmt: skip


def _bad_files(folder: Path) -> dict[str, str]:
    """Bad files -> a word their failure reason must contain."""
    good = _png(np.zeros((64, 64), np.uint8))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "bomb.png").write_bytes(_bomb())
    return {"empty.png": "empty", "truncated.png": "decodable", "notes.png": "decodable", "bomb.png": "limit"}


def _config(model: Path, inputs: list[Path], out: Path, **kw: Any) -> PredictConfig:
    return PredictConfig(model=str(model), inputs=tuple(str(i) for i in inputs), out=str(out),
                         progress=False, **kw)  # fmt: skip


def _masks(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_bad_files_are_recorded_and_good_masks_match_a_clean_run(tiny_onnx: Path, tmp_path: Path) -> None:
    sizes = _good_files(tmp_path / "clean")
    clean = predict_folder(_config(tiny_onnx, [tmp_path / "clean"], tmp_path / "out_clean", batch=2))
    assert clean["counts"] == {"total": 5, "written": 5, "skipped": 0, "failed": 0}

    _good_files(tmp_path / "mixed")
    reasons = _bad_files(tmp_path / "mixed")
    mixed = predict_folder(_config(tiny_onnx, [tmp_path / "mixed"], tmp_path / "out_mixed", batch=2))
    assert mixed["counts"] == {"total": 9, "written": 5, "skipped": 0, "failed": 4}
    assert mixed["backend"] == "ort-cpu" and mixed["provider"] == "CPUExecutionProvider"

    good = _masks(tmp_path / "out_clean")
    assert good == _masks(tmp_path / "out_mixed")  # byte-identical
    for rel, size in sizes.items():
        mask = np.array(Image.open(tmp_path / "out_clean" / Path(rel).with_suffix(".png")))
        assert mask.shape == size, rel

    lines = (tmp_path / "out_mixed" / "failures.jsonl").read_text().splitlines()
    failures = {Path(r["path"]).name: r for r in map(json.loads, lines)}
    assert set(failures) == set(reasons)
    for name, word in reasons.items():
        assert failures[name]["stage"] == "read" and word in failures[name]["reason"], failures[name]
    assert not list((tmp_path / "out_mixed").rglob(".*.tmp"))
    summary = json.loads((tmp_path / "out_mixed" / "summary.json").read_text())
    assert summary["counts"]["failed"] == 4 and summary["versions"]["fcnx"]


def test_palette_png_npy_and_overlay_outputs(tiny_onnx: Path, tmp_path: Path) -> None:
    _good_files(tmp_path / "in")
    predict_folder(_config(tiny_onnx, [tmp_path / "in"], tmp_path / "png", overlay=True))
    mask = Image.open(tmp_path / "png" / "sub" / "odd.png")
    assert mask.mode == "P" and mask.getpalette()[:6] == [0, 0, 0, 255, 255, 255]
    overlay = cv2.imread(str(tmp_path / "png" / "sub" / "odd.overlay.jpg"))
    assert overlay.shape == (45, 77, 3)

    predict_folder(_config(tiny_onnx, [tmp_path / "in"], tmp_path / "npy", format="npy"))
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


def test_an_interrupted_run_resumes_without_redoing_finished_files(tiny_onnx: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i in range(10):
        (tmp_path / "in" / f"{i:02d}.png").write_bytes(_png(rng.integers(0, 256, (64, 64), np.uint8)))
    out = tmp_path / "out"
    config = _config(tiny_onnx, [tmp_path / "in"], out, batch=2)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(config, backend=_StopAfter(load(tiny_onnx, "ort-cpu"), batches=2))
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 2 <= len(first) < 10
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    (out / ".05.png.a1b2c3.tmp").write_bytes(b"half a mask")  # what a kill -9 mid-write leaves

    again = predict_folder(config)
    assert again["counts"]["skipped"] == len(first)
    assert again["counts"]["written"] == 10 - len(first)
    assert again["stale_temp_files_removed"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in first} == first
    assert len(list(out.glob("*.png"))) == 10 and not list(out.glob(".*.tmp"))


def test_a_folder_never_mixes_models(tiny_onnx: Path, tiny_onnx_fixed: Path, tmp_path: Path) -> None:
    _good_files(tmp_path / "in")
    out = tmp_path / "out"
    predict_folder(_config(tiny_onnx, [tmp_path / "in"], out))
    with pytest.raises(ValueError, match="holds outputs of another model"):
        predict_folder(_config(tiny_onnx_fixed, [tmp_path / "in"], out))
    redone = predict_folder(_config(tiny_onnx_fixed, [tmp_path / "in"], out, overwrite=True))
    assert redone["counts"]["written"] == 5 and redone["batch"] == 3
    assert json.loads((out / MANIFEST_NAME).read_text())["model"] == str(tiny_onnx_fixed)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not written by fcnx predict"):
        predict_folder(_config(tiny_onnx, [tmp_path / "in"], tmp_path / "other"))


def test_cli_exit_status_says_completed_with_failures(tiny_onnx: Path, tmp_path: Path, capsys: Any) -> None:
    _good_files(tmp_path / "in")
    (tmp_path / "in" / "grey.jpg").write_bytes(_png(np.zeros((64, 64), np.uint8)))  # same output as grey.png
    code = main(
        ["predict", str(tiny_onnx), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]
    )
    assert code == EXIT_FAILURES
    text = capsys.readouterr().out
    assert "5 written, 0 already done, 1 failed of 6" in text and "failures.jsonl" in text
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert failure["stage"] == "output" and "same output" in failure["reason"]

    assert main(["predict", str(tiny_onnx), str(tmp_path / "missing"), "-o", str(tmp_path / "o2")]) == 1
    assert "no such file, folder or matching pattern" in capsys.readouterr().err


def test_write_failures_are_recorded_per_file(tiny_onnx: Path, tmp_path: Path) -> None:
    _good_files(tmp_path / "in")
    out = tmp_path / "out"
    predict_folder(_config(tiny_onnx, [tmp_path / "in" / "grey.png"], out))  # claims the folder
    (out / "rgba.png").mkdir()  # a folder where a mask must go
    summary = predict_folder(_config(tiny_onnx, [tmp_path / "in"], out))
    assert summary["counts"] == {"total": 5, "written": 3, "skipped": 1, "failed": 1}
    failure = json.loads((out / "failures.jsonl").read_text())
    assert failure["stage"] == "write" and failure["path"].endswith("rgba.png")
