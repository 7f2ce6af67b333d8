from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fcnx.train.data import DataError, find_pairs, load_samples, split_samples
from fcnx.train.labels import LabelError, read_classes_file


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _dataset(root: Path, names: list[str], label: np.ndarray | None = None, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        _write(root / "image" / f"{name}.png", rng.integers(0, 256, (size, size), np.uint8))
        mask = (
            label if label is not None else np.where(rng.random((size, size)) > 0.5, 255, 0).astype(np.uint8)
        )
        _write(root / "label" / f"{name}.png", mask)
    return root


def test_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    _write(tmp_path / "image" / "a.jpg", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "label" / "a.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "image" / "b.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "label" / "b.png", np.zeros((8, 8), np.uint8))
    assert [p.name for p in find_pairs(tmp_path)] == ["a", "b"]


def test_unmatched_files_are_all_listed(tmp_path: Path) -> None:
    _dataset(tmp_path, ["a", "b"])
    _write(tmp_path / "image" / "only_image.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "label" / "only_label.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        find_pairs(tmp_path)
    text = str(err.value)
    assert "only_image.png: no label with the same name" in text
    assert "only_label.png: no image with the same name" in text


def test_missing_folders_are_named(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    with pytest.raises(DataError, match=r"missing .*label"):
        find_pairs(tmp_path)


def test_unreadable_and_mismatched_files_are_reported_together(tmp_path: Path) -> None:
    _dataset(tmp_path, ["good", "broken", "small"])
    (tmp_path / "image" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _write(tmp_path / "label" / "small.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError) as err:
        load_samples(tmp_path)
    text = str(err.value)
    assert "broken.png: not a decodable image" in text
    assert "small.png: label is 16x16 but its image is 32x32" in text


def test_zero_byte_image_is_named(tmp_path: Path) -> None:
    _dataset(tmp_path, ["a", "b"])
    (tmp_path / "image" / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"b.png: empty file"):
        load_samples(tmp_path)


def test_binary_labels_become_class_ids(tmp_path: Path) -> None:
    _dataset(tmp_path, ["a", "b"])
    samples = load_samples(tmp_path)
    assert samples.classes.encoding == "binary"
    assert samples.images[0].shape == (32, 32, 1)
    assert set(np.unique(samples.masks[0])) <= {0, 1}
    assert len(samples.fingerprint) == 64


def test_binary_label_with_other_values_names_the_file(tmp_path: Path) -> None:
    _dataset(tmp_path, ["a", "b"])
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0], bad[0, 1] = 255, 128
    _write(tmp_path / "label" / "b.png", bad)
    with pytest.raises(DataError, match=r"labels hold values \[0, 128, 255\]"):
        load_samples(tmp_path)


def test_class_index_labels_and_out_of_range(tmp_path: Path) -> None:
    mask = np.tile(np.arange(3, dtype=np.uint8), (32, 11))[:, :32]
    _dataset(tmp_path, ["a", "b"], label=mask)
    classes = tmp_path / "classes.txt"
    classes.write_text("# three classes\nbackground\ncell\nnucleus\n")
    samples = load_samples(tmp_path, classes=read_classes_file(classes))
    assert samples.classes.names == ("background", "cell", "nucleus")
    assert np.array_equal(samples.masks[0], mask)
    classes.write_text("background\ncell\n")
    with pytest.raises(DataError, match=r"a.png: class ids must be 0..1, found \[2\]"):
        load_samples(tmp_path, classes=read_classes_file(classes))


def test_colour_palette_labels(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, 16:] = (255, 0, 0)  # red in RGB
    _write(tmp_path / "image" / "a.png", np.zeros((32, 32, 3), np.uint8))
    _write(tmp_path / "label" / "a.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    classes = tmp_path / "classes.txt"
    classes.write_text("background 0 0 0\nvessel 255 0 0\n")
    samples = load_samples(tmp_path, classes=read_classes_file(classes))
    assert samples.masks[0][:, :16].max() == 0 and samples.masks[0][:, 16:].min() == 1
    classes.write_text("background 0 0 0\nvessel 0 255 0\n")
    with pytest.raises(DataError, match=r"a.png: colour \[255, 0, 0\] is not in the classes file"):
        load_samples(tmp_path, classes=read_classes_file(classes))


def test_colour_labels_without_classes_file_say_what_to_do(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, 16:] = (0, 0, 255)
    _write(tmp_path / "image" / "a.png", np.zeros((32, 32), np.uint8))
    _write(tmp_path / "label" / "a.png", rgb)
    with pytest.raises(DataError, match=r"colour masks need a classes file"):
        load_samples(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("only\n", "at least 2 classes"),
        ("a\na\n", "unique"),
        ("a 1 2\nb\n", "expected 'name'"),
        ("a 0 0 0\nb\n", "every class or for none"),
        ("a 0 0 0\nb 0 0 0\n", "share a colour"),
    ],
)
def test_bad_classes_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(LabelError, match=message):
        read_classes_file(path)


def test_rgb_images_are_detected(tmp_path: Path) -> None:
    _dataset(tmp_path, ["a"])
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 2] = 200
    _write(tmp_path / "image" / "b.png", colour)
    _write(tmp_path / "label" / "b.png", np.zeros((32, 32), np.uint8))
    samples = load_samples(tmp_path)
    assert samples.images[0].shape == (32, 32, 3)
    assert samples.images[1][0, 0].tolist() == [200, 0, 0]  # stored BGR, read as RGB


def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    samples = load_samples(_dataset(tmp_path, [f"{i:02d}" for i in range(24)], size=8))
    train, val = split_samples(samples, 0.15, seed=3)
    assert (len(train), len(val)) == (20, 4)
    _, again_val = split_samples(samples, 0.15, seed=3)
    assert [p.name for p in val.pairs] == [p.name for p in again_val.pairs]
    assert not {p.name for p in train.pairs} & {p.name for p in val.pairs}
    _, other_val = split_samples(samples, 0.15, seed=4)
    assert [p.name for p in other_val.pairs] != [p.name for p in val.pairs]


def test_16_bit_training_images_are_read_with_the_runs_intensity_mapping(tmp_path: Path) -> None:
    from fcnx.runtime.intensity import NoteCounter, bits_table

    from ..runtime.test_intensity import TWELVE_BIT, png16

    _dataset(tmp_path, ["a", "b"], size=TWELVE_BIT.shape[0])
    (tmp_path / "image" / "a.png").write_bytes(png16(TWELVE_BIT[:, :48], b"\x0c"))  # sBIT 12
    (tmp_path / "image" / "b.png").write_bytes(png16(TWELVE_BIT[:, 16:]))  # says no depth
    notes = NoteCounter()
    samples = load_samples(tmp_path, intensity="auto", notes=notes)
    np.testing.assert_array_equal(samples.images[0][..., 0], bits_table(12)[TWELVE_BIT[:, :48]])
    np.testing.assert_array_equal(samples.images[1][..., 0], bits_table(16)[TWELVE_BIT[:, 16:]])
    assert notes.count == 1 and notes.first is not None and notes.first[0].endswith("b.png")
    forced = load_samples(tmp_path, intensity="bits:12")
    np.testing.assert_array_equal(forced.images[1][..., 0], bits_table(12)[TWELVE_BIT[:, 16:]])
    assert load_samples(tmp_path).images[0].max() <= 16  # the default, "full": as fcnx read them before


def test_a_training_records_its_intensity_and_an_old_config_reads_as_full(tmp_path: Path) -> None:
    from fcnx.train.config import TrainConfig
    from fcnx.train.fit import make_card

    assert TrainConfig().intensity == "auto"
    with pytest.raises(ValueError, match=r"^--intensity must be .*got 'bits:8'$"):
        TrainConfig(intensity="bits:8")
    config = TrainConfig(data=str(tmp_path), intensity="bits:12")
    assert TrainConfig.from_dict(config.to_dict()).intensity == "bits:12"
    old = config.to_dict()
    del old["intensity"]  # a config.json written before --intensity: resumed as it was read
    assert TrainConfig.from_dict(old).intensity == "full"
    samples = load_samples(_dataset(tmp_path, ["a", "b"]))
    assert make_card(config, samples, samples, {}).intensity == "bits:12"


def test_training_data_that_says_no_depth_prints_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fcnx.train.config import TrainConfig
    from fcnx.train.fit import load_training_data

    from ..runtime.test_intensity import TWELVE_BIT, png16

    names = [f"{i}" for i in range(6)]
    _dataset(tmp_path, names, size=TWELVE_BIT.shape[0])
    for name in names:
        (tmp_path / "image" / f"{name}.png").write_bytes(png16(TWELVE_BIT[:, :48]))
    train, val = load_training_data(TrainConfig(data=str(tmp_path), intensity="auto"))
    assert len(train) + len(val) == 6
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "(and 5 more images like it)" in lines[0]


def _stack(path: Path, pages: np.ndarray) -> Path:
    tifffile = pytest.importorskip(
        "tifffile", reason='stacks need the volumes extra: pip install "fcnx[volumes]"'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pages, photometric="minisblack")
    return path


def test_stacks_pair_page_by_page_as_the_same_slices_in_files(tmp_path: Path) -> None:
    """ISBI's layout: train-volume.tif + train-labels.tif, page i with page i; in image/ and
    label/ folders, or given directly. The samples equal those of the slices as PNG pairs."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 24, 32), np.uint8)
    labels = np.where(rng.random((4, 24, 32)) > 0.5, 255, 0).astype(np.uint8)
    volume = _stack(tmp_path / "stacks" / "image" / "vol.tif", images)
    truth = _stack(tmp_path / "stacks" / "label" / "vol.tif", labels)
    for i in range(4):
        _write(tmp_path / "files" / "image" / f"{i}.png", images[i])
        _write(tmp_path / "files" / "label" / f"{i}.png", labels[i])
    files = load_samples(tmp_path / "files")
    for stacks in (load_samples(tmp_path / "stacks"), load_samples(volume, labels=truth)):
        assert [p.name for p in stacks.pairs] == [f"vol-{i:04d}" for i in range(4)]
        for a, b in zip(stacks.images, files.images):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(stacks.masks, files.masks):
            np.testing.assert_array_equal(a, b)


def test_stacks_that_do_not_pair_are_named(tmp_path: Path) -> None:
    images = _stack(tmp_path / "image" / "vol.tif", np.zeros((3, 16, 16), np.uint8))
    short = _stack(tmp_path / "label" / "vol.tif", np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(DataError, match=r"label/vol.tif: 2 pages, but its image stack .*vol.tif has 3"):
        load_samples(tmp_path)
    wide = _stack(tmp_path / "wide.tif", np.zeros((3, 16, 20), np.uint8))
    with pytest.raises(DataError, match=r"wide.tif: pages are 20x16 but the image stack's"):
        load_samples(images, labels=wide)
    assert short.is_file()
