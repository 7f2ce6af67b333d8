"""fcnx predict on stacks, volumes and large planes (runtime/predict/volumes.py), end to
end with real files and real onnxruntime sessions: the shipped threshold model (a known
answer per pixel) and the tiny trained FCN (whose tiles really blend)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fcnx.runtime.predict import volumes
from fcnx.runtime.predict.job import predict_folder

from .predict_jobs import predict_config

tifffile = pytest.importorskip("tifffile", reason='needs the volumes extra: pip install "fcnx[volumes]"')
zarr = pytest.importorskip("zarr", reason='needs the volumes extra: pip install "fcnx[volumes]"')
h5py = pytest.importorskip("h5py", reason='needs the volumes extra: pip install "fcnx[volumes]"')


def _pages(seed: int, n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _tree_hash(root: Path) -> dict[str, str]:
    """Every file below ``root`` (or ``root`` itself) by its sha256: inputs stay byte-unchanged."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_tiff_stack_gets_one_mask_page_per_plane_equal_to_its_png(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    pages = _pages(0, 5, 70, 90)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", pages, metadata={"axes": "ZYX"})
    before = _tree_hash(tmp_path / "in")
    summary = predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "out"))
    assert summary["counts"] == {"total": 1, "written": 1, "skipped": 0, "failed": 0}
    masks = tifffile.imread(tmp_path / "out" / "stack.tif")
    assert masks.shape == (5, 70, 90) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, (pages > 127).astype(np.uint8))
    assert _tree_hash(tmp_path / "in") == before

    # page i is what fcnx predict gives slice i as a PNG
    import cv2

    (tmp_path / "png").mkdir()
    for i, page in enumerate(pages):
        cv2.imwrite(str(tmp_path / "png" / f"{i}.png"), page)
    predict_folder(predict_config(threshold_onnx, [tmp_path / "png"], tmp_path / "out_png"))
    for i in range(5):
        from PIL import Image

        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out_png" / f"{i}.png")), masks[i])

    # a rerun skips it; zarr output on request
    again = predict_folder(predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "out"))
    assert again["counts"]["skipped"] == 1
    predict_folder(
        predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "out_zarr", output_format="zarr")
    )
    np.testing.assert_array_equal(zarr.open(tmp_path / "out_zarr" / "stack.zarr", mode="r")["0"][:], masks)

    # PNG per plane: the very bytes each slice gets as a PNG file; resumed plane by plane
    predict_folder(
        predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "out_seq", output_format="png")
    )
    names = sorted(p.name for p in (tmp_path / "out_seq").glob("*.png"))
    assert names == [f"stack-z{i:04d}.png" for i in range(5)]
    for i in range(5):
        assert (tmp_path / "out_seq" / f"stack-z{i:04d}.png").read_bytes() == (
            tmp_path / "out_png" / f"{i}.png"
        ).read_bytes()
    (tmp_path / "out_seq" / "stack-z0003.png").unlink()
    again = predict_folder(
        predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "out_seq", output_format="png")
    )
    assert again["counts"]["written"] == 1
    assert (tmp_path / "out_seq" / "stack-z0003.png").read_bytes() == (
        tmp_path / "out_png" / "3.png"
    ).read_bytes()


def test_zarr_and_hdf5_volumes_become_ome_zarr_labels(threshold_onnx: Path, tmp_path: Path) -> None:
    volume = _pages(1, 3, 150, 130)
    zarr.create_array(tmp_path / "vol.zarr", data=volume, chunks=(1, 64, 64), zarr_format=2)
    with h5py.File(tmp_path / "cells.h5", "w") as f:
        f.create_dataset("/raw/data", data=volume[:2])
    before = {**_tree_hash(tmp_path / "vol.zarr"), **_tree_hash(tmp_path / "cells.h5")}
    inputs = [
        tmp_path / "vol.zarr",
        f"{tmp_path / 'cells.h5'}:/raw/data",
        f"{tmp_path / 'cells.h5'}:/nothing",
    ]
    summary = predict_folder(predict_config(threshold_onnx, inputs, tmp_path / "out", save_probs="npy"))
    assert summary["counts"]["written"] == 2 and summary["counts"]["failed"] == 1
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text().splitlines()[0])
    assert "cells.h5" in failure["reason"] and "/nothing" in failure["reason"]
    labels = zarr.open(tmp_path / "out" / "vol.zarr", mode="r")
    np.testing.assert_array_equal(labels["0"][:], (volume > 127).astype(np.uint8))
    assert "image-label" in labels.attrs and "multiscales" in labels.attrs
    probs = zarr.open(tmp_path / "out" / "vol.probs.zarr", mode="r")[:]
    assert probs.dtype == np.float16 and probs.shape == (3, 150, 130, 2)
    np.testing.assert_array_equal(probs[..., 1] > probs[..., 0], volume > 127)
    np.testing.assert_allclose(probs.astype(np.float32).sum(axis=-1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(
        zarr.open(tmp_path / "out" / "cells.zarr", mode="r")["0"][:], (volume[:2] > 127).astype(np.uint8)
    )
    assert {**_tree_hash(tmp_path / "vol.zarr"), **_tree_hash(tmp_path / "cells.h5")} == before


def test_an_output_folder_inside_a_zarr_input_is_refused(threshold_onnx: Path, tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "vol.zarr", data=_pages(2, 2, 40, 40), zarr_format=3)
    with pytest.raises(ValueError, match="never writes into its inputs"):
        predict_folder(
            predict_config(threshold_onnx, [tmp_path / "vol.zarr"], tmp_path / "vol.zarr" / "labels")
        )


@pytest.mark.parametrize("strip", [None, 96, 64])
def test_windowed_planes_equal_the_in_memory_tiled_result(
    tiny_onnx_dynamic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip: int | None
) -> None:
    """A plane read by rows of tiles (windowed), whole or as column strips (each with the
    tiles reaching into it), gives byte for byte the in-memory tiled mask and
    probabilities: same tiles, same blending, same order of sums."""
    from fcnx.runtime.arrays.ome_zarr import OmeZarrLabelWriter
    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.predict.segmenter import Segmenter

    rng = np.random.default_rng(3)
    plane = (rng.random((300, 270)) * 60 + np.linspace(0, 180, 270)[None, :]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", plane[None].repeat(2, axis=0), tile=(64, 64))
    monkeypatch.setattr(volumes, "WHOLE_PLANE_PIXELS", 0)  # every plane windowed
    monkeypatch.setattr(volumes, "BAND_ROWS", 48)
    if strip is not None:  # 270 columns as strips of 96 (or 64): 3 (or 5) strips, the last narrower
        monkeypatch.setattr(OmeZarrLabelWriter, "STRIP", strip)
    config = predict_config(tiny_onnx_dynamic, [tmp_path / "big.tif"], tmp_path / "out", tile="64x64", overlap=16,
                     save_probs="npy")  # fmt: skip
    summary = predict_folder(config)
    assert summary["counts"]["written"] == 1, summary
    labels = zarr.open(tmp_path / "out" / "big.zarr", mode="r")["0"][:]
    probs = zarr.open_array(tmp_path / "out" / "big.probs.zarr", mode="r")[:]
    with load(tiny_onnx_dynamic, "ort-cpu") as backend:
        expected = Segmenter(backend, tile=(64, 64), overlap=16).segment([plane], probs=True)[0]
    for z in (0, 1):
        np.testing.assert_array_equal(labels[z], expected.mask)
        np.testing.assert_array_equal(probs[z], expected.probs.astype(np.float16))


def test_a_plane_stopped_in_a_later_strip_resumes_there_to_the_same_labels(
    tiny_onnx_dynamic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped while writing the second column strip keeps the first strip's bands
    and the second's finished ones; the rerun writes only the others, and the labels equal
    an uninterrupted run's."""
    from fcnx.runtime.arrays.ome_zarr import OmeZarrLabelWriter

    rng = np.random.default_rng(4)
    plane = (rng.random((200, 270)) * 60 + np.linspace(0, 180, 270)[None, :]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", np.stack([plane, plane[::-1]]), tile=(64, 64))
    monkeypatch.setattr(volumes, "WHOLE_PLANE_PIXELS", 0)
    monkeypatch.setattr(volumes, "BAND_ROWS", 48)  # 5 bands a strip
    monkeypatch.setattr(OmeZarrLabelWriter, "STRIP", 96)  # 3 strips: 15 bands a plane
    kw: dict[str, Any] = {"tile": "64x64", "overlap": 16}
    predict_folder(predict_config(tiny_onnx_dynamic, [tmp_path / "big.tif"], tmp_path / "whole", **kw))

    written: list[tuple[int, int, int]] = []
    real = OmeZarrLabelWriter.write_band

    def stop_after_seven(self: Any, plane: int, y0: int, mask: Any, probs: Any = None, x0: int = 0) -> None:
        if len(written) == 7:
            raise KeyboardInterrupt  # as Ctrl-C would, on the writer thread's 8th band
        real(self, plane, y0, mask, probs, x0)
        written.append((plane, y0, x0))

    monkeypatch.setattr(OmeZarrLabelWriter, "write_band", stop_after_seven)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(predict_config(tiny_onnx_dynamic, [tmp_path / "big.tif"], tmp_path / "out", **kw))
    assert not (tmp_path / "out" / "big.zarr").exists()
    first = list(written)
    assert first[:5] == [(0, y, 0) for y in range(0, 200, 48)] and first[5:] == [(0, 0, 96), (0, 48, 96)]
    written.clear()

    def record(self: Any, plane: int, y0: int, mask: Any, probs: Any = None, x0: int = 0) -> None:
        written.append((plane, y0, x0))
        real(self, plane, y0, mask, probs, x0)

    monkeypatch.setattr(OmeZarrLabelWriter, "write_band", record)
    summary = predict_folder(
        predict_config(tiny_onnx_dynamic, [tmp_path / "big.tif"], tmp_path / "out", **kw)
    )
    assert summary["counts"]["written"] == 1, summary
    every = {(p, y, x) for p in (0, 1) for y in range(0, 200, 48) for x in (0, 96, 192)}
    assert sorted(written) == sorted(every - set(first))
    a = zarr.open(tmp_path / "whole" / "big.zarr", mode="r")["0"][:]
    b = zarr.open(tmp_path / "out" / "big.zarr", mode="r")["0"][:]
    np.testing.assert_array_equal(a, b)


def test_a_bad_plane_fails_the_input_naming_it_and_a_rerun_finishes(
    threshold_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = _pages(4, 3, 64, 64)
    store = tmp_path / "vol.zarr"
    zarr.create_array(store, data=volume, chunks=(1, 64, 64), zarr_format=2)
    chunk = store / "1.0.0"
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a compressed chunk")
    (tmp_path / "imgs").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), volume[0])
    summary = predict_folder(predict_config(threshold_onnx, [store, tmp_path / "imgs"], tmp_path / "out"))
    assert summary["counts"]["written"] == 1 and summary["counts"]["failed"] == 1
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text().splitlines()[0])
    assert "vol.zarr" in failure["path"] and "z=1" in failure["reason"], failure
    assert not (tmp_path / "out" / "vol.zarr").exists()  # never half an output in place
    chunk.write_bytes(good)
    again = predict_folder(predict_config(threshold_onnx, [store, tmp_path / "imgs"], tmp_path / "out"))
    assert again["counts"]["written"] == 1 and again["counts"]["skipped"] == 1
    np.testing.assert_array_equal(
        zarr.open(tmp_path / "out" / "vol.zarr", mode="r")["0"][:], (volume > 127).astype(np.uint8)
    )


def test_overwrite_with_another_model_removes_array_outputs(threshold_onnx: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(threshold_onnx))
    model.doc_string = "another model"  # same answers, another sha256: another model to predict
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    zarr.create_array(tmp_path / "vol.zarr", data=_pages(5, 2, 40, 40), zarr_format=2)
    tifffile.imwrite(tmp_path / "stack.tif", _pages(6, 3, 40, 40), photometric="minisblack")
    inputs = [tmp_path / "vol.zarr", tmp_path / "stack.tif"]
    predict_folder(predict_config(threshold_onnx, inputs, tmp_path / "out", save_probs="npy"))
    assert {p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")} >= {
        "vol.zarr",
        "vol.probs.zarr",
        "stack.tif",
        "stack.probs.zarr",
    }
    with pytest.raises(ValueError, match="overwrite"):
        predict_folder(predict_config(other, inputs, tmp_path / "out"))
    summary = predict_folder(predict_config(other, inputs, tmp_path / "out", overwrite=True))
    assert summary["replaced_outputs_of_another_model"] == 4
    assert summary["counts"]["written"] == 2
    assert not (tmp_path / "out" / "vol.probs.zarr").exists()  # the old model's, gone with it


def test_info_describes_a_stack_as_predict_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fcnx.runtime.cli import main

    tifffile.imwrite(tmp_path / "stack.tif", _pages(7, 5, 40, 30), photometric="minisblack")
    assert main(["info", str(tmp_path / "stack.tif")]) == 0
    text = capsys.readouterr().out
    assert "shape: 5x40x30" in text and "planes: 5" in text and "read: each plane whole" in text, text
    assert main(["info", str(tmp_path / "stack.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["planes"] == 5 and info["shape"] == [5, 40, 30] and info["dtype"] == "uint8"
    assert main(["info", str(tmp_path / "missing.zarr")]) == 1
    assert "missing.zarr" in capsys.readouterr().err


def test_an_array_too_large_for_the_memory_left_fails_alone_before_reading(
    threshold_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volumes, "WHOLE_PLANE_PIXELS", 100 * 100)
    small, large = _pages(1, 2, 60, 50), _pages(2, 1, 300, 2000)
    zarr.create_array(tmp_path / "small.zarr", data=small)
    zarr.create_array(tmp_path / "large.zarr", data=large, chunks=(1, 64, 64))
    monkeypatch.setattr(volumes, "available_bytes", lambda: 40 << 20)  # less than a batch of 512² tiles
    summary = predict_folder(
        predict_config(threshold_onnx, [tmp_path / "small.zarr", tmp_path / "large.zarr"], tmp_path / "out")
    )
    assert summary["counts"]["written"] == 1 and summary["counts"]["failed"] == 1, summary
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert "large.zarr" in failure["path"] and "by windows need about" in failure["reason"], failure
    assert "40 MiB is available" in failure["reason"]
    assert not (tmp_path / "out" / "large.zarr").exists()


def test_overwrite_with_the_same_model_computes_array_outputs_again(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", _pages(8, 3, 40, 30), photometric="minisblack")
    config = predict_config(threshold_onnx, [tmp_path / "stack.tif"], tmp_path / "out", output_format="zarr")
    predict_folder(config)
    marker = tmp_path / "out" / "stack.zarr" / "stale"
    marker.write_text("left by the first run")
    again = predict_folder(predict_config(threshold_onnx, [tmp_path / "stack.tif"], tmp_path / "out",
                                   output_format="zarr", overwrite=True))  # fmt: skip
    assert again["counts"]["written"] == 1 and not marker.exists()  # a new output, not the old one kept
    assert predict_folder(config)["counts"]["skipped"] == 1  # a plain rerun keeps it
