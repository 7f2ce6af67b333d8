"""An output folder holds one model's outputs and never an input: two runs at once, runs
over another model's folder, and every way -o can overlap the inputs (links included)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .runs import make_images, outputs, predict_command, run, start, temp_files


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


@pytest.mark.parametrize("second_model", ["same", "other"])
def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_finishes(
    second_model: str, tiny_onnx: Path, tmp_path: Path
) -> None:
    inputs = make_images(
        tmp_path / "in", 3000
    )  # ~3 s of work at batch 1: the second run starts well inside it
    reference = run(predict_command(inputs, tmp_path / "clean"))
    assert reference.returncode == 0
    out = tmp_path / "out"
    first = start(
        predict_command(inputs, out, "--batch", "1", "--workers", "1")
    )  # seconds of work: still running
    _wait_for(out / ".fcnx-predict.owner")
    extra = {"model": tiny_onnx} if second_model == "other" else {}
    second = run(predict_command(inputs, out, **extra))  # type: ignore[arg-type]
    assert first.wait(timeout=60) == 0, first.stderr.read() if first.stderr else ""
    assert second.returncode == 1
    assert f"is in use by another fcnx predict (pid {first.pid}, since " in second.stderr
    assert outputs(out) == outputs(tmp_path / "clean") and temp_files(out) == []
    assert json.loads((out / ".fcnx-predict.json").read_text())["model"].endswith("threshold.onnx")


def test_overwrite_with_another_model_leaves_only_that_models_outputs(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    everything = make_images(tmp_path / "all", 12)
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("000.png", "001.png", "002.png"):
        (subset / name).write_bytes((everything / name).read_bytes())
    out = tmp_path / "out"
    assert run(predict_command(everything, out)).returncode == 0
    assert len(outputs(out)) == 12
    replaced = run(predict_command(subset, out, "--overwrite", model=tiny_onnx))
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(outputs(out)) == ["000.png", "001.png", "002.png"]  # the old model's other 9 are gone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replaced_outputs_of_another_model"] == 12 and summary["model"] == str(tiny_onnx)


def test_an_output_folder_overlapping_the_inputs_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    inputs = make_images(tmp_path / "in", 3)
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "x.png").write_bytes((inputs / "000.png").read_bytes())
    (tmp_path / "link").symlink_to(inputs, target_is_directory=True)
    before = _snapshot(tmp_path)
    cases = {
        "is the input folder": (inputs, inputs, ["--overwrite"]),
        "is inside the input folder": (inputs, inputs / "masks", []),
        "contains the input folder": (inputs / "sub", inputs, ["--overwrite"]),
        "is the input folder ": (inputs, tmp_path / "link", ["--overwrite"]),  # through a link
        "is the folder of the input images": (inputs / "000.png", inputs, ["--overwrite"]),
    }
    for words, (source, out, flags) in cases.items():
        refused = run(predict_command(source, out, *flags))
        assert refused.returncode == 1, (words, refused.stdout)
        assert words.strip() in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert _snapshot(tmp_path) == before  # nothing written anywhere: inputs, OUT, lock files
    assert not (inputs / "masks").exists()


def test_a_list_whose_outputs_would_land_on_an_input_is_refused(tmp_path: Path) -> None:
    make_images(tmp_path / "data" / "a", 1)
    make_images(tmp_path / "data" / "b", 1, seed=1)
    listing = tmp_path / "list.txt"
    listing.write_text("data/a/000.png\ndata/b/000.png\n")  # relative to their common folder: a/, b/
    before = _snapshot(tmp_path / "data")
    refused = run(predict_command(listing, tmp_path / "data", "--overwrite"))
    assert refused.returncode == 1 and "would replace the input" in refused.stderr, refused.stderr
    assert _snapshot(tmp_path / "data") == before
