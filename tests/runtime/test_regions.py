"""Regions (runtime/predict/regions.py), in process: every output chunk in exactly one
region, every tile reaching into a region run for it, region borders blending exactly as
the local run does, and a region run twice (a Ray retry) rewriting exactly its own chunks
with the same bytes. The Ray side is tests/runtime/test_ray_regions.py."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnx.runtime.arrays.band_writer import chunk_columns
from fcnx.runtime.predict import regions as regions_module
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.regions import Region, plan_regions, read_rows, tile_rows
from fcnx.runtime.predict.segmenter import Segmenter
from fcnx.runtime.predict.tiling import TileGrid
from fcnx.runtime.predict.volumes import ArrayRun

from ..fakes import FakeBackend

zarr = pytest.importorskip("zarr", reason='needs the volumes extra: pip install "fcnx[volumes]"')


@st.composite
def geometries(draw: Any) -> tuple[int, ...]:
    height, width = draw(st.integers(1, 900)), draw(st.integers(1, 900))
    band = draw(st.integers(1, 300))
    strip = draw(st.integers(1, width))
    limit = draw(st.integers(1, 512))  # chunk columns: the strip halved while over the limit
    return draw(st.integers(1, 4)), height, width, band, strip, limit


@settings(max_examples=300, deadline=None)
@given(geometries(), st.booleans(), st.integers(0, 5), st.integers(1, 2_000_000))
def test_regions_hold_every_band_and_every_chunk_exactly_once(
    geometry: tuple[int, ...], by_windows: bool, workers: int, region_pixels: int
) -> None:
    planes, height, width, band, strip, limit = geometry
    regions = plan_regions(planes, height, width, band, strip, by_windows, workers, region_pixels)
    bands = [b for r in regions for b in r.bands(band, strip)]
    every = {(p, y, x) for p in range(planes) for y in range(0, height, band) for x in range(0, width, strip)}
    assert len(bands) == len(set(bands)) and set(bands) == every
    columns = chunk_columns(strip, limit)
    chunks = [
        (p, y // band, x // columns)
        for r in regions
        for p in range(*r.planes)
        for y in range(r.rows[0], r.rows[1], band)
        for x in range(r.columns[0], r.columns[1], columns)
    ]
    assert len(chunks) == len(set(chunks))
    assert len(chunks) == planes * -(-height // band) * sum(-(-min(strip, width - x) // columns)
                                                            for x in range(0, width, strip))  # fmt: skip
    for r in regions:  # whole chunks: band and strip borders, or the array's end
        assert r.rows[0] % band == 0 and (r.rows[1] % band == 0 or r.rows[1] == height)
        assert r.columns[0] % strip == 0 and (r.columns[1] - r.columns[0] == min(strip, width - r.columns[0])
                                              or not by_windows)  # fmt: skip
        if not by_windows:
            assert r.rows == (0, height) and r.columns == (0, width)
        else:
            assert r.planes[1] - r.planes[0] == 1


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 2000), st.sampled_from([32, 64, 96, 128]), st.integers(0, 120), st.integers(1, 64),
    st.data(), st.booleans(),
)  # fmt: skip
def test_a_region_runs_exactly_the_tile_rows_that_reach_into_it(
    height: int, tile: int, overlap: int, band: int, data: Any, stitched: bool
) -> None:
    overlap = min(overlap, tile - 1)
    grid = TileGrid.over((height, 64), (tile, 64), overlap, 1)
    y0 = data.draw(st.integers(0, (height - 1) // band)) * band
    y1 = min(height, y0 + data.draw(st.integers(1, 40)) * band)
    region = Region((0, 1), (y0, y1), (0, 64))
    first, end = tile_rows(region, grid, stitched)
    for r, origin in enumerate(grid.rows):
        if stitched:  # a mask-only model: each pixel comes from the one tile that owns it
            lo, hi = grid.own(grid.rows, r, tile, height)
            reaches = lo < y1 and hi > y0 and hi > lo
            assert reaches <= (first <= r < end), (r, lo, hi)
            assert first <= r < end or not reaches
        else:  # blended: every tile over a pixel counts
            assert (first <= r < end) == (origin < y1 and origin + tile > y0), r
    lo, hi = read_rows(region, grid, stitched)
    assert lo <= y0 and (hi >= y1 or hi == height)


class ContextBackend(FakeBackend):
    """A fake whose output depends on each pixel's neighbourhood within the tile (a 9 x 9
    box mean): a tile's result changes with where the tile sits, so region borders blend
    right only if each region runs every tile that reaches into it, in the same order."""

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = batch[..., 0].astype(np.float32) / 255.0
        pad = np.pad(x, ((0, 0), (4, 4), (4, 4)), mode="edge")
        sums = pad.cumsum(1).cumsum(2)
        sums = np.pad(sums, ((0, 0), (1, 0), (1, 0)))
        h, w = x.shape[1:]
        box = (
            sums[:, 9 : 9 + h, 9 : 9 + w] - sums[:, :h, 9 : 9 + w] - sums[:, 9 : 9 + h, :w] + sums[:, :h, :w]
        ) / 81
        p = box[..., None]
        return {"probs": np.concatenate([1 - p, p], axis=-1), "mask": (box > 0.5).astype(np.uint8)}


def _volume(path: Path, planes: int, height: int, width: int) -> Path:
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 200, width)[None, :]
    data = np.stack([(rng.random((height, width)) * 90 + ramp).astype(np.uint8) for _ in range(planes)])
    array = zarr.create_array(path, shape=data.shape, chunks=(1, 64, 64), dtype="uint8", zarr_format=2)
    array[:] = data
    array.attrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"]
    return path


def _writer(path: Path, card: Any, journal: bool = True) -> Any:
    from fcnx.runtime.arrays.ome_zarr import OmeZarrLabelWriter

    return OmeZarrLabelWriter(path, 2, 300, 270, 48, card, probs="float16", strip=96, journal=journal)


def _chunks(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every chunk file of a partial output: bytes and modification time (ns)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            found[str(path.relative_to(root))] = (path.read_bytes(), os.stat(path).st_mtime_ns)
    return found


def test_regions_blend_at_their_borders_exactly_as_the_local_run_and_a_rerun_region_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fcnx.runtime.arrays.readers import open_array
    from fcnx.runtime.arrays.zarr_bands import partial_path

    source_path = _volume(tmp_path / "vol.zarr", 2, 300, 270)
    segmenter = Segmenter(ContextBackend(), 4, tile=(64, 64), overlap=16)
    config = PredictConfig(model="fake.onnx", inputs=(str(source_path),), out=str(tmp_path), progress=False,
                           save_probs="npy")  # fmt: skip
    card = segmenter.card
    with open_array(str(source_path), None, 0) as source:
        local = _writer(tmp_path / "local.zarr", card)
        ArrayRun(config, segmenter, source, local, None, None, True).run()
        local.finish()

        monkeypatch.setattr(regions_module, "MIN_REGION_BANDS", 1)
        driver = _writer(tmp_path / "regions.zarr", card)
        driver.begin()
        regions = ArrayRun(config, segmenter, source, driver, None, None, True).regions(2, 96 * 96)
        assert len(regions) == 2 * 3 * 4  # 2 planes x 3 strips x 4 regions of 96 rows (2 bands)
        random.Random(0).shuffle(regions)  # in any order, on any worker
        partial = partial_path(tmp_path / "regions.zarr")
        for i, region in enumerate(regions):
            worker = _writer(tmp_path / "regions.zarr", card, journal=False)
            before = worker.done()
            ArrayRun(config, segmenter, source, worker, None, None, True).run([region])
            made = worker.done() - before
            assert made == set(region.bands(48, 96))
            if i == 5:  # a Ray retry: the first attempt died mid-write before its report reached the driver
                first = _chunks(partial)
                (p, _), (y0, y1), (x0, x1) = region.planes, region.rows, region.columns
                own = {f"0/{p}/{y // 48}/{x // 96}" for y in range(y0, y1, 48) for x in range(x0, x1, 96)}
                for key in own:
                    (partial / key).write_bytes(b"half-written")
                again_writer = _writer(tmp_path / "regions.zarr", card, journal=False)
                ArrayRun(config, segmenter, source, again_writer, None, None, True).run([region])
                again = _chunks(partial)
                assert {k: v[0] for k, v in again.items()} == {
                    k: v[0] for k, v in first.items()
                }  # same bytes
                others = {k: v[1] for k, v in first.items() if k not in own}
                assert others == {k: v[1] for k, v in again.items() if k not in own}  # no other chunk touched
            driver.record(sorted(made))
        done_worker = _writer(tmp_path / "regions.zarr", card, journal=False)
        settled = _chunks(partial)
        ArrayRun(config, segmenter, source, done_worker, None, None, True).run([regions[0]])
        assert _chunks(partial) == settled  # journaled: a region already recorded is not run again
    driver.finish()

    a = zarr.open_group(tmp_path / "local.zarr", mode="r")
    b = zarr.open_group(tmp_path / "regions.zarr", mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for level in a.array_keys():
        np.testing.assert_array_equal(a[level][:], b[level][:])
    assert np.unique(a["0"][:]).tolist() == [0, 1]  # both classes: the context really decides
    pa = zarr.open_array(tmp_path / "local.probs.zarr", mode="r")[:]
    pb = zarr.open_array(tmp_path / "regions.probs.zarr", mode="r")[:]
    assert pa.tobytes() == pb.tobytes()
