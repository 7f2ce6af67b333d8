"""fcnx info: the card, inputs/outputs and where the model runs, for each model kind."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from fcnx.runtime.backends.registry import offered_backends
from fcnx.runtime.backends.trt.sidecar import BatchProfile, EngineSidecar, write_sidecar
from fcnx.runtime.card import ModelCard
from fcnx.runtime.cli import main


def test_onnx_info_text_and_json(tiny_onnx: Path, capsys: Any) -> None:
    assert main(["info", str(tiny_onnx)]) == 0
    text = capsys.readouterr().out
    assert "(onnx)" in text and "fcn8s" in text and "background, foreground" in text
    assert "input      image: Nx64x64x1 uint8" in text and "output     mask: Nx64x64 uint8" in text
    here = offered_backends("onnx")  # what this machine's onnxruntime offers, GPU or not
    assert f"runs here  {', '.join(here)}" in text
    assert main(["info", str(tiny_onnx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "onnx" and info["runs_here_on"] == here and info["auto_backend"] == here[0]
    assert ModelCard.from_dict(info["card_full"]).input_height == 64


def test_engine_info_reads_the_sidecar_and_says_whether_it_loads_here(
    tiny_onnx: Path, tmp_path: Path, capsys: Any
) -> None:
    card = ModelCard.from_dict(json.loads(_card_json(tiny_onnx)))
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, EngineSidecar(
        card=card, tensorrt_version="10.13.0", gpu_name="NVIDIA L4", compute_capability="8.9",
        input_name="image", input_shape=(64, 64, 1), batch=BatchProfile(1, 8, 32), precision="fp16",
        onnx_sha256="0" * 64, onnx_file="model.fp16.onnx",
    ))  # fmt: skip
    assert main(["info", str(engine)]) == 0
    text = capsys.readouterr().out
    assert "built with TensorRT 10.13.0 on NVIDIA L4 (sm 8.9), batch 1:8:32, fp16" in text
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT is not installed here" in text
    else:  # a GPU box: this made-up sidecar names an L4 and TensorRT 10.13.0
        assert "here       " in text


def test_keras_run_info_without_loading_keras(tiny_run: Path, capsys: Any) -> None:
    assert main(["info", str(tiny_run)]) == 0
    text = capsys.readouterr().out
    assert "(keras)" in text and "val        miou" in text


def _card_json(onnx_path: Path) -> str:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return str(session.get_modelmeta().custom_metadata_map["fcnx.card"])


def test_a_keras_file_is_opened_the_safe_way(tmp_path: Path, tiny_run: Path, capsys: Any) -> None:
    (tmp_path / "garbage.keras").write_bytes(b"not a zip")
    assert main(["info", str(tmp_path / "garbage.keras")]) == 1
    assert "garbage.keras: not a Keras .keras file" in capsys.readouterr().err
    assert main(["info", str(tiny_run / "best.keras")]) == 0
    assert "opened with Keras (safe mode)" in capsys.readouterr().out
