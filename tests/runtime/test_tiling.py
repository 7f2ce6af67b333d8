"""Tiled (sliding-window) inference: grids, blending, stitching, failures and memory.

The FakeBackend's output is local (each pixel's answer depends on that pixel only), so
tiled must equal whole exactly; ``BlurBackend`` sees a neighbourhood, like a real
network, so its tiles disagree near their edges and blending has work to do."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnx.runtime.backends.registry import load
from fcnx.runtime.images import mirror_pad
from fcnx.runtime.predict import local
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.job import predict_folder
from fcnx.runtime.predict.plans import Prepared, Tiled
from fcnx.runtime.predict.segmenter import Segmenter
from fcnx.runtime.predict.tiling import Blender, TileGrid, mirror_indices, parse_tile, starts

from ..fakes import FakeBackend, threshold_mask
from .image_files import png

RNG = np.random.default_rng(0)


class BlurBackend(FakeBackend):
    """p = the 9x9 box blur of pixel / 255 within each image of the batch."""

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.shape)
        p = np.stack([cv2.blur(b[..., 0].astype(np.float32) / 255.0, (9, 9)) for b in batch])[..., None]
        probs = np.concatenate([1 - p, p], axis=-1)
        result = {"probs": probs, "mask": (p[..., 0] > 0.5).astype(np.uint8)}
        return {name: result[name] for name in self.output_names}


class PoisonBackend(FakeBackend):
    """Fails every batch that holds a piece made only of the value 7."""

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if any((piece == 7).all() for piece in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        return super()._infer(batch)


def _model(folder: Path) -> str:
    """A file for predict_folder to fingerprint; the backend passed in is what runs."""
    path = folder / "fake.onnx"
    path.write_bytes(b"a fake model")
    return str(path)


def _image(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), np.uint8)


@given(
    length=st.integers(1, 3000),
    tile=st.sampled_from([32, 64, 512]),
    overlap=st.integers(0, 300),
)
@settings(max_examples=200, deadline=None)
def test_tile_origins_cover_the_padded_axis_on_the_stride(length: int, tile: int, overlap: int) -> None:
    overlap = min(overlap, tile - 1)
    origins = starts(length, tile, overlap, 32)
    padded = max(tile, -(-length // 32) * 32)
    assert origins[0] == 0 and origins[-1] + tile == padded
    assert all(o % 32 == 0 for o in origins)
    assert all(0 < b - a <= tile for a, b in itertools.pairwise(origins))  # no gaps, no repeats


@pytest.mark.parametrize("length, start, size", [(5, 0, 16), (1, 0, 512), (7, 3, 9), (100, 64, 64)])
def test_mirror_indices_fill_like_mirror_pad(length: int, start: int, size: int) -> None:
    axis = np.arange(length)
    padded = mirror_pad(axis[:, None], (start + size, 1))[:, 0]
    np.testing.assert_array_equal(axis[mirror_indices(start, size, length)], padded[start:])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(40, 300),
    st.integers(40, 300),
    st.sampled_from([(32, 32), (64, 48)]),
    st.integers(0, 20),
    st.integers(1, 120),
    st.sampled_from([0, 2]),
)
def test_a_grid_cut_into_column_strips_gives_the_whole_result(
    h: int, w: int, tile: tuple[int, int], overlap: int, strip: int, classes: int
) -> None:
    """Each strip's Blender (the tiles reaching into it, in the same order) gives exactly
    its columns of the whole grid's result: blended probabilities and stitched masks."""
    grid = TileGrid.over((h, w), tile, overlap, 8)
    rng = np.random.default_rng(h * 1000 + w)
    outputs = {
        (r, c): rng.random((*tile, classes), np.float32) if classes else rng.integers(0, 3, tile, np.uint8)
        for r in range(len(grid.rows))
        for c in range(len(grid.cols))
    }

    def run(g: TileGrid) -> tuple[np.ndarray, np.ndarray | None]:
        blender = Blender(g, classes, keep_probs=True)
        for r in range(len(g.rows)):
            for x in g.cols:
                blender.add(outputs[r, grid.cols.index(x)])
        return blender.mask, blender.probs

    whole_mask, whole_probs = run(grid)
    for x0 in range(0, w, strip):
        part = grid.strip(x0, min(w, x0 + strip))
        assert all(c < x0 + strip and c + tile[1] > x0 for c in part.cols)
        mask, probs = run(part)
        np.testing.assert_array_equal(mask, whole_mask[:, x0 : x0 + strip])
        if classes:
            assert probs is not None and whole_probs is not None
            np.testing.assert_array_equal(probs, whole_probs[:, x0 : x0 + strip])


def test_parse_tile() -> None:
    assert parse_tile("512x256") == (512, 256) and parse_tile("384") == (384, 384)
    assert parse_tile("OFF") == "off" and parse_tile("auto") == "auto"
    for bad in ("0x5", "a", "1x2x3"):
        with pytest.raises(ValueError, match="--tile must be auto, off or HxW"):
            parse_tile(bad)


@pytest.mark.parametrize("size", [(300, 1000), (64, 64), (65, 129), (1, 700), (700, 1), (20, 20)])
def test_tiled_equals_whole_on_a_local_model(size: tuple[int, int]) -> None:
    image = _image(*size)
    tiled = Segmenter(FakeBackend(), tile=(64, 64), overlap=16, batch_size=3)
    whole = Segmenter(FakeBackend(), tile="off")
    [t] = tiled.segment([image], probs=True)
    [w] = whole.segment([image], probs=True)
    np.testing.assert_array_equal(t.mask, threshold_mask(image))
    np.testing.assert_array_equal(t.mask, w.mask)
    assert t.probs is not None and w.probs is not None and t.probs.shape == (*size, 2)
    np.testing.assert_allclose(t.probs, w.probs, atol=1e-6)
    np.testing.assert_allclose(t.probs.sum(axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [(100, 37), (1, 200), (20, 20), (64, 64), (130, 64)])
def test_a_fixed_size_model_tiles_every_image_at_full_resolution(size: tuple[int, int]) -> None:
    segmenter = Segmenter(FakeBackend(input_hw=(64, 64)), overlap=16)
    image = _image(*size)
    plan = segmenter.plan(image)
    assert isinstance(plan, Prepared if size == (64, 64) else Tiled)
    np.testing.assert_array_equal(segmenter.predict([image])[0], threshold_mask(image))
    assert {shape[1:] for shape in segmenter.backend.batches} == {(64, 64, 1)}


def test_a_mask_only_model_is_stitched_from_tile_centres() -> None:
    image = _image(200, 333)
    segmenter = Segmenter(FakeBackend(outputs=("mask",)), tile=(64, 64), overlap=32)
    np.testing.assert_array_equal(segmenter.predict([image])[0], threshold_mask(image))
    grid = TileGrid.over((200, 333), (64, 64), 32, 32)
    owned = np.zeros((200, 333), np.int32)  # every pixel belongs to exactly one tile
    for r in range(len(grid.rows)):
        for c in range(len(grid.cols)):
            (y0, y1), (x0, x1) = grid.own(grid.rows, r, 64, 200), grid.own(grid.cols, c, 64, 333)
            owned[y0:y1, x0:x1] += 1
    assert (owned == 1).all()
    with pytest.raises(ValueError, match="--tta averages probabilities"):
        Segmenter(FakeBackend(outputs=("mask",)), tta="flip")


def test_blending_hides_the_tile_edges_of_a_model_that_sees_context() -> None:
    image = cv2.GaussianBlur(_image(256, 256), (0, 0), 6)  # structures larger than a pixel
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    [whole] = Segmenter(BlurBackend(), tile="off").segment([image], probs=True)
    errors = {}
    for overlap in (0, 32):
        [tiled] = Segmenter(BlurBackend(), tile=(64, 64), overlap=overlap).segment([image], probs=True)
        assert tiled.probs is not None and whole.probs is not None
        errors[overlap] = float(np.abs(tiled.probs - whole.probs).max())
    assert errors[0] > 0.01  # hard tile edges: the blur is cut at each one
    assert errors[32] < errors[0] / 4  # a falling-off window blends them away


def test_no_seam_on_a_trained_tiny_model(tiny_onnx_dynamic: Path, synthetic_data: Path) -> None:
    from fcnx.runtime.images import read_image

    tiles = [read_image(p, 1) for p in sorted((synthetic_data / "image").iterdir())[:4]]
    image = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])  # 128x128 of EM-like texture
    image = cv2.resize(image, (320, 320), interpolation=cv2.INTER_LINEAR)
    with load(tiny_onnx_dynamic, "ort-cpu") as backend:
        whole = Segmenter(backend, tile="off").predict([image])[0]
        tiled = Segmenter(backend, tile=(64, 64), overlap=32).predict([image])[0]
    agree = whole == tiled
    near = np.zeros_like(agree)
    for edge in starts(320, 64, 32, 32)[1:]:  # within 4 px of an inner tile edge
        near[max(0, edge - 4) : edge + 4] = True
        near[:, max(0, edge - 4) : edge + 4] = True
    assert agree.mean() >= 0.99, agree.mean()
    assert agree[near].mean() >= agree[~near].mean() - 0.02


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_a_result_never_depends_on_what_shared_its_batch(batch: int) -> None:
    images = [_image(150, 170), _image(64, 64), _image(90, 300), _image(30, 30)]
    alone = [
        Segmenter(BlurBackend(), tile=(64, 64), batch_size=1).segment([im], probs=True)[0] for im in images
    ]
    together = Segmenter(BlurBackend(), tile=(64, 64), batch_size=batch).segment(images[::-1], probs=True)[
        ::-1
    ]
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a.mask, t.mask)
        assert a.probs is not None and t.probs is not None
        np.testing.assert_array_equal(a.probs, t.probs)


def test_an_inference_failure_costs_one_image_of_a_mixed_batch() -> None:
    poison = np.full((100, 100), 7, np.uint8)
    images = [_image(100, 100), poison, _image(100, 100), _image(64, 64)]
    segmenter = Segmenter(PoisonBackend(), tile=(64, 64), overlap=16, batch_size=8)
    results = list(segmenter.stream(enumerate(segmenter.plan(im) for im in images)))
    assert [key for key, _, _ in results] == [0, 1, 2, 3]
    assert isinstance(results[1][2], RuntimeError) and "out of memory" in str(results[1][2])
    for i in (0, 2, 3):
        result = results[i][2]
        assert not isinstance(result, Exception)
        np.testing.assert_array_equal(result.mask, threshold_mask(images[i]))
    with pytest.raises(RuntimeError, match="out of memory"):
        segmenter.segment(images)  # the list API raises


def test_a_backend_failure_in_a_run_is_recorded_and_the_rest_written(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    images = {"a.png": _image(100, 130), "b.png": np.full((100, 130), 7, np.uint8), "c.png": _image(64, 64)}
    for name, image in images.items():
        (folder / name).write_bytes(png(image))
    config = PredictConfig(model=_model(tmp_path), inputs=(str(folder),), out=str(tmp_path / "out"), progress=False,
                           tile="64x64", overlap=16)  # fmt: skip
    summary = predict_folder(config, PoisonBackend())
    assert summary["counts"] == {"total": 3, "written": 2, "skipped": 0, "failed": 1}
    [failure] = map(json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())
    assert failure["path"].endswith("b.png") and failure["stage"] == "infer"
    assert "RuntimeError: CUDA out of memory" in failure["reason"]
    assert summary["tile"] == [64, 64] and summary["overlap"] == 16
    assert not (tmp_path / "out" / "b.png").exists()


def test_tiles_in_flight_are_bounded_by_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    cut = []
    original = TileGrid.tile_image

    def counting(self: TileGrid, image: np.ndarray, r: int, c: int) -> np.ndarray:
        cut.append((r, c))
        return original(self, image, r, c)

    monkeypatch.setattr(TileGrid, "tile_image", counting)
    backend = FakeBackend()
    in_flight = []
    infer = backend._infer

    def watching(batch: np.ndarray) -> dict[str, np.ndarray]:
        done = sum(shape[0] for shape in backend.batches)
        in_flight.append(len(cut) - done)
        return infer(batch)

    monkeypatch.setattr(backend, "_infer", watching)
    segmenter = Segmenter(backend, tile=(32, 32), overlap=0, batch_size=4)
    segmenter.predict([_image(640, 640)])  # 400 tiles
    assert len(cut) == 400 and max(in_flight) <= 4 + 1
    blender = Blender(TileGrid.over((640, 640), (32, 32), 0, 32), classes=2)
    assert blender._acc.shape == (32, 640, 2)  # one band of a tile's height, not the image


def test_tta_flip_runs_four_passes_and_averages() -> None:
    image = _image(100, 150)
    backend = FakeBackend()
    segmenter = Segmenter(backend, tile=(64, 64), overlap=16, tta="flip")
    [out] = segmenter.segment([image], probs=True)
    np.testing.assert_array_equal(out.mask, threshold_mask(image))  # a per-pixel model is flip-invariant
    assert sum(shape[0] for shape in backend.batches) == 4 * segmenter.plan(image).grid.count  # type: ignore[union-attr]
    [blurred] = Segmenter(BlurBackend(), tile="off", tta="flip").segment([image], probs=True)
    assert blurred.probs is not None and np.allclose(blurred.probs.sum(axis=-1), 1)


def test_save_probs_writes_float16_npy_or_a_png_per_class(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image = _image(90, 140)
    (folder / "a.png").write_bytes(png(image))
    for kind in ("npy", "png"):
        out = tmp_path / kind
        config = PredictConfig(model=_model(tmp_path), inputs=(str(folder),), out=str(out), progress=False,
                               tile="64x64", save_probs=kind)  # fmt: skip
        assert predict_folder(config, FakeBackend())["counts"]["written"] == 1
        p = image.astype(np.float32) / 255
        if kind == "npy":
            probs = np.load(out / "a.probs.npy")
            assert probs.dtype == np.float16 and probs.shape == (90, 140, 2)
            np.testing.assert_allclose(probs[..., 1], p, atol=1e-3)
        else:
            plane = cv2.imread(str(out / "a.probs-1.png"), cv2.IMREAD_UNCHANGED)
            assert plane.dtype == np.uint8 and np.abs(plane.astype(int) - image).max() <= 1
            assert (out / "a.probs-0.png").is_file()


def test_an_image_that_would_not_fit_in_memory_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.png").write_bytes(png(_image(2000, 3000)))
    (folder / "small.png").write_bytes(png(_image(50, 50)))
    monkeypatch.setattr(local, "available_bytes", lambda: 20 << 20)  # 20 MiB free
    config = PredictConfig(model=_model(tmp_path), inputs=(str(folder),), out=str(tmp_path / "out"), progress=False,
                           tile="64x64")  # fmt: skip
    summary = predict_folder(config, FakeBackend())
    assert summary["counts"]["written"] == 1 and summary["counts"]["failed"] == 1
    [failure] = map(json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())
    assert failure["stage"] == "read" and failure["path"].endswith("big.png")
    assert (
        "not enough memory: 3000x2000 needs about" in failure["reason"]
        and "20 MiB is available" in failure["reason"]
    )


def test_read_ahead_is_bounded_in_bytes_granted_in_order() -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    budget = local.ByteBudget(12)
    held: list[tuple[int, int]] = []  # (size, bytes held while it ran)
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            held.append((n, budget.held))
        time.sleep(0.01)
        return n

    sizes = [5, 5, 5, 30, 5, 5, 1, 1, 12]
    with ThreadPoolExecutor(3) as pool:
        out = list(local.bounded_map(pool, work, iter(sizes), window=10, budget=budget, cost=lambda n: n))
    assert out == sizes  # in order
    assert all(h <= 12 or h == n for n, h in held)  # over the budget only alone (the 30)
    assert max(h for _, h in held) == 30 and budget.held == 0


def test_an_interrupted_read_ahead_leaves_no_task_waiting() -> None:
    from concurrent.futures import ThreadPoolExecutor

    budget = local.ByteBudget(10)
    with ThreadPoolExecutor(2) as pool:
        results = local.bounded_map(
            pool, lambda n: n, iter([10] * 6), window=6, budget=budget, cost=lambda n: n
        )
        assert next(results) == 10  # then the consumer stops; later tasks wait for bytes
        budget.close()  # as run_local does on its way out: the pool's shutdown does not hang
    assert budget.held > 0


def test_tile_options_are_checked() -> None:
    with pytest.raises(ValueError, match="takes 64x64 inputs; a 128x128 tile cannot run"):
        Segmenter(FakeBackend(input_hw=(64, 64)), tile=(128, 128))
    with pytest.raises(ValueError, match="multiples of the model's stride 32"):
        Segmenter(FakeBackend(), tile=(100, 100))
    with pytest.raises(ValueError, match="overlap must be at least 0 and under the tile side 64"):
        Segmenter(FakeBackend(), tile=(64, 64), overlap=64)
    with pytest.raises(ValueError, match="fit='pad' runs whole images"):
        Segmenter(FakeBackend(input_hw=(64, 64)), fit="pad", tile=(64, 64))
    assert Segmenter(FakeBackend(), tile=(64, 64), overlap=16).describe() == "tile 64x64 overlap 16"
    assert Segmenter(FakeBackend()).tile == (512, 512)  # a dynamic model without a card size


def test_the_cli_tiles_a_large_image_on_a_real_onnx_model(threshold_onnx: Path, tmp_path: Path) -> None:
    from fcnx.runtime.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    image = _image(333, 1000)
    (folder / "wide.png").write_bytes(png(image))
    out = tmp_path / "out"
    args = ["predict", str(threshold_onnx), str(folder), "-o", str(out), "--no-progress"]
    assert main([*args, "--tile", "64x64", "--overlap", "16", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tile"] == [64, 64] and summary["overlap"] == 16 and summary["fit"] == "tile"
    np.testing.assert_array_equal(np.array(Image.open(out / "wide.png")), threshold_mask(image))
    assert main([*args, "--tile", "64x64", "--fit", "pad"]) == 1  # explicit fits run whole images


def test_ray_actors_tile_like_a_local_run(threshold_onnx: Path, tmp_path: Path) -> None:
    from fcnx.runtime.predict.ray import SegmentationPredictor, write_masks

    images = [_image(333, 1000), _image(20, 30)]
    column = np.empty(2, dtype=object)
    column[:] = images
    actor = SegmentationPredictor(
        str(threshold_onnx), "ort-cpu", threads=1, tile="64x64", overlap=16, probs=True
    )
    rows = actor(
        {"image": column, "path": np.array(["a.png", "b.png"]), "relative": np.array(["a.png", "b.png"])}
    )
    assert actor.segmenter.tile == (64, 64) and list(rows["error"]) == ["", ""]
    for image, mask in zip(images, rows["mask"]):
        np.testing.assert_array_equal(mask, threshold_mask(image))
    palette = actor.segmenter.card.palette
    status = write_masks(rows, str(tmp_path), "png", False, palette, probs="npy", classes=2)
    assert list(status["error"]) == ["", ""]
    probs = np.load(tmp_path / "a.probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (333, 1000, 2)
    np.testing.assert_array_equal(probs.argmax(axis=-1), threshold_mask(images[0]))
    np.testing.assert_allclose(probs.astype(np.float32).sum(axis=-1), 1, atol=2e-3)
