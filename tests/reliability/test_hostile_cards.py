"""A hostile model card (an ONNX whose ``metadata_props["fcnx.card"]`` anyone rewrote) is one
clear line from real ``fcnx info`` and ``fcnx predict`` processes: exit code 1, one
``error:`` line naming the file and the field, never a traceback, never believed (no mask
written, no card printed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import onnx
import pytest

from fcnx.runtime.backends.ort import CARD_KEY

from ..fakes import THRESHOLD_ONNX
from .runs import CLI, make_images

DEEP = 50_000  # levels: json.loads would hit Python's recursion limit long before


def hostile_onnx(folder: Path, card_text: str, fixed_hw: tuple[int, int] | None = None) -> Path:
    """A copy of the threshold model whose card is ``card_text`` (and whose input is fixed
    to ``fixed_hw`` when given; its graph takes any size otherwise)."""
    model = onnx.load(str(THRESHOLD_ONNX))
    (prop,) = [p for p in model.metadata_props if p.key == CARD_KEY]
    prop.value = card_text
    if fixed_hw is not None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim, side in zip(dims[1:3], fixed_hw):
            dim.dim_value = side  # replaces the symbolic H / W
    path = folder / "hostile.onnx"
    onnx.save(model, str(path))
    return path


def threshold_card(**changes: Any) -> dict[str, Any]:
    model = onnx.load(str(THRESHOLD_ONNX))
    card: dict[str, Any] = json.loads(next(p.value for p in model.metadata_props if p.key == CARD_KEY))
    return {**card, **changes}


def info_and_predict(model: Path, tmp_path: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """``fcnx info MODEL`` and ``fcnx predict MODEL IMAGES -o OUT --no-progress``, run side by side."""
    images = make_images(tmp_path / "in", 2)
    commands = {
        "info": [*CLI, "info", str(model)],
        "predict": [*CLI, "predict", str(model), str(images), "-o", str(tmp_path / "out"), "--no-progress"],
    }
    env = {**os.environ, "OPENCV_LOG_LEVEL": "ERROR"}
    env.pop("FCNX_DEBUG", None)  # the one-line path, not the debugging traceback
    running = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name, command in commands.items()
    }
    done = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(commands[name], process.returncode, stdout, stderr)
    return done


def _deep_card() -> str:
    text = json.dumps(threshold_card(training={"a": "HOLE"}))
    return text.replace('"HOLE"', "[" * DEEP + "]" * DEEP)


CASES = {
    "input_multiple 0": (json.dumps(threshold_card(input_multiple=0)), None, "card field input_multiple"),
    "nested 50 000 deep": (_deep_card(), None, "card field training nests more than 64 levels deep"),
    "input_height -512": (json.dumps(threshold_card(input_height=-512)), None, "card field input_height"),
    "input_width 0": (json.dumps(threshold_card(input_width=0)), None, "card field input_width"),
    "input_height '512'": (json.dumps(threshold_card(input_height="512")), None, "card field input_height"),
    "card 32 high, graph 64": (
        json.dumps(threshold_card(input_height=32, input_width=64)),
        (64, 64),
        "its fcnx card and its graph disagree: the card says input height 32, the graph has 64",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_card_is_one_error_line_from_info_and_predict(case: str, tmp_path: Path) -> None:
    card_text, fixed_hw, says = CASES[case]
    model = hostile_onnx(tmp_path, card_text, fixed_hw)
    for name, result in info_and_predict(model, tmp_path).items():
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 1, (name, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert len(errors) == 1, (name, result.stderr[-2000:])
        assert errors[0].startswith(f"error: {model}") and errors[0].count(str(model)) == 1, (name, errors)
        assert says in errors[0], (name, errors)
        assert len(errors[0]) < 400, (name, errors)
    assert not list((tmp_path / "out").rglob("*.png"))  # never believed: no mask written


def test_the_rewritten_file_itself_is_fine(tmp_path: Path) -> None:
    """The control: the same rewrite with a valid card (a 64x64 graph, its card saying so) runs."""
    model = hostile_onnx(tmp_path, json.dumps(threshold_card(input_height=64, input_width=64)), (64, 64))
    results = info_and_predict(model, tmp_path)
    assert results["info"].returncode == 0 and "64x64x1 uint8" in results["info"].stdout, results["info"]
    assert results["predict"].returncode == 0, results["predict"].stderr[-2000:]
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2


@pytest.mark.parametrize(
    ("card", "says"),
    [
        (threshold_card(input_height=32, input_width=64), "the card says input height 32, the graph has 64"),
        (threshold_card(input_channels=3), "the card says 3 input channels, the graph has 1"),
        (
            threshold_card(input_multiple=0),
            "rt_info: card field input_multiple must be an integer in 1..1024",
        ),
    ],
)
def test_openvino_checks_its_card_against_its_graph_too(
    card: dict[str, Any], says: str, tmp_path: Path
) -> None:
    """The same card checks on an IR pair (the card in its rt_info), in process."""
    openvino = pytest.importorskip(
        "openvino", reason='openvino is not installed: pip install "fcnx[openvino]"'
    )
    from fcnx.export.openvino_export import publish_pair, save_ir
    from fcnx.runtime.backends.base import BackendError
    from fcnx.runtime.backends.ov import OvBackend
    from fcnx.runtime.backends.ov_ir import CARD_KEY as IR_CARD_KEY
    from fcnx.runtime.backends.ov_ir import PRECISION_KEY, RT_SECTION

    fixed = hostile_onnx(tmp_path, json.dumps(threshold_card()), (64, 64))
    model = openvino.convert_model(str(fixed))
    model.set_rt_info(json.dumps(card), [RT_SECTION, IR_CARD_KEY])
    model.set_rt_info("f32", [RT_SECTION, PRECISION_KEY])
    xml, staging = tmp_path / "hostile.xml", tmp_path / ".staging"
    staging.mkdir()
    publish_pair(save_ir(openvino, model, staging, xml.name), xml)
    with pytest.raises(BackendError) as caught:
        OvBackend(xml)
    message = str(caught.value)
    assert message.startswith(str(xml)) and message.count(str(xml)) == 1 and says in message, message
