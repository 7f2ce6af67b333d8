"""Every kill of ``fcnx train`` or ``fcnx export onnx`` leaves a run that ``--resume`` or a
rerun finishes. One run folder is killed again and again at named write points
(FCNX_KILL_AT), each time resumed, until a resume completes: the model then evaluates,
its history has each epoch once, best.keras loads in plain Keras, and no temp file is left.
A seeded random kill, and a kill of an export in the middle of writing, too."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

from .runs import CLI, kill_after, run, start

EPOCHS = 4
TRAIN = ["--epochs", str(EPOCHS), "--steps-per-epoch", "2", "--crop", "32", "--batch-size", "2"]
TF_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def _leftovers(folder: Path) -> list[str]:
    """Temp files of fcnx's writes anywhere in a run folder (TensorBoard's logs aside)."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob(".*")
        if p.is_file() and "logs" not in p.relative_to(folder).parts
    )


def _assert_complete(run_dir: Path, data: Path) -> None:
    from fcnx.train.evaluate import evaluate

    card = json.loads((run_dir / "card.json").read_text())
    assert card["training"]["val_metrics"]["epochs"] == EPOCHS
    with (run_dir / "history.csv").open(newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(EPOCHS))
    assert not (run_dir / "backup").exists() and _leftovers(run_dir) == []
    assert 0.0 <= evaluate(run_dir, data)["miou"] <= 1.0  # the model evaluates


@pytest.fixture(scope="module")
def data(synthetic_data: Path) -> Path:
    return synthetic_data


POINTS = [
    "after-replace:card.json",  # the first card: killed in epoch 1, before any backup
    "before-replace:state.json",  # epoch 1's weights saved, the backup's state not yet
    "before-replace:best.keras",  # a checkpoint complete in its temp, not yet in place
    "after-replace:epoch-0003.weights.h5",  # a backup half-made: weights in, state.json old
    "before-replace:card.json",  # training done, the final card not yet written
    "after-replace:card.json",  # the final card written, the backup not yet removed
]


def test_a_training_run_killed_at_every_write_point_resumes_to_a_complete_run(
    data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = [*CLI, "train", str(data), "-o", str(run_dir), *TRAIN]
    for i, point in enumerate(POINTS):
        killed = run(
            command + (["--resume"] if i else []), env={**TF_QUIET, "FCNX_KILL_AT": point}, timeout=300
        )
        assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
    finished = run([*command, "--resume"], env=TF_QUIET, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    _assert_complete(run_dir, data)
    plain = run([sys.executable, "-c", (
        "import sys; sys.modules['fcnx'] = None; import keras; "
        f"keras.saving.load_model(r'{run_dir / 'best.keras'}', safe_mode=True)"
    )], env=TF_QUIET, timeout=300)  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-2000:]  # best.keras loads in plain Keras


def test_a_training_run_killed_at_random_moments_resumes(data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [*CLI, "train", str(data), "-o", str(run_dir), *TRAIN]
    rng = random.Random(5)
    process = start(command, env=TF_QUIET)
    kill_after(process, rng.uniform(6.0, 12.0))
    if not (run_dir / "config.json").exists():  # every kill landed before the run began
        pytest.skip("the kills landed during start-up")
    finished = run([*command, "--resume"], env=TF_QUIET, timeout=300)
    if finished.returncode == 1 and "it already finished" in finished.stderr:
        pass  # a kill came after the end
    else:
        assert finished.returncode == 0, finished.stderr[-2000:]
    _assert_complete(run_dir, data)


def test_an_export_killed_while_writing_leaves_nothing_a_rerun_does_not_clean(
    tiny_run: Path, tmp_path: Path
) -> None:
    point = "before-replace:model.onnx"  # parity proven, the file complete in its temp: the leak a kill makes
    out = tmp_path / "model.onnx"
    command = [*CLI, "export", "onnx", str(tiny_run), "-o", str(out)]
    killed = run(command, env={**TF_QUIET, "FCNX_KILL_AT": point}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists() and [p.name for p in tmp_path.glob(".model.onnx.*")]
    rerun = run([*command, "--force"], env=TF_QUIET, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.slow
def test_long_sweep_of_random_kills_during_training(data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [*CLI, "train", str(data), "-o", str(run_dir), "--epochs", "12", *TRAIN[2:]]
    rng = random.Random(11)
    kills = 0
    for _ in range(8):
        resume = ["--resume"] if (run_dir / "config.json").exists() else []
        process = start(command + resume, env=TF_QUIET)
        kills += kill_after(process, rng.uniform(3.0, 10.0))
    finished = run([*command, "--resume"], env=TF_QUIET, timeout=300)
    assert finished.returncode == 0 or "it already finished" in finished.stderr, finished.stderr[-2000:]
    card = json.loads((run_dir / "card.json").read_text())
    assert card["training"]["val_metrics"]["epochs"] == 12 and _leftovers(run_dir) == [] and kills >= 3
