"""The array readers (runtime/arrays: tiff.py, zarr_source.py, hdf5.py, source.py's open_array):
windows equal numpy's slices of what was written, axes and levels come from the metadata,
damaged inputs fail with one line naming the file and the page or chunk, inputs stay
byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tifffile = pytest.importorskip("tifffile", reason="the volumes extra (tifffile) is not installed")
zarr = pytest.importorskip("zarr", reason="the volumes extra (zarr) is not installed")
h5py = pytest.importorskip("h5py", reason="the volumes extra (h5py) is not installed")
pytest.importorskip("imagecodecs", reason="the volumes extra (imagecodecs) is not installed")

from fcnx.runtime.arrays.readers import is_array_input, open_array  # noqa: E402
from fcnx.runtime.arrays.source import ArrayError, ArrayInfo, ArraySource, describe  # noqa: E402
from fcnx.runtime.backends.base import MissingExtra  # noqa: E402

RNG = np.random.default_rng(7)
WINDOWS = [(0, 13, 0, 17), (5, 70, 30, 100), (60, 100, 64, 120), (0, 100, 0, 120)]


def stack(shape: tuple[int, ...] = (5, 100, 120), dtype: str = "uint8") -> np.ndarray:
    return RNG.integers(0, 250, shape).astype(dtype)


def assert_windows(source: ArraySource, planes: np.ndarray) -> None:
    """Every plane's windows equal numpy's (planes: (planes, H, W, C))."""
    assert source.info.planes == len(planes)
    h, w = source.info.height, source.info.width
    for plane in range(len(planes)):
        for y0, y1, x0, x1 in WINDOWS:
            y0, y1, x0, x1 = min(y0, h - 1), min(y1, h), min(x0, w - 1), min(x1, w)
            got = source.read(plane, y0, y1, x0, x1)
            assert got.dtype == planes.dtype
            assert got.shape == (y1 - y0, x1 - x0, source.info.channels)
            np.testing.assert_array_equal(got, planes[plane, y0:y1, x0:x1])
        np.testing.assert_array_equal(source.read_plane(plane), planes[plane])


def digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) -> its SHA-256."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --- TIFF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_multipage_tiff_is_read_by_windows(tmp_path: Path, compression: str | None) -> None:
    data = stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression=compression)
    before = digest(path)
    with open_array(path) as source:
        assert source.info.format == "tiff"
        assert source.info.axes == "QYX" and source.info.shape == (5, 100, 120)
        assert source.info.plane_label(3) == "q=3"
        assert_windows(source, data[..., None])
    assert digest(path) == before


def test_a_plain_multipage_tiff_has_an_i_axis(tmp_path: Path) -> None:
    data = stack((4, 60, 70))
    path = tmp_path / "pil.tif"
    pages = [Image.fromarray(p) for p in data]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with open_array(path) as source:
        assert source.info.axes == "IYX"
        assert source.info.plane_label(2) == "i=2"
        assert_windows(source, data[..., None])


def test_an_ome_tiff_gives_its_axes_and_plane_labels(tmp_path: Path) -> None:
    data = stack((2, 3, 2, 64, 80), "uint16")
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TZCYX"}, compression="zlib")
    with open_array(path) as source:
        info = source.info
        assert (info.format, info.axes, info.shape, info.dtype) == ("ome-tiff", "TZCYX", data.shape, "uint16")
        assert info.channel_axis is None and info.channels == 1  # C of 2 counts planes
        assert info.planes == 12 and info.plane_axes == "TZC"
        assert info.plane_label(0) == "t=0,z=0,c=0"
        assert info.plane_label(11) == "t=1,z=2,c=1"
        assert info.plane_label(7) == "t=1,z=0,c=1"
        assert_windows(source, data.reshape(12, 64, 80, 1))
        lines = describe(info)
        assert "shape: 2x3x2x64x80 (TZCYX)" in lines and "dtype: uint16" in lines
        assert any(line.startswith("planes: 12 ") for line in lines)


def test_rgb_channels_stored_as_samples_or_as_pages(tmp_path: Path) -> None:
    rgb = stack((2, 50, 60, 3))
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with open_array(tmp_path / "rgb.tif") as source:
        assert source.info.axes == "QYXS" and source.info.channels == 3
        assert_windows(source, rgb)
    planar = np.ascontiguousarray(np.moveaxis(rgb, -1, 1))  # (Z, C, Y, X): each channel a page
    tifffile.imwrite(tmp_path / "zc.ome.tif", planar, ome=True, metadata={"axes": "ZCYX"}, compression="zlib")
    with open_array(tmp_path / "zc.ome.tif") as source:
        assert source.info.axes == "ZCYX" and source.info.channel_axis == "C" and source.info.channels == 3
        assert_windows(source, rgb)


@pytest.mark.parametrize("layout", [{"tile": (64, 64)}, {"rowsperstrip": 16}])
def test_a_bigtiff_tiled_or_striped_is_read_by_windows(tmp_path: Path, layout: dict[str, object]) -> None:
    data = stack((2, 200, 256), "uint16")
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, bigtiff=True, compression="zlib", **layout)
    with open_array(path) as source:
        assert source.info.format == "bigtiff"
        expected_chunks = (1, 64, 64) if "tile" in layout else (1, 16, 256)
        assert source.info.chunks == expected_chunks
        assert_windows(source, data[..., None])
        np.testing.assert_array_equal(source.read(1, 130, 200, 200, 256)[..., 0], data[1, 130:200, 200:256])


def test_a_pyramid_ome_tiff_reads_the_level_asked(tmp_path: Path) -> None:
    data = stack((3, 256, 256))
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            data,
            subifds=2,
            tile=(64, 64),
            compression="zlib",
            photometric="minisblack",
            metadata={"axes": "ZYX"},
        )
        tif.write(
            data[:, ::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib", photometric="minisblack"
        )
        tif.write(
            data[:, ::4, ::4], subfiletype=1, tile=(64, 64), compression="zlib", photometric="minisblack"
        )
    with open_array(path, level=1) as source:
        info = source.info
        assert info.levels == ((3, 256, 256), (3, 128, 128), (3, 64, 64))
        assert info.level == 1 and info.shape == (3, 128, 128) and info.axes == "ZYX"
        assert_windows(source, data[:, ::2, ::2, None])
        assert any(line.startswith("pyramid levels: 3") for line in describe(info))
    with pytest.raises(
        ArrayError, match=r"pyramid\.ome\.tif: no pyramid level 3: its levels are 0 \(3x256x256\)"
    ):
        open_array(path, level=3)
    tifffile.imwrite(tmp_path / "flat.tif", data, photometric="minisblack")
    with pytest.raises(ArrayError, match=r"no pyramid level 1: it has one level \(0\)"):
        open_array(tmp_path / "flat.tif", level=1)


def test_without_zarr_a_tiff_is_read_page_by_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression="zlib")
    monkeypatch.setitem(sys.modules, "zarr", None)
    with open_array(path) as source:
        assert source._zarr is None and source._memmap is None  # type: ignore[attr-defined]
        assert_windows(source, data[..., None])


def test_a_truncated_tiff_names_the_page(tmp_path: Path) -> None:
    data = stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[4]
        data_at, ifd_at = int(last.dataoffsets[0]), int(last.offset)
    whole = path.read_bytes()
    path.write_bytes(whole[: data_at + 100])  # page 4's header is whole, its data cut
    with open_array(path) as source:
        np.testing.assert_array_equal(source.read_plane(3)[..., 0], data[3])
        with pytest.raises(ArrayError, match=r"^\S*stack\.tif: page 4: cannot decode \(") as error:
            source.read(4, 0, 10, 0, 10)
        assert "\n" not in str(error.value)
    path.write_bytes(whole[: ifd_at - 10])  # page 4's header is gone too
    with pytest.raises(ArrayError, match=r"stack\.tif: page 4: cannot read its header .*truncated"):
        open_array(path)
    pages = [Image.fromarray(p) for p in data[:2]]
    pages[0].save(tmp_path / "two.tif", save_all=True, append_images=pages[1:])
    with tifffile.TiffFile(tmp_path / "two.tif") as tif:
        second = min(int(tif.pages[1].offset), int(tif.pages[1].dataoffsets[0]))
    (tmp_path / "two.tif").write_bytes((tmp_path / "two.tif").read_bytes()[:second])
    assert is_array_input(tmp_path / "two.tif")  # never read as page 0 alone: the array reader says why
    with pytest.raises(ArrayError, match=r"two\.tif: page 1: cannot read its header"):
        open_array(tmp_path / "two.tif")


def test_a_truncated_uncompressed_tiff_names_the_page(tmp_path: Path) -> None:
    data = stack()
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, data)
    with tifffile.TiffFile(path) as tif:
        start = int(tif.series[0].dataoffset)
    # tifffile writes a contiguous stack as page 0's header, every page's data, the other
    # headers: cutting the data loses the headers of pages 1-4 too
    path.write_bytes(path.read_bytes()[: start + 2 * 12000 + 50])
    with pytest.raises(ArrayError, match=r"raw\.tif: page 1: cannot read its header .*truncated"):
        open_array(path)


# --- Zarr -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_a_zarr_array_is_read_by_windows(tmp_path: Path, version: int) -> None:
    data = stack((3, 100, 120), "uint16")
    path = tmp_path / f"v{version}.zarr"
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, chunks=(1, 32, 32), zarr_format=version
    )
    array[:] = data
    before = digest(path)
    with open_array(path) as source:
        assert (source.info.format, source.info.axes, source.info.chunks) == ("zarr", "ZYX", (1, 32, 32))
        assert_windows(source, data[..., None])
    assert digest(path) == before


def test_a_sharded_zarr_v3_array_is_read_by_windows(tmp_path: Path) -> None:
    data = stack((2, 128, 128))
    path = tmp_path / "sharded.zarr"
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, chunks=(1, 32, 32), shards=(1, 64, 64)
    )
    array[:] = data
    with open_array(path) as source:
        assert source.info.chunks == (1, 32, 32)
        assert_windows(source, data[..., None])
    (path / "c" / "1" / "1" / "0").write_bytes(b"garbage" * 20)
    with (
        open_array(path) as source,
        pytest.raises(ArrayError, match=r"sharded\.zarr: shard c/1/1/0 \(z=1, rows"),
    ):
        source.read(1, 60, 100, 0, 20)


def write_ome_zarr(path: Path, data: np.ndarray, version: int, axes: list[dict[str, str]]) -> None:
    group = zarr.open_group(path, mode="w", zarr_format=version)
    for level in range(2):
        step = 2**level
        group.create_array(
            str(level), data=data[..., ::step, ::step], chunks=(*[1] * (data.ndim - 2), 32, 32)
        )
    multiscales = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}]
    if version == 2:
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}


@pytest.mark.parametrize("version", [2, 3])
def test_an_ome_zarr_image_gives_its_axes_and_levels(tmp_path: Path, version: int) -> None:
    data = stack((2, 3, 96, 128))
    path = tmp_path / "image.ome.zarr"
    axes = [{"name": "c", "type": "channel"}, {"name": "z", "type": "space"}]
    axes += [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    write_ome_zarr(path, data, version, axes)
    before = digest(path)
    with open_array(path) as source:
        info = source.info
        assert (info.format, info.axes, info.levels) == (
            "ome-zarr",
            "CZYX",
            ((2, 3, 96, 128), (2, 3, 48, 64)),
        )
        assert info.plane_label(4) == "c=1,z=1"
        assert_windows(source, data.reshape(6, 96, 128, 1))
    with open_array(path, level=1) as source:
        assert source.info.shape == (2, 3, 48, 64)
        assert_windows(source, data[..., ::2, ::2].reshape(6, 48, 64, 1))
    with pytest.raises(
        ArrayError, match=r"no pyramid level 2: its levels are 0 \(2x3x96x128\), 1 \(2x3x48x64\)"
    ):
        open_array(path, level=2)
    assert digest(path) == before


def test_a_zarr_group_of_one_array_is_that_array_and_of_several_is_refused(tmp_path: Path) -> None:
    data = stack((2, 40, 50))
    group = zarr.open_group(tmp_path / "one.zarr", mode="w")
    group.create_group("inner").create_array("raw", data=data)
    with open_array(tmp_path / "one.zarr") as source:
        assert source.info.shape == (2, 40, 50)
        assert_windows(source, data[..., None])
    group.create_array("labels", data=data)
    with pytest.raises(ArrayError, match=r"one\.zarr: a Zarr group of 2 arrays .*\(inner/raw, labels\)"):
        open_array(tmp_path / "one.zarr")


def test_a_damaged_zarr_chunk_is_named_and_a_missing_one_is_the_fill_value(tmp_path: Path) -> None:
    data = stack((3, 64, 64))
    path = tmp_path / "vol.zarr"
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, chunks=(1, 32, 32), zarr_format=2, fill_value=7
    )
    array[:] = data
    (path / "1.0.1").write_bytes(b"not zstd at all" * 8)
    (path / "2.1.1").unlink()
    with open_array(path) as source:
        np.testing.assert_array_equal(
            source.read(1, 0, 32, 0, 32)[..., 0], data[1, :32, :32]
        )  # chunk 1.0.0 is fine
        with pytest.raises(
            ArrayError, match=r"^\S*vol\.zarr: chunk 1\.0\.1 \(z=1, rows 0-40\): cannot decode \("
        ):
            source.read(1, 0, 40, 0, 64)
        plane = source.read_plane(2)[..., 0]
        np.testing.assert_array_equal(plane[32:, 32:], 7)
        np.testing.assert_array_equal(plane[:32], data[2, :32])


def test_an_n5_container_is_refused_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "vol.n5"
    path.mkdir()
    (path / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    with pytest.raises(
        ArrayError, match=r"vol\.n5: an N5 container, .*zarr 3 has no N5 support.*convert it to Zarr"
    ):
        open_array(path)
    assert is_array_input(path)


# --- HDF5 -----------------------------------------------------------------------------------


def test_hdf5_datasets_by_spec(tmp_path: Path) -> None:
    data = stack((3, 80, 90), "uint16")
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("grp/data", data=data, chunks=(1, 32, 32), compression="gzip")
        f.create_dataset("meta", data=np.arange(5))  # 1D: not an image
    before = digest(path)
    for spec in (str(path), f"{path}:/grp/data"):
        with open_array(spec) as source:
            info = source.info
            assert (info.format, info.axes, info.shape, info.chunks) == (
                "hdf5",
                "ZYX",
                (3, 80, 90),
                (1, 32, 32),
            )
            assert_windows(source, data[..., None])
    assert digest(path) == before
    with pytest.raises(ArrayError, match=r"f\.h5: no dataset /foo \(datasets: /grp/data\)$"):
        open_array(f"{path}:/foo")
    with pytest.raises(ArrayError, match=r"f\.h5:/grp: a group, not a dataset"):
        open_array(f"{path}:/grp")
    with h5py.File(path, "a") as f:
        f.create_dataset("other", data=data[0])
    with pytest.raises(ArrayError, match=r"f\.h5: 2 image datasets \(/grp/data, /other\): give one"):
        open_array(path)
    with open_array(f"{path}:/other") as source:
        assert source.info.axes == "YX" and source.info.planes == 1
        assert_windows(source, data[:1, ..., None])


def test_hdf5_axes_from_an_attribute(tmp_path: Path) -> None:
    data = stack((2, 3, 40, 50))
    path = tmp_path / "t.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data).attrs["axes"] = "tzyx"
    with open_array(f"{path}:/x") as source:
        assert source.info.axes == "TZYX" and source.info.plane_label(5) == "t=1,z=2"
        assert_windows(source, data.reshape(6, 40, 50, 1))


# --- axes -----------------------------------------------------------------------------------


def test_an_axes_override_must_fit_the_shape(tmp_path: Path) -> None:
    data = stack((4, 3, 40, 50))
    path = tmp_path / "a.zarr"
    zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=(1, 1, 40, 50))[:] = data
    with open_array(path) as source:
        assert source.info.axes == "CZYX"  # the default of 4 dimensions
    with open_array(path, axes="zcyx") as source:  # C of 3: the channels
        assert source.info.axes == "ZCYX" and source.info.channels == 3 and source.info.planes == 4
        assert_windows(source, np.moveaxis(data, 1, -1))
    for axes, message in [
        ("ZYX", r"a\.zarr \(shape 4x3x40x50\): --axes 'ZYX' has 3 letters for 4 dimensions"),
        ("TZYY", r"a\.zarr \(shape 4x3x40x50\): --axes 'TZYY' names Y more than once"),
        ("TZCY", r"a\.zarr \(shape 4x3x40x50\): --axes 'TZCY' has no X"),
        ("TZBX", r"a\.zarr \(shape 4x3x40x50\): --axes 'TZBX': B is no axis"),
    ]:
        with pytest.raises(ArrayError, match=message):
            open_array(path, axes=axes)
    tifffile.imwrite(tmp_path / "s.tif", data[0], photometric="minisblack")
    with pytest.raises(ArrayError, match=r"s\.tif \(shape 3x40x50\): --axes 'YX' has 2 letters"):
        open_array(tmp_path / "s.tif", axes="YX")


def test_an_rgb_array_without_metadata_is_yxs() -> None:
    info = ArrayInfo("x", "zarr", "YXS", (40, 50, 3), "uint8", None, ((40, 50, 3),))
    assert info.channels == 3 and info.planes == 1 and info.plane_label(0) == ""
    from fcnx.runtime.arrays.source import default_axes

    assert default_axes("x", (40, 50, 3)) == "YXS"
    assert default_axes("x", (3, 40, 50)) == "ZYX"
    assert default_axes("x", (2, 3, 4, 40, 50)) == "TCZYX"
    with pytest.raises(ArrayError, match=r"6 dimensions and no axes in its metadata: give them with --axes"):
        default_axes("x", (1, 2, 3, 4, 40, 50))


# --- which inputs are arrays ------------------------------------------------------------------


def test_is_array_input(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "one.tif", stack((60, 70)))
    tifffile.imwrite(tmp_path / "rgb.tif", stack((60, 70, 3)), photometric="rgb")
    tifffile.imwrite(tmp_path / "pages.tif", stack())
    tifffile.imwrite(tmp_path / "big.tif", stack((60, 70)), bigtiff=True)
    tifffile.imwrite(tmp_path / "ij.tif", stack((2, 3, 20, 30)), imagej=True, metadata={"axes": "TZYX"})
    zarr.create_array(tmp_path / "v.zarr", shape=(2, 8, 8), dtype="uint8")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("x", data=stack((8, 8)))
    assert not is_array_input(tmp_path / "one.tif")
    assert not is_array_input(tmp_path / "rgb.tif")
    assert is_array_input(tmp_path / "pages.tif")
    assert is_array_input(tmp_path / "big.tif")
    assert is_array_input(tmp_path / "ij.tif")
    assert is_array_input(tmp_path / "v.zarr")
    assert is_array_input(tmp_path / "f.h5")
    assert not is_array_input(tmp_path)


def test_without_tifffile_a_stack_is_a_missing_extra_never_its_first_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tifffile.imwrite(tmp_path / "one.tif", stack((60, 70)))
    tifffile.imwrite(tmp_path / "pages.tif", stack())
    monkeypatch.setitem(sys.modules, "tifffile", None)
    assert not is_array_input(tmp_path / "one.tif")
    with pytest.raises(MissingExtra, match=r'pages\.tif: a TIFF of 5 pages .*pip install "fcnx\[volumes\]"'):
        is_array_input(tmp_path / "pages.tif")
    with pytest.raises(
        MissingExtra, match=r"pages\.tif: reading a TIFF stack needs tifffile.*fcnx\[volumes\]"
    ):
        open_array(tmp_path / "pages.tif")


def test_every_input_is_unchanged_by_reading(tmp_path: Path) -> None:
    data = stack((2, 64, 64))
    tifffile.imwrite(tmp_path / "s.ome.tif", data, ome=True, tile=(32, 32), compression="zlib")
    zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype=data.dtype, chunks=(1, 32, 32))[:] = data
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    write_ome_zarr(tmp_path / "g.zarr", data, 2, axes)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(1, 32, 32))
    before = digest(tmp_path)
    for spec in ("s.ome.tif", "a.zarr", "g.zarr", "f.h5", "f.h5:/d"):
        with open_array(str(tmp_path / spec)) as source:
            for plane in range(source.info.planes):
                source.read_plane(plane)
            describe(source.info)
    assert digest(tmp_path) == before
