"""Every kill of a run over stacks and volumes leaves a run that a rerun finishes: real
``fcnx predict`` processes SIGKILLed at the band writers' named write points
(FCNX_KILL_AT) and at random moments, each rerun's outputs byte-identical to an
uninterrupted run's, the inputs untouched, no partial output left under a final name."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from .runs import kill_after, predict_command, run, start

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

BIG = 4160  # one plane over WHOLE_PLANE_PIXELS (4096²): read by windows, 9 bands of 512 rows


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (a file or a folder), by relative path."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def finished(out: Path) -> dict[str, str]:
    """The finished outputs (not fcnx's bookkeeping, not hidden progress folders)."""
    result: dict[str, str] = {}
    for entry in sorted(out.iterdir()):
        if not entry.name.startswith(".") and entry.suffix in (".tif", ".zarr"):
            result.update(tree(entry))
    return result


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, str]]:
    root = tmp_path_factory.mktemp("volume-kills")
    inputs = root / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    tifffile.imwrite(
        inputs / "stack.tif", rng.integers(0, 256, (12, 90, 70), np.uint8), photometric="minisblack"
    )
    zarr.create_array(
        inputs / "vol.zarr", data=rng.integers(0, 256, (5, 64, 80), np.uint8), chunks=(1, 32, 32)
    )
    big = zarr.create_array(inputs / "big.zarr", shape=(1, BIG, BIG), chunks=(1, 512, 512), dtype="uint8")
    for y in range(0, BIG, 512):  # band by band: the test never holds the plane twice
        big[0, y : y + 512] = rng.integers(0, 256, (min(512, BIG - y), BIG), np.uint8)
    before = {**tree(inputs / "stack.tif"), **tree(inputs / "vol.zarr"), **tree(inputs / "big.zarr")}
    clean = run(predict_command(inputs, root / "clean"), timeout=300)
    assert clean.returncode == 0, clean.stderr
    reference = finished(root / "clean")
    assert {name.split("/")[0] for name in reference} == {"stack.tif", "vol.zarr", "big.zarr"}
    return inputs, reference, before


def _finish_and_compare(inputs: Path, out: Path, reference: dict[str, str], before: dict[str, str]) -> None:
    again = run(predict_command(inputs, out), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert finished(out) == reference
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and "fcnx-partial" in p.name) == []
    now = {**tree(inputs / "stack.tif"), **tree(inputs / "vol.zarr"), **tree(inputs / "big.zarr")}
    assert now == before  # inputs are never written


@pytest.mark.parametrize(
    "point",
    [
        "band-written:stack.tif#5",  # a page durable, its journal line not yet
        "band-done:stack.tif#7",
        "before-publish:stack.tif",  # every page written, not yet renamed into place
        "band-written:vol.zarr#2",
        "band-done:vol.zarr#4",
        "before-publish:vol.zarr",
        "band-done:big.zarr#4",  # a windowed plane: the rerun starts at the first missing band
        "band-written:big.zarr#8",
    ],
)
def test_a_kill_at_each_band_write_point_is_finished_by_a_rerun(
    volumes: tuple[Path, dict[str, str], dict[str, str]], tmp_path: Path, point: str
) -> None:
    inputs, reference, before = volumes
    out = tmp_path / "out"
    killed = run(predict_command(inputs, out), env={"FCNX_KILL_AT": point}, timeout=300)
    assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
    name = point.split(":")[1].split("#")[0]
    assert not (out / name).exists()  # killed before it was complete: not under its name
    _finish_and_compare(inputs, out, reference, before)


def test_random_kills_over_volumes_always_resume_to_the_same_bytes(
    volumes: tuple[Path, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    inputs, reference, before = volumes
    rng = random.Random(5)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        process = start(predict_command(inputs, out))
        kill_after(process, rng.uniform(0.5, 2.0))
        _finish_and_compare(inputs, out, reference, before)
