"""The chunked mask writers of array inputs (runtime/arrays): a multi-page TIFF and an OME-Zarr
label image written band by band, durable band by band, resumed after a kill to the same bytes;
the probabilities beside them; output names; the synthetic mosaic inputs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fcnx.runtime.arrays import mosaic as mosaic_module
from fcnx.runtime.arrays import ome_zarr, tiff_stack
from fcnx.runtime.arrays.band_writer import PROBS_SUFFIX, Band, base_name
from fcnx.runtime.arrays.mosaic import Mosaic, write_mosaic
from fcnx.runtime.arrays.source import ArrayError
from fcnx.runtime.arrays.writers import (
    OUTPUT_FORMATS,
    MaskWriter,
    OmeZarrLabelWriter,
    TiffStackWriter,
    is_progress_name,
    output_path,
    probs_path,
    progress_paths,
)
from fcnx.runtime.atomic import KILL_AT, is_temp_name
from fcnx.runtime.card import ModelCard, default_palette

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

ROOT = Path(__file__).resolve().parents[2]
CARD = ModelCard("fcn8s", ("background", "membrane", "cell"), default_palette(3), 1)
NAMES = {"tiff": "m.tif", "zarr": "m.zarr"}
PLANES, HEIGHT, WIDTH, BAND = 2, 100, 130, 32  # 4 bands a plane, the last one 4 rows
SMALL = {"PYRAMID_MIN": 30, "TILE_ABOVE": 64, "TILE": 48}  # 4 pyramid levels; tiles across bands


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pyramids and tiles at the sizes of small test arrays (as ``run_child`` sets them)."""
    monkeypatch.setattr(ome_zarr, "PYRAMID_MIN", SMALL["PYRAMID_MIN"])
    monkeypatch.setattr(tiff_stack, "TILE_ABOVE", SMALL["TILE_ABOVE"])
    monkeypatch.setattr(tiff_stack, "TILE", SMALL["TILE"])


def make_masks(planes: int = PLANES, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Class ids in blobs (runs of one class, as real masks), not noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, CARD.num_classes, (planes, height // 4 + 1, width // 4 + 1), np.uint8)
    return np.ascontiguousarray(coarse.repeat(4, axis=1).repeat(4, axis=2)[:, :height, :width])


def make_probs(masks: np.ndarray, channels: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((*masks.shape, channels), dtype=np.float32)


def bands_of(planes: int, height: int, band: int, width: int = WIDTH, strip: int = WIDTH) -> list[Band]:
    return [(p, y, x) for p in range(planes) for y in range(0, height, band) for x in range(0, width, strip)]


def shuffled(bands: list[Band], seed: int = 7) -> list[Band]:
    order = list(bands)
    random.Random(seed).shuffle(order)
    return order


def make_writer(kind: str, path: Path, probs: str | None = None, **kwargs: Any) -> MaskWriter:
    geometry = {"planes": PLANES, "height": HEIGHT, "width": WIDTH, "band": BAND, **kwargs}
    return OUTPUT_FORMATS[kind](path, card=CARD, probs=probs, **geometry)


def write(
    writer: MaskWriter,
    masks: np.ndarray,
    bands: list[Band],
    probs: np.ndarray | None = None,
) -> None:
    for p, y, x in bands:
        rows, columns = slice(y, y + writer.band), slice(x, x + writer.strip)
        band_probs = probs[p, rows, columns] if probs is not None else None
        writer.write_band(p, y, masks[p, rows, columns], band_probs, x)


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


# -- the TIFF stack -------------------------------------------------------------------------


def test_tiff_stack_holds_the_masks_as_palette_pages(tmp_path: Path) -> None:
    masks = make_masks(3)
    writer = make_writer("tiff", tmp_path / "s.tif", planes=3)
    write(writer, masks, shuffled(bands_of(3, HEIGHT, BAND)))
    writer.finish()
    assert sorted(os.listdir(tmp_path)) == ["s.tif"]  # the parts went
    assert np.array_equal(tifffile.imread(tmp_path / "s.tif"), masks)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert len(tif.pages) == 3
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert not page.is_tiled
        assert "DateTime" not in page.tags  # nothing run-dependent: a resume gives the same bytes
        table = page.colormap
        assert table.shape == (3, 256)
        for k, rgb in enumerate(CARD.palette):
            assert list(table[:, k]) == [c * 257 for c in rgb]
    assert make_writer("tiff", tmp_path / "s.tif", planes=3).done() == set(bands_of(3, HEIGHT, BAND))


@pytest.mark.parametrize(("band", "tile"), [(32, 48), (64, 32), (20, 16)])
def test_tiff_stack_tiles_planes_above_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, band: int, tile: int
) -> None:
    monkeypatch.setattr(tiff_stack, "TILE_ABOVE", 64)
    monkeypatch.setattr(tiff_stack, "TILE", tile)
    masks = make_masks()
    writer = make_writer("tiff", tmp_path / "s.tif", band=band)
    assert isinstance(writer, TiffStackWriter) and writer.tiled
    write(writer, masks, shuffled(bands_of(PLANES, HEIGHT, band)))
    writer.finish()
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert len(tif.pages) == PLANES
        assert all(page.is_tiled and page.tilelength == page.tilewidth == tile for page in tif.pages)
        assert np.array_equal(tif.asarray(), masks)


def test_tiff_stack_of_one_image_and_of_two_plane_axes(tmp_path: Path) -> None:
    one = make_masks(1)
    writer = make_writer("tiff", tmp_path / "one.tif", planes=1)
    write(writer, one, bands_of(1, HEIGHT, BAND))
    writer.finish()
    assert np.array_equal(tifffile.imread(tmp_path / "one.tif"), one[0])
    six = make_masks(6)
    writer = make_writer("tiff", tmp_path / "tz.tif", planes=6, plane_axes="TZ", plane_shape=(2, 3))
    write(writer, six, bands_of(6, HEIGHT, BAND))
    writer.finish()
    assert np.array_equal(tifffile.imread(tmp_path / "tz.tif"), six.reshape(2, 3, HEIGHT, WIDTH))


@pytest.mark.parametrize("probs", [None, "float16"])
def test_tiff_stack_resume_is_byte_identical(tmp_path: Path, probs: str | None) -> None:
    masks, values = make_masks(3), make_probs(make_masks(3))
    order = shuffled(bands_of(3, HEIGHT, BAND))
    whole = make_writer("tiff", tmp_path / "a" / "s.tif", probs, planes=3)
    write(whole, masks, order, values)
    whole.finish()

    first = make_writer("tiff", tmp_path / "b" / "s.tif", probs, planes=3)
    write(first, masks, order[:5], values)
    del first  # killed: no finish, no abort
    again = make_writer("tiff", tmp_path / "b" / "s.tif", probs, planes=3)
    assert again.done() == set(order[:5])
    write(again, masks, [b for b in order if b not in again.done()], values)
    again.finish()
    assert tree(tmp_path / "b") == tree(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "b")) == (["s.probs.zarr"] if probs else []) + ["s.tif"]


# -- the OME-Zarr label image ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("planes", "plane_axes", "plane_shape", "axes"),
    [(2, "Z", None, "zyx"), (1, "", None, "yx"), (6, "TZ", (2, 3), "tzyx")],
)
def test_ome_zarr_label_image(
    tmp_path: Path, small: None, planes: int, plane_axes: str, plane_shape: tuple[int, ...] | None, axes: str
) -> None:
    masks = make_masks(planes)
    path = tmp_path / "vol.ome.zarr"
    writer = make_writer("zarr", path, planes=planes, plane_axes=plane_axes, plane_shape=plane_shape)
    write(writer, masks, shuffled(bands_of(planes, HEIGHT, BAND)))
    writer.finish()
    assert sorted(os.listdir(tmp_path)) == ["vol.ome.zarr"]  # the partial folder and journal went

    lead = plane_shape or ((planes,) if plane_axes else ())
    expected = masks.reshape(*lead, HEIGHT, WIDTH)
    group = zarr.open_group(path, mode="r")
    assert group.metadata.zarr_format == 2
    assert sorted(group.array_keys()) == ["0", "1", "2", "3"]  # 130 -> 65 -> 33 -> 17 <= 30
    for level in range(4):
        step = 2**level
        array = group[str(level)]
        assert array.dtype == np.uint8
        assert np.array_equal(array[...], expected[..., ::step, ::step])
    assert group["0"].chunks == (*(1 for _ in lead), BAND, WIDTH)

    attrs = json.loads((path / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4" and multiscale["name"] == "vol"
    assert "".join(a["name"] for a in multiscale["axes"]) == axes
    assert [d["path"] for d in multiscale["datasets"]] == ["0", "1", "2", "3"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1.0] * len(lead) + [2.0**level] * 2 for level in range(4)]
    label = attrs["image-label"]
    assert label["version"] == "0.4"
    assert label["colors"] == [{"label-value": k, "rgba": [*rgb, 255]} for k, rgb in enumerate(CARD.palette)]
    assert [p["class"] for p in label["properties"]] == list(CARD.classes)


def test_ome_zarr_py_reads_a_label_image(tmp_path: Path, small: None) -> None:
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    masks = make_masks()
    writer = make_writer("zarr", tmp_path / "m.zarr")
    write(writer, masks, bands_of(PLANES, HEIGHT, BAND))
    writer.finish()
    nodes = list(reader.Reader(io.parse_url(str(tmp_path / "m.zarr")))())
    node = nodes[0]
    assert {type(spec).__name__ for spec in node.specs} >= {"Label", "Multiscales"}
    assert [tuple(d.shape) for d in node.data] == [(2, 100, 130), (2, 50, 65), (2, 25, 33), (2, 13, 17)]
    assert np.array_equal(np.asarray(node.data[0]), masks)
    assert node.metadata["color"][1] == [c / 255 for c in (*CARD.palette[1], 255)]
    assert node.metadata["properties"][2] == {"class": "cell"}
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]


@pytest.mark.parametrize("probs", [None, "uint8"])
def test_ome_zarr_resume_is_byte_identical(tmp_path: Path, small: None, probs: str | None) -> None:
    masks, values = make_masks(), make_probs(make_masks())
    order = shuffled(bands_of(PLANES, HEIGHT, BAND))
    whole = make_writer("zarr", tmp_path / "a" / "m.zarr", probs)
    write(whole, masks, order, values)
    whole.finish()

    first = make_writer("zarr", tmp_path / "b" / "m.zarr", probs)
    write(first, masks, order[:3], values)
    first.abort()  # stopped: what is durable stays
    again = make_writer("zarr", tmp_path / "b" / "m.zarr", probs)
    assert again.done() == set(order[:3])
    write(again, masks, order[3:], values)
    again.finish()
    assert tree(tmp_path / "b") == tree(tmp_path / "a")
    assert make_writer("zarr", tmp_path / "b" / "m.zarr", probs).done() == set(order)


@pytest.mark.parametrize("probs", [None, "float16"])
def test_ome_zarr_by_column_strips_resumes_to_the_same_arrays(
    tmp_path: Path, small: None, probs: str | None
) -> None:
    """A plane written as column strips (bands (plane, y0, x0)) in any order, resumed after
    an abort, holds the same masks and probabilities as one written by whole rows; strips
    are chunk-aligned (no chunk straddles two), the last one narrower."""
    masks, values = make_masks(), make_probs(make_masks())
    rows = make_writer("zarr", tmp_path / "rows" / "m.zarr", probs)
    write(rows, masks, bands_of(PLANES, HEIGHT, BAND), values)
    rows.finish()

    strip = 48  # 130 columns: strips at 0, 48, 96 (34 wide)
    order = shuffled(bands_of(PLANES, HEIGHT, BAND, WIDTH, strip))
    first = make_writer("zarr", tmp_path / "s" / "m.zarr", probs, strip=strip)
    assert first.strip == strip and list(first.column_starts()) == [0, 48, 96]
    with pytest.raises(ValueError, match="x0 must be a multiple of the strip"):
        first.write_band(0, 0, masks[0, :BAND, 10:58], None if probs is None else values[0, :BAND, 10:58], 10)
    with pytest.raises(ValueError, match=r"a mask band is uint8 \(rows, 48\)"):
        first.write_band(0, 0, masks[0, :BAND, 48:], None, 48)  # the rest of the row, not the strip
    write(first, masks, order[:7], values)
    first.abort()
    again = make_writer("zarr", tmp_path / "s" / "m.zarr", probs, strip=strip)
    assert again.done() == set(order[:7])
    write(again, masks, order[7:], values)
    again.finish()
    level0 = zarr.open_array(tmp_path / "s" / "m.zarr" / "0", mode="r")
    assert strip % level0.chunks[-1] == 0
    for level in range(len(list((tmp_path / "rows" / "m.zarr").glob("[0-9]*")))):
        a = zarr.open_array(tmp_path / "rows" / "m.zarr" / str(level), mode="r")[...]
        b = zarr.open_array(tmp_path / "s" / "m.zarr" / str(level), mode="r")[...]
        assert np.array_equal(a, b), level
    if probs is not None:
        a = zarr.open_array(tmp_path / "rows" / "m.probs.zarr", mode="r")[...]
        b = zarr.open_array(tmp_path / "s" / "m.probs.zarr", mode="r")[...]
        assert np.array_equal(a, b)


def test_tiff_stacks_are_written_by_whole_rows(tmp_path: Path) -> None:
    """A TIFF is written row by row: it has one strip, the plane's width, whatever is asked."""
    writer = make_writer("tiff", tmp_path / "m.tif", strip=48)
    assert writer.strip == WIDTH and list(writer.column_starts()) == [0]


def test_a_torn_journal_line_counts_for_nothing(tmp_path: Path, small: None) -> None:
    masks = make_masks()
    order = shuffled(bands_of(PLANES, HEIGHT, BAND))
    whole = make_writer("zarr", tmp_path / "a" / "m.zarr")
    write(whole, masks, order)
    whole.finish()
    first = make_writer("zarr", tmp_path / "b" / "m.zarr")
    write(first, masks, order[:3])
    del first
    journal = tmp_path / "b" / ".m.zarr.fcnx-done.jsonl"
    p, y, x = order[3]
    with open(journal, "ab") as f:  # a kill mid-append: the line has no end
        f.write(json.dumps({"plane": p, "y0": y, "x0": x}).encode())
    again = make_writer("zarr", tmp_path / "b" / "m.zarr")
    assert again.done() == set(order[:3])
    write(again, masks, order[3:])
    again.finish()
    assert tree(tmp_path / "b") == tree(tmp_path / "a")


def test_a_stale_journal_never_vouches_for_a_new_partial_output(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between publishing and removing the journal leaves a journal of every band; a
    rewrite of that output killed right after creating its partial folder must not resume as done."""
    masks = make_masks()
    path = tmp_path / "m.zarr"
    writer = make_writer("zarr", path)
    write(writer, masks, bands_of(PLANES, HEIGHT, BAND))
    journal = tmp_path / ".m.zarr.fcnx-done.jsonl"
    kept = journal.read_bytes()
    writer.finish()
    journal.write_bytes(kept)

    rewrite = make_writer("zarr", path)
    assert isinstance(rewrite, OmeZarrLabelWriter)
    assert rewrite.done() == set(bands_of(PLANES, HEIGHT, BAND))  # the output is complete

    def killed() -> None:
        raise KeyboardInterrupt  # the kill: before the new journal is written

    monkeypatch.setattr(rewrite.labels.journal, "start", killed)
    with pytest.raises(KeyboardInterrupt):
        write(rewrite, masks, [(0, 0, 0)])
    assert make_writer("zarr", path).done() == set()


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_bands_written_from_several_threads(tmp_path: Path, small: None, kind: str) -> None:
    masks = make_masks(4)
    values = make_probs(masks)
    order = shuffled(bands_of(4, HEIGHT, BAND))
    one = make_writer(kind, tmp_path / "a" / NAMES[kind], "uint8", planes=4)
    write(one, masks, order, values)
    one.finish()
    many = make_writer(kind, tmp_path / "b" / NAMES[kind], "uint8", planes=4)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda band: write(many, masks, [band], values), order))
    assert many.done() == set(order)
    many.finish()
    assert tree(tmp_path / "b") == tree(tmp_path / "a")


# -- probabilities --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
@pytest.mark.parametrize("probs", ["float16", "uint8", "npy", "png"])
def test_probabilities_beside_the_masks(tmp_path: Path, kind: str, probs: str) -> None:
    masks = make_masks()
    values = make_probs(masks)
    writer = make_writer(kind, tmp_path / NAMES[kind], probs)
    write(writer, masks, shuffled(bands_of(PLANES, HEIGHT, BAND)), values)
    writer.finish()
    assert probs_path(tmp_path / NAMES[kind]) == tmp_path / "m.probs.zarr"
    array = zarr.open_array(tmp_path / "m.probs.zarr", mode="r")
    assert array.shape == (PLANES, HEIGHT, WIDTH, 3)
    assert array.metadata.zarr_format == 2
    stored = array[...]
    if probs in ("float16", "npy"):
        assert array.dtype == np.float16
        assert np.array_equal(stored, values.astype(np.float16))
        assert array.attrs["encoding"] == "probability"
    else:
        assert array.dtype == np.uint8
        assert np.array_equal(stored, np.rint(values * 255).astype(np.uint8))
        assert array.attrs["encoding"] == "round(probability * 255)"
    assert array.attrs["classes"] == list(CARD.classes)
    assert array.attrs["axes"] == ["z", "y", "x", "class"]


def test_sigmoid_probabilities_have_one_channel(tmp_path: Path) -> None:
    card = CARD.replace(classes=("background", "membrane"), palette=default_palette(2), output_kind="sigmoid")
    masks = make_masks() % 2
    values = make_probs(masks, channels=1)
    writer = OmeZarrLabelWriter(tmp_path / "m.zarr", PLANES, HEIGHT, WIDTH, BAND, card, probs="float16")
    write(writer, masks, bands_of(PLANES, HEIGHT, BAND), values)
    writer.finish()
    assert zarr.open_array(tmp_path / "m.probs.zarr", mode="r").shape == (PLANES, HEIGHT, WIDTH, 1)


def test_probabilities_of_another_dtype_are_written_again(tmp_path: Path) -> None:
    masks = make_masks()
    values = make_probs(masks)
    writer = make_writer("zarr", tmp_path / "m.zarr", "float16")
    write(writer, masks, bands_of(PLANES, HEIGHT, BAND), values)
    writer.finish()
    assert make_writer("zarr", tmp_path / "m.zarr", "float16").done() == set(bands_of(PLANES, HEIGHT, BAND))
    assert make_writer("zarr", tmp_path / "m.zarr", "uint8").done() == set()


def test_a_finished_tiff_without_its_probabilities_is_not_finished(tmp_path: Path) -> None:
    masks = make_masks()
    writer = make_writer("tiff", tmp_path / "m.tif")
    write(writer, masks, bands_of(PLANES, HEIGHT, BAND))
    writer.finish()
    again = make_writer("tiff", tmp_path / "m.tif", "uint8")
    assert again.done() == set()
    with pytest.raises(ValueError, match=f"{tmp_path / 'm.probs.zarr'}: no band was written"):
        again.finish()


# -- kills at the writers' named moments ----------------------------------------------------


def run_child(kind: str, out: str, probs: str) -> None:
    """A killed run (a subprocess): the kill-test masks, band by band, each band's (plane, y0)
    printed once ``write_band`` returned, then ``finish``."""
    ome_zarr.PYRAMID_MIN = SMALL["PYRAMID_MIN"]
    tiff_stack.TILE_ABOVE, tiff_stack.TILE = SMALL["TILE_ABOVE"], SMALL["TILE"]
    masks = make_masks()
    values = make_probs(masks)
    writer = make_writer(kind, Path(out) / NAMES[kind], probs or None)
    for band in shuffled(bands_of(PLANES, HEIGHT, BAND)):
        write(writer, masks, [band], values)
        print(*band, flush=True)
    writer.finish()


def child(kind: str, out: Path, probs: str | None, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from tests.runtime.test_array_writers import run_child; run_child(*sys.argv[1:])"
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at:
        env[KILL_AT] = kill_at
    command = [sys.executable, "-c", code, kind, str(out), probs or ""]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def unkilled(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str | None], dict[str, bytes | None]]:
    """The trees of uninterrupted runs, by (kind, probs), made on first use."""
    root = tmp_path_factory.mktemp("unkilled")

    class Trees(dict[tuple[str, str | None], dict[str, bytes | None]]):
        def __missing__(self, key: tuple[str, str | None]) -> dict[str, bytes | None]:
            out = root / f"{key[0]}-{key[1]}"
            done = child(key[0], out, key[1], None)
            assert done.returncode == 0, done.stderr[-2000:]
            self[key] = tree(out)
            return self[key]

    return Trees()


KILLS = [
    ("tiff", None, "band-written:m.tif#3"),
    ("tiff", None, "band-done:m.tif#5"),
    ("tiff", None, "before-publish:m.tif"),
    ("tiff", None, "before-replace:p*.zlib#4"),  # a part's temp complete, not yet in place
    ("tiff", "float16", "band-written:m.probs.zarr#2"),
    ("tiff", "float16", "band-done:m.probs.zarr#4"),
    ("tiff", "float16", "before-publish:m.probs.zarr"),
    ("zarr", "uint8", "band-written:m.zarr#3"),
    ("zarr", "uint8", "band-done:m.zarr#5"),
    ("zarr", "uint8", "before-publish:m.zarr"),
    ("zarr", None, "before-replace:.m.zarr.fcnx-done.jsonl"),  # partial folder made, journal not
    ("zarr", "float16", "band-written:m.probs.zarr#2"),
    ("zarr", "float16", "before-publish:m.probs.zarr"),
]


@pytest.mark.parametrize(("kind", "probs", "kill_at"), KILLS)
def test_a_kill_at_each_moment_resumes_to_the_same_bytes(
    tmp_path: Path,
    small: None,
    unkilled: dict[tuple[str, str | None], dict[str, bytes | None]],
    kind: str,
    probs: str | None,
    kill_at: str,
) -> None:
    out = tmp_path / "out"
    killed = child(kind, out, probs, kill_at)
    assert killed.returncode == -9, (kill_at, killed.returncode, killed.stderr[-2000:])
    order = shuffled(bands_of(PLANES, HEIGHT, BAND))
    reported = [tuple(int(v) for v in line.split()) for line in killed.stdout.splitlines()]
    assert reported == order[: len(reported)]

    writer = make_writer(kind, out / NAMES[kind], probs)
    done = writer.done()
    if kill_at.startswith("before-publish"):
        assert done == set(order)
    else:  # every band reported is done; the one being written may be, if wholly durable
        assert set(reported) <= done <= set(order[: len(reported) + 1])
    masks = make_masks()
    write(writer, masks, [b for b in order if b not in done], make_probs(masks))
    writer.finish()
    assert tree(out) == unkilled[kind, probs]


# -- geometry errors ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_bands_that_do_not_fit_are_value_errors_naming_the_output(tmp_path: Path, kind: str) -> None:
    path = tmp_path / NAMES[kind]
    writer = make_writer(kind, path, "float16")
    good = np.zeros((BAND, WIDTH), np.uint8)
    probs = np.zeros((BAND, WIDTH, 3), np.float32)
    bad: list[tuple[int, int, np.ndarray, np.ndarray | None]] = [
        (2, 0, good, probs),  # no plane 2
        (-1, 0, good, probs),
        (0, 16, good, probs),  # not on a band border
        (0, 128, good, probs),  # below the plane
        (0, -32, good, probs),
        (0, 0, good.astype(np.int32), probs),
        (0, 0, good[:, :-1], probs),
        (0, 0, good[None], probs),
        (0, 0, good[:20], probs[:20]),  # a short band that is not the plane's last
        (0, 64, np.zeros((40, WIDTH), np.uint8), np.zeros((40, WIDTH, 3))),  # past the plane's end
        (0, 0, good[:0], probs[:0]),
        (0, 0, good, None),  # probabilities expected
        (0, 0, good, probs[..., :2]),
        (0, 0, good, probs.astype(np.uint8)),  # probabilities are floats
    ]
    for plane, y0, mask, band_probs in bad:
        with pytest.raises(ValueError, match=str(path)):
            writer.write_band(plane, y0, mask, band_probs)
    assert writer.done() == set()
    writer.write_band(0, 96, np.zeros((4, WIDTH), np.uint8), np.zeros((4, WIDTH, 3)))  # the short last band
    writer.write_band(
        1, 0, np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH, 3))
    )  # a whole plane
    assert writer.done() == {(0, 96, 0), *((1, y, 0) for y in range(0, HEIGHT, BAND))}
    with pytest.raises(
        ValueError, match=rf"{path}: 3 bands not written yet \(the first: plane 0, rows 0\.\.\)"
    ):
        writer.finish()


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_writers_refuse_impossible_geometry(tmp_path: Path, kind: str) -> None:
    path = tmp_path / NAMES[kind]
    with pytest.raises(ValueError, match=str(path)):
        make_writer(kind, path, band=0)
    with pytest.raises(ValueError, match=str(path)):
        make_writer(kind, path, probs="float32")
    with pytest.raises(ValueError, match="plane_shape"):
        make_writer(kind, path, planes=6, plane_axes="TZ")
    with pytest.raises(ValueError, match="do not make 2 planes"):
        make_writer(kind, path, plane_axes="")
    with pytest.raises(ValueError, match="no band was written"):
        make_writer(kind, path).finish()


def test_ngff_cannot_order_some_plane_axes(tmp_path: Path) -> None:
    with pytest.raises(ArrayError, match="time must be the first axis"):
        make_writer("zarr", tmp_path / "m.zarr", planes=6, plane_axes="ZT", plane_shape=(2, 3))
    make_writer("tiff", tmp_path / "m.tif", planes=6, plane_axes="ZT", plane_shape=(2, 3))  # a TIFF takes any


# -- output names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "fmt", "expected"),
    [
        ("x.h5:/data", "zarr", "x.zarr"),
        ("x.h5:/data", "tiff", "x.tif"),
        ("sub/x.HDF5:/a/b", "zarr", "sub/x.zarr"),
        ("stack.ome.tif", "tiff", "stack.tif"),
        ("stack.ome.tiff", "zarr", "stack.zarr"),
        ("stack.tif", "tiff", "stack.tif"),
        ("day1/stack.TIFF", "tiff", "day1/stack.TIFF"),
        ("big.btf", "tiff", "big.tif"),
        ("vol.ome.zarr", "zarr", "vol.ome.zarr"),
        ("vol.ome.zarr", "tiff", "vol.tif"),
        ("vol.zarr", "zarr", "vol.zarr"),
        ("vol.n5", "zarr", "vol.zarr"),
        ("a/./b.tif", "zarr", "a/b.zarr"),
    ],
)
def test_output_path(relative: str, fmt: str, expected: str) -> None:
    assert output_path(Path("/out"), relative, fmt) == Path("/out") / expected


@pytest.mark.parametrize("relative", ["../x.tif", "a/../../x.tif", "a/../x.tif", "/abs/x.tif", "", "."])
def test_output_path_stays_below_the_output_folder(relative: str) -> None:
    with pytest.raises(ValueError, match="below the output folder"):
        output_path(Path("/out"), relative, "tiff")


def test_output_path_knows_its_formats() -> None:
    assert sorted(OUTPUT_FORMATS) == ["png", "tiff", "zarr"]
    assert OUTPUT_FORMATS["tiff"] is TiffStackWriter and OUTPUT_FORMATS["zarr"] is OmeZarrLabelWriter
    with pytest.raises(ValueError, match="output format"):
        output_path(Path("/out"), "x.tif", "bmp")


def test_base_and_probs_names() -> None:
    assert base_name("vol.ome.zarr") == "vol"
    assert base_name("stack.TIF") == "stack"
    assert base_name("x.h5") == "x"
    assert base_name("a.b") == "a.b"
    assert base_name(".zarr") == ".zarr"
    assert probs_path(Path("/o/s.tif")) == Path("/o/s" + PROBS_SUFFIX)
    assert probs_path(Path("/o/d/vol.ome.zarr")) == Path("/o/d/vol.probs.zarr")


def test_progress_paths_name_everything_an_unfinished_write_leaves(tmp_path: Path) -> None:
    assert progress_paths(Path("/o/s.tif")) == [
        Path("/o/.s.tif.fcnx-parts"),
        Path("/o/.s.tif.fcnx-partial"),
        Path("/o/.s.tif.fcnx-done.jsonl"),
        Path("/o/.s.probs.zarr.fcnx-parts"),
        Path("/o/.s.probs.zarr.fcnx-partial"),
        Path("/o/.s.probs.zarr.fcnx-done.jsonl"),
    ]
    masks, values = make_masks(), make_probs(make_masks())
    for kind in ("tiff", "zarr"):
        path = tmp_path / kind / NAMES[kind]
        write(make_writer(kind, path, "uint8"), masks, bands_of(PLANES, HEIGHT, BAND)[:3], values)
        left = sorted(p for p in path.parent.iterdir())
        assert left and set(left) <= set(progress_paths(path))
        assert all(is_progress_name(p.name) and not is_temp_name(p.name) for p in left)
    for name in (
        "x.zarr",
        ".x.zarr",
        ".x.zarr.swp",
        "x.zarr.fcnx-partial",
        ".fcnx-parts",
        ".x.tif.fcnx-parts.1",
    ):
        assert not is_progress_name(name), name


# -- mosaics --------------------------------------------------------------------------------


@pytest.fixture
def slices() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (64, 64), np.uint8) for _ in range(3)]


def test_mosaic_windows_are_mirrored_slices(slices: list[np.ndarray]) -> None:
    mosaic = Mosaic(slices)
    full = mosaic.window(1, 0, 300, 0, 260)
    assert np.array_equal(full[:64, :64], slices[1])
    assert np.array_equal(full[:64, 64:128], slices[(1 + 3) % 3][:, ::-1])  # mirrored tile column
    assert np.array_equal(full[64:128, :64], slices[(1 + 7) % 3][::-1])  # mirrored tile row
    assert np.array_equal(mosaic.window(1, 37, 201, 90, 259), full[37:201, 90:259])
    assert np.array_equal(mosaic.window(1, 0, 150, 0, 130, step=2), full[::2, ::2])
    with pytest.raises(ValueError, match="one shape"):
        Mosaic([slices[0], slices[1][:32]])


@pytest.fixture
def largest_window(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The largest window a mosaic writer asked for (px): what it holds at once."""
    seen = [0]
    window = Mosaic.window

    def spy(self: Mosaic, plane: int, y0: int, y1: int, x0: int, x1: int, step: int = 1) -> np.ndarray:
        seen[0] = max(seen[0], (y1 - y0) * (x1 - x0))
        return window(self, plane, y0, y1, x0, x1, step)

    monkeypatch.setattr(mosaic_module.Mosaic, "window", spy)
    return seen


def test_tiff_mosaic(tmp_path: Path, slices: list[np.ndarray], largest_window: list[int]) -> None:
    mosaic = Mosaic(slices)
    path = write_mosaic(slices, tmp_path / "m.tif", (300, 260), "tiff", tile=64, planes=2)
    assert largest_window[0] == 64 * 64  # tile by tile
    assert sorted(os.listdir(tmp_path)) == ["m.tif"]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and len(tif.pages) == 2
        assert all(page.is_tiled and page.tilelength == 64 for page in tif.pages)
        stack = tif.asarray()
    assert stack.shape == (2, 300, 260)
    for plane in range(2):
        assert np.array_equal(stack[plane], mosaic.window(plane, 0, 300, 0, 260))
        for y0, y1, x0, x1 in [(0, 64, 0, 64), (50, 250, 70, 260), (299, 300, 0, 260)]:
            assert np.array_equal(stack[plane, y0:y1, x0:x1], mosaic.window(plane, y0, y1, x0, x1))

    flat = write_mosaic(slices, tmp_path / "flat.tif", (300, 260), "tiff", tile=64, levels=2)
    with tifffile.TiffFile(flat) as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(300, 260), (150, 130)]
        assert np.array_equal(levels[0].asarray(), mosaic.window(0, 0, 300, 0, 260))
        assert np.array_equal(levels[1].asarray(), mosaic.window(0, 0, 150, 0, 130, step=2))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_mosaic(
    tmp_path: Path, slices: list[np.ndarray], largest_window: list[int], zarr_format: int
) -> None:
    mosaic = Mosaic(slices)
    path = write_mosaic(
        slices,
        tmp_path / "m.zarr",
        (300, 260),
        "ome-zarr",
        tile=64,
        planes=2,
        levels=2,
        zarr_format=zarr_format,
    )
    assert largest_window[0] == 64 * 64  # chunk by chunk
    assert sorted(os.listdir(tmp_path)) == ["m.zarr"]
    group = zarr.open_group(path, mode="r")
    assert group.metadata.zarr_format == zarr_format
    for level, shape in enumerate([(300, 260), (150, 130)]):
        array = group[str(level)]
        assert array.shape == (2, *shape) and array.chunks == (1, 64, 64)
        for plane in range(2):
            assert np.array_equal(array[plane], mosaic.window(plane, 0, shape[0], 0, shape[1], 2**level))
            assert np.array_equal(
                array[plane, 10:140, 60:130], mosaic.window(plane, 10, 140, 60, 130, 2**level)
            )
    attrs = dict(group.attrs)
    if zarr_format == 2:
        (multiscale,) = attrs["multiscales"]
        assert multiscale["version"] == "0.4"
    else:
        assert attrs["ome"]["version"] == "0.5"
        (multiscale,) = attrs["ome"]["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]] == [
        [1.0, 1.0, 1.0],
        [1.0, 2.0, 2.0],
    ]


def test_mosaic_arguments_are_checked(tmp_path: Path, slices: list[np.ndarray]) -> None:
    bad: list[dict[str, Any]] = [
        {"format": "png"},
        {"tile": 40},
        {"planes": 0},
        {"levels": 0},
        {"size": (0, 10)},
    ]
    for kwargs in bad:
        arguments: dict[str, Any] = {"size": (64, 64), **kwargs}
        with pytest.raises(ValueError):
            write_mosaic(slices, tmp_path / "m.tif", **arguments)
    with pytest.raises(ValueError, match="2D"):
        write_mosaic(slices, tmp_path / "m.tif", (64, 64), planes=2, levels=2)
    assert os.listdir(tmp_path) == []


# -- PNG per plane (--output-format png) -----------------------------------------------------


def test_png_planes_are_named_by_their_axes_and_written_when_complete(tmp_path: Path) -> None:
    from fcnx.runtime.arrays.png_planes import PngPlanesWriter, plane_names

    assert plane_names("vol", "", ()) == ["vol.png"]
    assert plane_names("vol", "TZ", (2, 3))[:4] == ["vol-t0000-z0000.png", "vol-t0000-z0001.png",
                                                     "vol-t0000-z0002.png", "vol-t0001-z0000.png"]  # fmt: skip
    assert plane_names("vol", "Z", (12345,))[-1] == "vol-z12344.png"
    writer = PngPlanesWriter(tmp_path / "vol", 2, 70, 30, 32, CARD)
    masks = np.random.default_rng(0).integers(0, 3, (2, 70, 30), dtype=np.uint8)
    writer.write_band(0, 0, masks[0, :32])
    assert writer.done() == set() and not (tmp_path / "vol-z0000.png").exists()  # plane 0 incomplete
    writer.write_band(0, 32, masks[0, 32:])
    assert writer.done() == {(0, 0, 0), (0, 32, 0), (0, 64, 0)}
    with pytest.raises(ValueError, match="1 plane masks not written yet"):
        writer.finish()
    writer.write_band(1, 0, masks[1])
    writer.finish()
    for i in range(2):
        with Image.open(tmp_path / f"vol-z{i:04d}.png") as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.asarray(image), masks[i])
    again = PngPlanesWriter(tmp_path / "vol", 2, 70, 30, 32, CARD)
    assert again.done() == again.all_bands()


def test_png_planes_refuse_planes_read_by_windows(tmp_path: Path) -> None:
    from fcnx.runtime.arrays.png_planes import PngPlanesWriter

    with pytest.raises(ValueError, match="need --output-format zarr or tiff"):
        PngPlanesWriter(tmp_path / "big", 1, 5000, 4000, 512, CARD)
