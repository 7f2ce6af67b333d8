"""Whatever a file is named, predict processes it (or it fails alone), and ``--overwrite``
deletes nothing outside OUT and nothing fcnx did not write: real files with hostile
names, real ``fcnx predict`` processes, two real models."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..fakes import THRESHOLD_ONNX
from .runs import predict_command, run

NEWLINE_ESCAPE = "x\n../data.csv\nz.png"  # a legal Linux file name that once deleted OUT/../data.csv


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The threshold model with another doc string: the same answers, another sha256, so
    to predict it is another model."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(THRESHOLD_ONNX))
    model.doc_string = "another model"
    path = tmp_path_factory.mktemp("other") / "other.onnx"
    onnx.save(model, str(path))
    return path


def _png(path: Path | bytes, seed: int = 0) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (40, 56), np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())


def _tree_hash(folder: Path, skip: Path) -> dict[bytes, str]:
    """sha256 of every file below ``folder`` outside ``skip``, by its name as bytes."""
    found = {}
    for root, dirs, files in os.walk(os.fsencode(folder)):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != os.fsencode(skip)]
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[path] = hashlib.sha256(f.read()).hexdigest()
    return found


def _outputs(out: Path) -> set[bytes]:
    return {
        os.path.relpath(os.path.join(root, n), os.fsencode(out))
        for root, _, files in os.walk(os.fsencode(out))
        for n in files
        if not n.startswith(b".") and n not in (b"summary.json", b"failures.jsonl")
    }


@pytest.mark.parametrize(
    "name",
    [
        NEWLINE_ESCAPE,
        "a\u2028b.png",
        "c\u0085d.png",
        "tab\tand\x1b[31mred.png",
        os.fsdecode(b"bad\xff\xfe.png"),
    ],
    ids=["newline-dotdot", "U+2028", "U+0085", "control", "not-utf8"],
)
def test_any_name_is_segmented_and_overwrite_with_another_model_stays_inside_out(
    name: str, other_model: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "good.png")
    (tmp_path / "data.csv").write_text("precious\n")
    if "/" in name:  # "x\n../data.csv\nz.png": a folder "x\n.." holding "data.csv\nz.png"
        (inputs / "x\n..").mkdir()
    _png(inputs / name, 1)
    out = tmp_path / "out"
    before = _tree_hash(tmp_path, skip=out)

    first = run(predict_command(inputs, out))
    assert first.returncode == 0, first.stderr
    assert len(_outputs(out)) == 2
    summary = json.loads((out / "summary.json").read_text(encoding="ascii"))  # names escaped: ASCII JSON
    assert summary["counts"]["written"] == 2
    for line in first.stdout.splitlines():  # the terminal sees no raw control character
        assert line.isprintable(), repr(line)

    second = run(predict_command(inputs, out, "--overwrite", model=other_model))
    assert second.returncode == 0, second.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="ascii"))
    assert summary["replaced_outputs_of_another_model"] == 2  # the old model's masks, no more, no fewer
    assert summary["model"] == str(other_model)
    assert len(_outputs(out)) == 2
    assert _tree_hash(tmp_path, skip=out) == before  # nothing outside OUT changed (data.csv included)


def _claimed_folder(tmp_path: Path, entries: list[str], header: bool = True) -> Path:
    """An OUT that a first run claimed, then its outputs list replaced by ``entries``."""
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    _png(inputs / "a.png")
    out = tmp_path / "out"
    assert run(predict_command(inputs, out)).returncode == 0
    lines = ([json.dumps({"fcnx": "predict outputs", "version": 2})] if header else []) + entries
    (out / ".fcnx-predict.outputs.jsonl").write_text("".join(f"{line}\n" for line in lines))
    return inputs


@pytest.mark.parametrize(
    "entries, header",
    [
        ([json.dumps("/VICTIM")], True),  # an absolute path
        ([json.dumps("../victim.png")], True),
        ([json.dumps("a.png"), json.dumps("sub/../../victim.png")], True),
        (["/VICTIM"], False),  # the old format: one name per line
        ([json.dumps("a.png"), "not json"], True),
        ([json.dumps(["a.png"])], True),
        ([json.dumps("summary.json")], True),  # inside OUT, but not an output fcnx writes
    ],
)
def test_an_outputs_list_naming_anything_outside_out_is_refused_and_nothing_is_deleted(
    entries: list[str], header: bool, other_model: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not fcnx's")
    entries = [e.replace("/VICTIM", str(victim)) for e in entries]
    inputs = _claimed_folder(tmp_path, entries, header)
    out = tmp_path / "out"
    masks = _outputs(out)
    result = run(predict_command(inputs, out, "--overwrite", model=other_model))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and ".fcnx-predict.outputs.jsonl" in errors[0] and "nothing was deleted" in errors[0]
    )
    assert "Traceback" not in result.stderr
    assert victim.read_bytes() == b"not fcnx's"
    assert _outputs(out) == masks  # the first model's mask is still there: nothing was deleted


def test_an_entry_through_a_linked_folder_is_refused(other_model: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.png").write_bytes(b"keep me")
    inputs = _claimed_folder(tmp_path, [json.dumps("a.png"), json.dumps("link/v.png")])
    out = tmp_path / "out"
    (out / "link").symlink_to(outside)
    result = run(predict_command(inputs, out, "--overwrite", model=other_model))
    assert result.returncode == 1 and "leads outside" in result.stderr
    assert (outside / "v.png").read_bytes() == b"keep me" and (out / "a.png").is_file()


def test_the_outputs_list_of_an_older_fcnx_is_refused(other_model: Path, tmp_path: Path) -> None:
    inputs = _claimed_folder(tmp_path, [json.dumps("a.png")])
    out = tmp_path / "out"
    (out / ".fcnx-predict.outputs").write_text("a.png\n../victim.png\n")
    result = run(predict_command(inputs, out, "--overwrite", model=other_model))
    assert result.returncode == 1 and "older fcnx" in result.stderr
    assert (out / "a.png").is_file()


def test_outputs_of_different_kinds_never_collide(tmp_path: Path) -> None:
    """``a.png`` and ``a.probs.png`` with --format npy --save-probs npy: a.probs.npy is a.png's
    probabilities, and a.probs.png fails, naming a.png; nothing is silently replaced."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "a.png", 0)
    _png(inputs / "a.probs.png", 1)
    out = tmp_path / "out"
    result = run(predict_command(inputs, out, "--format", "npy", "--save-probs", "npy"))
    assert result.returncode == 3, result.stderr
    probs = np.load(out / "a.probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (40, 56, 2)
    (failure,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["path"].endswith("a.probs.png") and failure["stage"] == "output"
    assert "is also the probabilities of" in failure["reason"] and "a.png" in failure["reason"]


def test_a_per_class_png_clashing_with_a_mask_is_a_failure(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "b.png", 0)
    _png(inputs / "b.probs-1.png", 1)  # its mask b.probs-1.png is b.png's class-1 probabilities
    out = tmp_path / "out"
    result = run(predict_command(inputs, out, "--save-probs", "png"))
    assert result.returncode == 3, result.stderr
    (failure,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["path"].endswith("b.probs-1.png") and "probabilities of" in failure["reason"]
    assert cv2.imread(str(out / "b.probs-1.png"), cv2.IMREAD_UNCHANGED).ndim == 2


def test_a_file_where_another_input_needs_a_folder_is_a_failure(tmp_path: Path) -> None:
    """Inputs ``x.png`` (of one folder) and ``x.png/y.png`` (of another) would need OUT/x.png
    to be a mask and a folder: the later input fails, naming the earlier one."""
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    flat.mkdir()
    (nested / "x.png").mkdir(parents=True)
    _png(flat / "x.png", 0)
    _png(nested / "x.png" / "y.png", 1)
    out = tmp_path / "out"
    command = predict_command(flat, out)
    command.insert(command.index(str(flat)) + 1, str(nested))
    result = run(command)
    assert result.returncode == 3, result.stderr
    assert (out / "x.png").is_file()
    (failure,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["path"].endswith("y.png") and "needs a folder where" in failure["reason"]


# Names as the OS has them: any bytes but "/" and NUL, including newlines, U+2028 in
# UTF-8, lone continuation bytes, control characters; nested up to two folders deep.
_NAME_BYTES = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..") and not b.startswith(b".")
)
_RELATIVE = st.lists(_NAME_BYTES, min_size=1, max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_RELATIVE, min_size=1, max_size=4), suffix=st.sampled_from([b".png", b".PNG", b".tif"]))
def test_any_bytes_in_names_through_predict_and_overwrite_stay_inside_out(
    names: list[list[bytes]], suffix: bytes, other_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from fcnx.runtime.predict.config import PredictConfig
    from fcnx.runtime.predict.job import predict_folder

    root = tmp_path_factory.mktemp("names")
    inputs = root / "in"
    inputs.mkdir()
    (root / "beside.txt").write_bytes(b"not fcnx's")
    made: set[bytes] = set()
    for i, parts in enumerate(names):
        rel = os.path.join(*parts[:-1], parts[-1] + suffix) if len(parts) > 1 else parts[0] + suffix
        if any(rel.startswith(m + b"/") or m.startswith(rel + b"/") for m in made):
            continue  # a name that is a folder of another: not both on one disk
        os.makedirs(
            os.path.dirname(os.path.join(os.fsencode(inputs), rel)) or os.fsencode(inputs), exist_ok=True
        )
        _png(os.path.join(os.fsencode(inputs), rel), i)
        made.add(rel)
    out = root / "out"
    before = _tree_hash(root, skip=out)

    def predict(model: Path, overwrite: bool) -> dict[str, object]:
        config = PredictConfig(
            model=str(model), inputs=(str(inputs),), out=str(out), progress=False, overwrite=overwrite,
            overlay=True, save_probs="png",
        )  # fmt: skip
        return predict_folder(config)

    first = predict(THRESHOLD_ONNX, overwrite=False)
    written = first["counts"]["written"]  # type: ignore[index]
    assert written + first["counts"]["failed"] == len(made)  # type: ignore[index]
    n_outputs = len(_outputs(out))
    assert n_outputs == written * 4  # mask, overlay, two class PNGs
    second = predict(other_model, overwrite=True)
    assert second["replaced_outputs_of_another_model"] == n_outputs
    assert len(_outputs(out)) == n_outputs  # the new model's outputs only: never two models' in one folder
    json.dumps(second)  # the summary serialises whatever the names
    assert _tree_hash(root, skip=out) == before


def test_an_output_below_a_link_out_of_out_is_a_failure_and_nothing_is_written_there(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    _png(inputs / "a.png", 0)
    _png(inputs / "sub" / "b.png", 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)  # a link someone left in OUT
    result = run(predict_command(inputs, out, "--overwrite"))
    assert result.returncode == 3, result.stderr
    assert (out / "a.png").is_file() and not list(outside.iterdir())
    (failure,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["path"].endswith("b.png") and "outside OUT, through a link" in failure["reason"]
