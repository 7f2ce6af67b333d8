from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcnx.runtime.cli import main


def _run(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    prog = code or "import sys; from fcnx.runtime.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", prog, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands_without_importing_tensorflow() -> None:
    code = (
        "import contextlib, io, sys; from fcnx.runtime.cli import main; buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(buf.getvalue())\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'LEAN')"
    )
    out = _run(code=code)
    assert "train" in out.stdout and "evaluate" in out.stdout and "synth" in out.stdout
    assert "LEAN" in out.stdout


def test_synth_runs_without_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
        "from fcnx.runtime.cli import main; sys.exit(main())"
    )
    out = _run("synth", str(tmp_path / "d"), "--count", "3", "--size", "48", code=code)
    assert out.returncode == 0, out.stderr
    images = sorted((tmp_path / "d" / "image").glob("*.png"))
    labels = sorted((tmp_path / "d" / "label").glob("*.png"))
    assert [p.name for p in images] == [p.name for p in labels] == ["000.png", "001.png", "002.png"]
    label = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (48, 48) and set(np.unique(label)) == {0, 255}
    assert 0.4 < (label == 255).mean() < 0.97  # cells and membranes both present


def test_train_without_tensorflow_prints_the_pip_line(tmp_path: Path) -> None:
    code = "import sys; sys.modules['tensorflow'] = None; from fcnx.runtime.cli import main; sys.exit(main())"
    out = _run("train", str(tmp_path), "-o", str(tmp_path / "run"), code=code)
    assert out.returncode == 2
    assert 'pip install "fcnx[train]"' in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_data_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "image").mkdir()
    code = main(["train", str(tmp_path), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing" in err and "label" in err and "Traceback" not in err


def test_bad_flag_value_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "run"), "--crop", "100"]) == 1
    assert "crop must be a positive multiple of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "-o", "x", "--arch", "fcn3s"])
    assert exit_info.value.code == 2


def test_train_flags_map_to_config_fields() -> None:
    from fcnx.train.commands.train import build_parser, config_from_args

    args = build_parser("fcnx train").parse_args(
        [
            "data",
            "-o",
            "run",
            "--arch",
            "fcn2s",
            "--no-batch-norm",
            "--class-weights",
            "2",
            "1",
            "--no-vflip",
            "--epochs",
            "3",
            "--lr",
            "0.01",
        ]
    )
    config = config_from_args(args)
    assert (config.data, config.out, config.epochs, config.lr) == ("data", "run", 3, 0.01)
    assert config.class_weights == (2.0, 1.0)
    assert config.model.arch == "fcn2s" and config.model.batch_norm is False
    assert config.augment.vflip is False and config.augment.hflip is True


def test_unknown_command() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "library"),
    [
        (["serve", "model.onnx"], "kserve"),
        (["bench", "--url", "http://127.0.0.1:9", "--model", "m"], "tritonclient"),
    ],
)
def test_serving_without_the_serve_extra_prints_its_pip_line(
    argv: list[str], library: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == library or m.startswith(library + ".")] + [library]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it fails as if not installed
    assert main(argv) == 2
    assert (
        f'fcnx {argv[0]} needs {library}, which is not installed: pip install "fcnx[serve]"'
        in capsys.readouterr().err
    )
