"""fcnx as a user installs it: a real (non-editable) wheel in a fresh virtual environment
with only the ``cpu`` extra, the deploy-box install. An editable install hides a package
missing from pyproject.toml or package data missing from the wheel; this does not.

It runs ``fcnx --help``, ``fcnx info`` and ``fcnx predict`` on the shipped threshold model
(whose masks are known: pixel > 127), checks the runtime came from the wheel, that no
training library is there, and that ``fcnx train`` names the extra to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lean")
    source = tmp / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(source)]
    built = _run(command, tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("fcnx-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    python = tmp / "venv" / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[cpu]"], tmp)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return tmp / "venv"


def test_the_wheel_with_only_the_cpu_extra_predicts_and_says_what_else_to_install(
    lean_venv: Path, tmp_path: Path
) -> None:
    python, fcnx = lean_venv / "bin" / "python", lean_venv / "bin" / "fcnx"
    probe = _run([str(python), "-c", (
        "import importlib.util, json, fcnx.runtime\n"
        "from fcnx.runtime.data import FOLDER\n"
        "print(json.dumps({'runtime': fcnx.runtime.__file__, 'model': str(FOLDER / 'threshold.onnx'),\n"
        "  'missing': [m for m in ('tensorflow', 'keras', 'onnx', 'tf2onnx') if importlib.util.find_spec(m) is None]}))"
    )], tmp_path)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    facts = json.loads(probe.stdout)
    assert Path(facts["runtime"]).is_relative_to(lean_venv), facts  # the wheel's copy, not the checkout
    assert facts["missing"] == ["tensorflow", "keras", "onnx", "tf2onnx"]
    model = facts["model"]

    shown = _run([str(fcnx), "--help"], tmp_path)
    assert shown.returncode == 0 and "predict" in shown.stdout and "export" in shown.stdout

    info = _run([str(fcnx), "info", model, "--json"], tmp_path)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["card"]["architecture"] == "threshold" and described["runs_here_on"][-1] == "ort-cpu"

    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    pictures = {f"{i}.png": rng.integers(0, 256, (40 + 7 * i, 57), np.uint8) for i in range(3)}
    for name, picture in pictures.items():
        cv2.imwrite(str(images / name), picture)
    done = _run(
        [str(fcnx), "predict", model, str(images), "-o", str(tmp_path / "out"), "--no-progress"], tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name, picture in pictures.items():
        mask = np.array(Image.open(tmp_path / "out" / name))  # palette PNG: the pixel values are class ids
        np.testing.assert_array_equal(mask, (picture > 127).astype(np.uint8))

    train = _run([str(fcnx), "train", str(images), "-o", str(tmp_path / "run")], tmp_path)
    assert train.returncode == 2
    assert 'pip install "fcnx[train]"' in train.stderr and "Traceback" not in train.stderr
