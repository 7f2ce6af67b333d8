"""Every kill leaves a run that a rerun finishes: real ``fcnx predict`` processes SIGKILLed
at seeded moments and at named write points (FCNX_KILL_AT), each followed by a rerun whose
outputs must be byte-identical to an uninterrupted run's, with no temp files left."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from .runs import kill_after, make_images, outputs, predict_command, run, start, temp_files

IMAGES = 1000  # ~1.2 s of work after ~0.3 s of start-up on 2 cores: kills at 0.2-0.8 s land mid-run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("kills")
    inputs = make_images(root / "in", IMAGES)
    clean = run(predict_command(inputs, root / "clean", "--overlay"))
    assert clean.returncode == 0, clean.stderr
    reference = outputs(root / "clean")
    assert len(reference) == 2 * IMAGES  # a mask and an overlay each
    return inputs, reference


def _finish_and_compare(inputs: Path, out: Path, reference: dict[str, bytes]) -> dict[str, object]:
    again = run(predict_command(inputs, out, "--overlay"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert outputs(out) == reference
    assert temp_files(out) == []
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    return summary


def test_random_kills_always_resume_to_the_same_bytes(
    corpus: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    inputs, reference = corpus
    rng = random.Random(17)
    landed = 0
    for attempt in range(8):
        out = tmp_path / f"out{attempt}"
        process = start(predict_command(inputs, out, "--overlay"))
        if kill_after(process, rng.uniform(0.2, 0.8)):
            landed += 1
        summary = _finish_and_compare(inputs, out, reference)
        counts = summary["counts"]
        assert isinstance(counts, dict) and counts["written"] + counts["skipped"] == IMAGES
    assert landed >= 4  # most kills landed while the first run was still working


@pytest.mark.parametrize(
    "point",
    [
        "after-replace:.fcnx-predict.owner",  # locked, nothing else written
        "before-replace:.fcnx-predict.json",  # the manifest half-written (its temp left)
        "after-replace:.fcnx-predict.json",  # claimed, nothing planned yet
        "before-replace:.fcnx-predict.outputs.jsonl",
        "before-replace:*.png#7",  # a mask's temp complete, not yet in place
        "after-replace:*.png#40",
        "before-replace:*.overlay.jpg#3",
        "before-replace:failures.jsonl",  # all written, the failure log not yet in place
        "before-replace:summary.json",
    ],
)
def test_a_kill_at_each_write_point_resumes_to_the_same_bytes(
    point: str, corpus: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    inputs, reference = corpus
    out = tmp_path / "out"
    killed = run(predict_command(inputs, out, "--overlay"), env={"FCNX_KILL_AT": point})
    assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
    _finish_and_compare(inputs, out, reference)
