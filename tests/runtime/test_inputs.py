"""Input collection: folders, globs, list files, single images; outputs keep relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnx.runtime.predict.inputs import collect_inputs
from fcnx.runtime.predict.outputs import output_paths


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folders_are_recursive_sorted_and_skip_non_images_and_hidden(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    _touch(root / "b.png", root / "a.TIF", root / "day2" / "c.jpg", root / "notes.txt", root / ".hidden.png",
           root / ".cache" / "d.png")  # fmt: skip
    scanned = collect_inputs([str(root)])
    found = scanned.files
    assert [f.relative for f in found] == ["a.TIF", "b.png", "day2/c.jpg"]
    assert Path(found[2].path) == root / "day2" / "c.jpg"
    assert scanned.skipped == [f"{root / 'notes.txt'}: not an image type fcnx reads (.txt)"]  # hidden: silent


def test_globs_are_relative_to_their_fixed_part(tmp_path: Path) -> None:
    _touch(tmp_path / "x" / "1" / "a.png", tmp_path / "x" / "2" / "b.png", tmp_path / "x" / "2" / "c.jpg")
    found = collect_inputs([str(tmp_path / "x" / "**" / "*.png")]).files
    assert [f.relative for f in found] == ["1/a.png", "2/b.png"]
    with pytest.raises(ValueError, match="matches no files"):
        collect_inputs([str(tmp_path / "x" / "*.bmp")])


def test_list_files_single_images_and_duplicates(tmp_path: Path) -> None:
    _touch(tmp_path / "d" / "p" / "a.png", tmp_path / "d" / "q" / "b.png")
    listing = tmp_path / "d" / "list.txt"
    listing.write_text(f"# my batch\np/a.png\n\n{tmp_path / 'd' / 'q' / 'b.png'}\nmissing.png\n")
    found = collect_inputs([str(listing), str(tmp_path / "d" / "p" / "a.png")]).files
    assert [f.relative for f in found] == ["p/a.png", "q/b.png", "missing.png"]  # a.png once
    with pytest.raises(ValueError, match="no such file, folder or matching pattern"):
        collect_inputs([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        collect_inputs([str(tmp_path / "empty")])
    (tmp_path / "blank.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no entries"):
        collect_inputs([str(tmp_path / "blank.txt")])


def test_output_paths_keep_the_relative_path() -> None:
    out = Path("/o")
    assert output_paths(out, "day2/c.jpg", "png", overlay=True) == [
        Path("/o/day2/c.png"),
        Path("/o/day2/c.overlay.jpg"),
    ]
    assert output_paths(out, "a.tif", "npy", overlay=False) == [Path("/o/a.npy")]
