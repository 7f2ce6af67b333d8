"""Clear one-line errors instead of tracebacks or false success."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest

from fcnx.runtime import BackendError, load
from fcnx.runtime.backends.trt.sidecar import BatchProfile, EngineSidecar, sidecar_path, write_sidecar
from fcnx.runtime.bench.config import BenchConfig
from fcnx.runtime.predict.config import PredictConfig

from ..fakes import THRESHOLD_ONNX
from .runs import CLI, make_images, predict_command, run


def _doctored(tmp_path: Path, **changes: str) -> Path:
    """The threshold model with an output renamed (output=NAME) or the card's channels changed."""
    model = onnx.load(str(THRESHOLD_ONNX))
    if "output" in changes:
        model.graph.output[1].name = changes["output"]
        model.graph.node[-1].output[0] = changes["output"]
    if "channels" in changes:
        card = json.loads(model.metadata_props[0].value)
        card["input_channels"] = int(changes["channels"])
        model.metadata_props[0].value = json.dumps(card)
    path = tmp_path / "doctored.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"output": "labels"},
            "the graph's outputs are ['probs', 'labels'], an fcnx model has probs and/or mask",
        ),
        ({"channels": "3"}, "the card says 3 input channels, the graph has 1"),
    ],
)
def test_a_card_that_contradicts_its_graph_is_one_line_everywhere(
    changes: dict[str, str], words: str, tmp_path: Path
) -> None:
    model = _doctored(tmp_path, **changes)
    with pytest.raises(BackendError, match=r"doctored\.onnx: its fcnx card and its graph disagree: "):
        load(model, "ort-cpu")
    make_images(tmp_path / "in", 2)
    predicted = run(predict_command(tmp_path / "in", tmp_path / "out", model=model))
    assert predicted.returncode == 1 and words in predicted.stderr and "Traceback" not in predicted.stderr
    benched = run([*CLI, "bench", str(model), "--backends", "ort-cpu", "--no-ceiling", "--no-plots",
                   "--min-seconds", "0.1", "--out", str(tmp_path / "bench")])  # fmt: skip
    assert benched.returncode == 1 and "nothing was measured" in benched.stderr
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["unavailable"] and words in rows[0]["reason"]


def test_bench_with_no_backend_for_the_file_fails(tmp_path: Path) -> None:
    benched = run([*CLI, "bench", str(THRESHOLD_ONNX), "--backends", "keras", "--no-ceiling", "--no-plots",
                   "--out", str(tmp_path)])  # fmt: skip
    assert benched.returncode == 1 and "error: nothing was measured" in benched.stderr


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^--threads must be at least 1 \(or left out for the usable cores\), got 0$"
    ):
        PredictConfig(model="m.onnx", inputs=("in",), out="out", threads=0)
    with pytest.raises(ValueError, match=r"^--min-seconds must be >= 0 and at most --max-seconds"):
        BenchConfig(models=("m.onnx",), min_seconds=-1)
    with pytest.raises(ValueError, match=r"^--warmup must be >= 0, got -2$"):
        BenchConfig(models=("m.onnx",), warmup=-2)


def test_skipped_inputs_are_counted_and_named(tmp_path: Path) -> None:
    inputs = make_images(tmp_path / "in", 2)
    (inputs / "animation.gif").write_bytes(b"GIF89a")
    (inputs / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    done = run(predict_command(inputs, tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "not taken as inputs: 2 (" in done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_inputs"] == [
        f"{inputs / 'elsewhere'}: a linked folder (not followed)",
        f"{inputs / 'animation.gif'}: not an image type fcnx reads (.gif)",
    ]


def test_a_reader_that_leaves_and_a_corrupt_png_make_no_noise(tmp_path: Path) -> None:
    piped = subprocess.run(
        f"{' '.join(CLI)} info {THRESHOLD_ONNX} --json | head -c 20",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    inputs = make_images(tmp_path / "in", 1)
    good = (inputs / "000.png").read_bytes()
    (inputs / "half.png").write_bytes(good[: len(good) // 2])
    done = run(predict_command(inputs, tmp_path / "out"), env={"OPENCV_LOG_LEVEL": ""})
    assert done.returncode == 3 and done.stderr == "", done.stderr  # recorded in failures.jsonl, not printed


def test_triton_refuses_an_engine_whose_sidecar_does_not_check_out(tmp_path: Path) -> None:
    from fcnx.export.onnx_export import ExportError
    from fcnx.export.triton import read_served_model

    backend = load(THRESHOLD_ONNX, "ort-cpu")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    good = EngineSidecar(
        card=backend.card, tensorrt_version="10.13.0", gpu_name="NVIDIA L4", compute_capability="8.9",
        input_name="image", input_shape=(64, 64, 1), batch=BatchProfile(1, 8, 32), precision="fp16",
        onnx_sha256="0" * 64, onnx_file="model.fp16.onnx",
    )  # fmt: skip
    write_sidecar(engine, good)
    assert read_served_model(engine).format == "engine"
    data = json.loads(sidecar_path(engine).read_text())
    data["input_shape"] = [64, 64, 3]  # the card says 1 channel
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"input_shape \[64, 64, 3\] has 3 channels, its card 1"):
        read_served_model(engine)
    write_sidecar(engine, good)
    engine.write_bytes(b"")
    with pytest.raises(ExportError, match=r"model\.engine: an empty file, not a TensorRT plan"):
        read_served_model(engine)
