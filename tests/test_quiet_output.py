"""No TensorFlow, absl, oneDNN or grappler line reaches the terminal: train, evaluate, export
onnx, export openvino and parity each run as a real ``fcnx`` process on a tiny model (trained
once, by the train case), and any line of their stdout or stderr with the shape of C++
logging fails. ``FCNX_DEBUG=1`` shows those lines again. (``fcnx demo`` runs the same steps in
one process, behind the same filter; tests/export/test_demo.py runs it.)"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fcnx.runtime.cli import COMMANDS, TF_COMMANDS, TF_NOISE

# The generic shape of what TensorFlow and the C++ libraries under it print, wider than the
# CLI's filter on purpose: a line this matches is noise the user would see.
LOGGING = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d"  # absl/glog prefix: I0000 00:00:1796598063.08 ...
    r"|\.cc:\d+\]|oneDNN|TF-TRT|absl::|grappler|cuInit|cu(DNN|FFT|BLAS)|(?i:\bcuda\b)"
    r"|^(INFO|WARNING):(tensorflow|absl):"  # TensorFlow's Python logger
)
TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--crop", "64", "--batch-size", "2"]


def _fcnx(*args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FCNX_DEBUG")}
    if debug:
        env["FCNX_DEBUG"] = "1"  # (tests/conftest.py sets TF_CPP_MIN_LOG_LEVEL: not for these)
    return subprocess.run([sys.executable, "-m", "fcnx.runtime.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False)  # fmt: skip


def _logging(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if LOGGING.search(line)]


def _assert_quiet(done: subprocess.CompletedProcess[str], printed: str) -> None:
    assert done.returncode == 0, done.stderr
    assert printed in done.stdout, done.stdout
    assert _logging(done) == []


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quiet")


@pytest.fixture(scope="module")
def trained(synthetic_data: Path, folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    run = folder / "run"
    return run, _fcnx("train", str(synthetic_data), "-o", str(run), *TRAIN)


@pytest.fixture(scope="module")
def run_dir(trained: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    run, done = trained
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def exported(run_dir: Path, folder: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = folder / "model.onnx"
    return out, _fcnx("export", "onnx", str(run_dir), "-o", str(out))


def test_train_is_quiet(trained: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _assert_quiet(trained[1], "run folder")


def test_evaluate_is_quiet(run_dir: Path, synthetic_data: Path) -> None:
    _assert_quiet(_fcnx("evaluate", str(run_dir), str(synthetic_data)), "mIoU")


def test_export_onnx_is_quiet(exported: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, done = exported
    _assert_quiet(done, f"wrote {out}")


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason='openvino is not installed: pip install "fcnx[openvino-export]"',
)
def test_export_openvino_is_quiet(run_dir: Path, folder: Path) -> None:
    out = folder / "model.xml"
    _assert_quiet(_fcnx("export", "openvino", str(run_dir), "-o", str(out)), "wrote")


def test_parity_is_quiet(run_dir: Path, exported: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    onnx, done = exported
    assert done.returncode == 0, done.stderr
    _assert_quiet(_fcnx("parity", str(run_dir), str(onnx)), "verdict")


def test_deploy_is_quiet(run_dir: Path, synthetic_data: Path, folder: Path) -> None:
    """A deploy exports (tf2onnx, NNCF), runs Keras baselines and times: none of it prints a log line."""
    import importlib.util

    int8 = "ov-cpu int8" if importlib.util.find_spec("nncf") else "ort-cpu int8"
    done = _fcnx("deploy", str(run_dir), "--data", str(synthetic_data), "-o", str(folder / "deployed"),
                 "--cache", str(folder / "deploy-cache"), "--candidates", f"ort-cpu fp32,{int8}",
                 "--time-budget", "2", "--no-report")  # fmt: skip
    _assert_quiet(done, "wrote ")


def test_an_error_still_reaches_the_terminal(run_dir: Path, folder: Path) -> None:
    done = _fcnx("evaluate", str(run_dir), str(folder / "no-such-data"))
    assert done.returncode != 0 and "error: " in done.stderr and "no-such-data" in done.stderr
    assert _logging(done) == []


def test_fcnx_debug_shows_them(run_dir: Path, synthetic_data: Path) -> None:
    done = _fcnx("evaluate", str(run_dir), str(synthetic_data), debug=True)
    assert done.returncode == 0, done.stderr
    if not _logging(done):
        pytest.skip("TensorFlow prints no log line on this machine, even with FCNX_DEBUG=1")
    assert "mIoU" in done.stdout


def test_the_filter_drops_logging_by_shape_and_passes_the_rest() -> None:
    noise = [
        "I0000 00:00:1796598063.082874   16331 devices.cc:67] Number of eligible GPUs (core count >= 8): 0",
        "I0000 00:00:1796598063.083102   16331 single_machine.cc:376] Starting new session",
        "I0000 00:00:1796598046.919324   16239 generator_dataset_op.cc:213] Memory patch applied",
        "W0101 12:34:56.123456    4711 some_new_file.cc:9] a warning no one listed",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "E0000 00:00:1796598160.978997   17424 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    ]
    kept = [
        "E0000 00:00:1796598160.978997   17424 op_kernel.cc:1857] OP_REQUIRES failed: out of memory",
        "error: run: not a run folder",
        "Traceback (most recent call last):",
        "wrote model.onnx (19.1 MiB, fp32, outputs probs, mask) in 2.3 s",
    ]
    assert [line for line in noise if not TF_NOISE.search(line)] == []
    assert [line for line in kept if TF_NOISE.search(line)] == []


def test_every_command_that_installs_tensorflow_is_filtered() -> None:
    with_tf = ("train", "export", "openvino-export", "demo", "all")  # the extras that install TensorFlow
    loads_tf = {name for name, (_, extra, _) in COMMANDS.items() if extra in with_tf}
    assert loads_tf <= TF_COMMANDS
