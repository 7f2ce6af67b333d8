"""fcnx deploy (export/deploy/) and deploy folders at run time (runtime/deployed.py): the
candidates against what a machine has (faked), the seeded disjoint split, the rule, and
real deploys of the tiny trained model (real exports, parity gates, onnxruntime
sessions, a killed subprocess resumed from the cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fcnx.export.deploy import candidates as cands
from fcnx.export.deploy import rule
from fcnx.export.deploy.run import DeployConfig, NothingWithinBudget, deploy
from fcnx.export.deploy.split import split_images
from fcnx.runtime.backends.base import BackendError
from fcnx.runtime.deployed import load_deployed, machine_mismatches

ROOT = Path(__file__).resolve().parents[2]
NO_FLAGS = {"AVX-512": True, "AVX512-VNNI": True, "AVX512-BF16": False, "AMX-BF16": False}


def _machine(**kw: Any) -> cands.Machine:
    base: dict[str, Any] = {"cpu_flags": NO_FLAGS, "gpus": (), "providers": ("CPUExecutionProvider",),
                            "modules": frozenset({"onnxruntime", "openvino", "nncf"})}  # fmt: skip
    return cands.Machine(**{**base, **kw})


def _by_name(machine: cands.Machine) -> dict[str, cands.Candidate]:
    return {c.name: c for c in cands.candidates(machine)}


def test_candidates_follow_what_the_machine_has() -> None:
    cpu = _by_name(_machine())
    assert {n for n, c in cpu.items() if c.available} == {
        "ort-cpu fp32", "ort-cpu fp16", "ort-cpu int8", "ov-cpu fp32", "ov-cpu int8"}  # fmt: skip
    assert cpu["ov-cpu bf16"].reason == "the CPU has no AVX512-BF16 or AMX-BF16"
    assert "CUDAExecutionProvider" in cpu["ort-cuda fp16"].reason
    assert "tensorrt is not installed" in cpu["trt fp16"].reason
    bf16 = _by_name(_machine(cpu_flags={**NO_FLAGS, "AMX-BF16": True}))
    assert bf16["ov-cpu bf16"].available
    no_ov = _by_name(_machine(modules=frozenset({"onnxruntime"})))
    assert (
        not no_ov["ov-cpu fp32"].available and 'pip install "fcnx[openvino]"' in no_ov["ov-cpu fp32"].reason
    )
    no_nncf = _by_name(_machine(modules=frozenset({"onnxruntime", "openvino"})))
    assert no_nncf["ov-cpu fp32"].available and not no_nncf["ov-cpu int8"].available
    gpu = _by_name(_machine(gpus=("NVIDIA H200",), providers=("CUDAExecutionProvider", "TensorrtExecutionProvider",
                                                              "CPUExecutionProvider"),
                            modules=frozenset({"onnxruntime", "openvino", "nncf", "tensorrt"})))  # fmt: skip
    assert all(
        gpu[n].available for n in ("ort-cuda fp32", "ort-cuda fp16", "ort-trt int8", "trt fp16", "trt int8")
    )
    providers_no_gpu = _by_name(_machine(providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
    assert providers_no_gpu["ort-cuda fp32"].reason == "no NVIDIA GPU"


def test_the_split_is_seeded_and_disjoint(synthetic_data: Path, tmp_path: Path) -> None:
    a = split_images(synthetic_data, None, 32, seed=0)
    assert not set(a.calib) & set(a.judge) and len(a.calib) + len(a.judge) == 12 and len(a.calib) == 6
    assert split_images(synthetic_data, None, 32, seed=0) == a
    assert split_images(synthetic_data, None, 32, seed=1).calib != a.calib
    assert len(split_images(synthetic_data, None, 2, seed=0).calib) == 2
    assert set(a.labels) == {p.name for p in a.judge}  # every judging image has its label
    calib, judge = a.write(tmp_path / "split")
    assert sorted(p.name for p in (calib / "image").iterdir()) == sorted(p.name for p in a.calib)
    assert sorted(p.name for p in (judge / "label").iterdir()) == sorted(
        a.labels[p.name].name for p in a.judge
    )
    assert all((judge / "image" / p.name).resolve() == p.resolve() for p in a.judge)  # links, not copies


def test_calibration_images_of_their_own_leave_every_image_to_judge(
    synthetic_data: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="also in"):  # --calib naming the judging images themselves
        split_images(synthetic_data, synthetic_data, 3, seed=0)
    other = tmp_path / "calib"
    other.mkdir()
    for p in sorted((synthetic_data / "image").iterdir())[:2]:
        (other / p.name).symlink_to(p)  # the same files through links: still the same images
    with pytest.raises(ValueError, match="2 calibration images are also in"):
        split_images(synthetic_data, other, 3, seed=0)
    for link in other.iterdir():
        link.unlink()
    for p in sorted((synthetic_data / "image").iterdir())[:2]:
        (other / p.name).write_bytes(np.flip(np.frombuffer(p.read_bytes(), np.uint8)).tobytes())
    split = split_images(synthetic_data, other, 3, seed=0)
    assert len(split.calib) == 2 and len(split.judge) == 12


def _entry(name: str, precision: str, speed: float, agreement: float = 1.0, change: float | None = 0.0,
           status: str = "passed", p99: float = 10.0, baseline: bool = False) -> dict[str, Any]:  # fmt: skip
    backend = name.split()[0]
    return {"candidate": name, "backend": backend, "precision": precision, "status": status, "baseline": baseline,
            "parity": {"mask_agreement": agreement, "miou_change": change},
            "rows": [{"status": "measured", "images_per_second": speed, "p99_ms": p99,
                      "setting": {"batch": 8}}]}  # fmt: skip


ORDER = [
    "ort-cpu fp32",
    "ort-cpu fp16",
    "ort-cpu int8",
    "ov-cpu fp32",
    "ov-cpu bf16",
    "ov-cpu int8",
    "keras fp32",
]


def test_the_rule_takes_the_fastest_within_budget() -> None:
    entries = [_entry("ort-cpu fp32", "fp32", 10.0), _entry("ov-cpu int8", "int8", 30.0, agreement=0.95),
               _entry("ov-cpu bf16", "bf16", 20.0), _entry("ort-cpu int8", "int8", 25.0, change=-0.02),
               _entry("keras fp32", "fp32", 99.0, baseline=True), _entry("ort-cpu fp16", "fp16", 50.0,
               status="rejected")]  # fmt: skip
    choice = rule.choose(entries, "throughput", rule.Budget(), ORDER)
    assert choice.winner is not None and choice.winner["candidate"] == "ov-cpu bf16"
    assert choice.runner_up is not None and choice.runner_up["candidate"] == "ort-cpu fp32"
    assert choice.margin == pytest.approx(2.0)
    verdicts = {e["candidate"]: e["verdict"] for e in entries}
    assert verdicts["ov-cpu int8"].startswith("over the budget: mask agreement 95.0000% < 99.00%")
    assert "mIoU drop 2.00 pt > 0.50 pt" in verdicts["ort-cpu int8"]
    assert verdicts["keras fp32"] == "baseline (never chosen)" and verdicts["ort-cpu fp16"].startswith(
        "rejected"
    )
    looser = rule.choose([dict(e) for e in entries], "throughput", rule.Budget(0.9, 0.05), ORDER)
    assert looser.winner is not None and looser.winner["candidate"] == "ov-cpu int8"


def test_a_tie_goes_to_the_more_exact_precision_and_latency_to_the_lowest_p99() -> None:
    tie = [
        _entry("ov-cpu int8", "int8", 20.004),
        _entry("ort-cpu fp32", "fp32", 20.001),
        _entry("ov-cpu fp32", "fp32", 20.0),
    ]
    choice = rule.choose(tie, "throughput", rule.Budget(), ORDER)
    assert (
        choice.winner is not None and choice.winner["candidate"] == "ort-cpu fp32"
    )  # fp32 first, then the order
    fast = [_entry("ov-cpu int8", "int8", 1.0, p99=40.0), _entry("ort-cpu fp32", "fp32", 9.0, p99=80.0)]
    latency = rule.choose(fast, "latency", rule.Budget(), ORDER)
    assert (
        latency.winner is not None and latency.winner["candidate"] == "ov-cpu int8" and latency.margin == 2.0
    )


def test_nothing_within_budget_is_no_winner() -> None:
    entries = [
        _entry("ov-cpu int8", "int8", 30.0, agreement=0.5),
        _entry("keras fp32", "fp32", 5.0, baseline=True),
    ]
    assert rule.choose(entries, "throughput", rule.Budget(), ORDER).winner is None


def test_budget_flags() -> None:
    assert DeployConfig(budget="fp16").quality_budget() == rule.Budget(0.999, 0.001)
    assert DeployConfig(min_agreement=99.5, max_miou_drop=0.2).quality_budget() == rule.Budget(0.995, 0.002)
    with pytest.raises(ValueError, match="preset"):
        DeployConfig(budget="int8", min_agreement=99)
    command = DeployConfig(model="run", out="D", data="imgs", objective="latency").command()
    assert command == "fcnx deploy run --data imgs -o D --objective latency --force"


def test_a_deploy_folder_for_another_machine_is_refused_with_the_command(
    tmp_path: Path, monkeypatch: Any
) -> None:
    record: dict[str, Any] = {"format": "fcnx-deploy", "version": 1, "command": "fcnx deploy run --data d -o D --force",
              "winner": {"backend": "ov-cpu", "precision": "bf16", "artifact": "model.xml", "settings": {"batch": 4}},
              "requires": {"gpu": None}}  # fmt: skip
    assert machine_mismatches(record, {"AVX512-BF16": False, "AMX-BF16": False}, []) == [
        "a BF16 ov-cpu winner needs AVX512-BF16 or AMX-BF16, which this CPU lacks"]  # fmt: skip
    assert machine_mismatches(record, {"AMX-BF16": True}, []) == []
    engine = {**record, "winner": {**record["winner"], "backend": "trt", "precision": "fp16"},
              "requires": {"gpu": "NVIDIA H200"}}  # fmt: skip
    assert machine_mismatches(engine, {}, ["NVIDIA H100 80GB HBM3"]) == [
        "it was built for NVIDIA H200; this machine has NVIDIA H100 80GB HBM3"]  # fmt: skip
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "deploy.json").write_text(json.dumps(record))
    (folder / "model.xml").write_text("<net/>")
    import fcnx.runtime.bench.machine as machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: {"AVX512-BF16": False, "AMX-BF16": False})
    with pytest.raises(
        BackendError, match=r"lacks.*Choose again on this machine: fcnx deploy run --data d -o D"
    ):
        load_deployed(folder)
    (folder / "deploy.json").write_text(
        json.dumps({**record, "winner": {**record["winner"], "artifact": "../x"}})
    )
    with pytest.raises(BackendError, match="inside the folder"):
        load_deployed(folder)


# -- real deploys of the tiny model ---------------------------------------------------------------


def _config(run: Path, data: Path, out: Path, cache: Path, **kw: Any) -> DeployConfig:
    base: dict[str, Any] = {"candidates": "ort-cpu fp32,ort-cpu int8", "time_budget": 3.0, "baselines": False,
                            "report": False}  # fmt: skip
    return DeployConfig(model=str(run), out=str(out), data=str(data), cache=str(cache), **{**base, **kw})


def test_a_deploy_runs_as_predicting_its_winner_directly(
    tiny_run: Path, synthetic_data: Path, tmp_path: Path
) -> None:
    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.images import read_image
    from fcnx.runtime.predict.segmenter import Segmenter

    out = tmp_path / "D"
    record = deploy(
        _config(tiny_run, synthetic_data, out, tmp_path / "cache", report=True), log=lambda _: None
    )
    winner = record["winner"]
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.onnx", "report.html"]
    assert json.loads((out / "deploy.json").read_text()) == record
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 1 + 4 and "The deployment" in page  # the speed chart, the winner's pictures
    assert {e["candidate"] for e in record["candidates"] if e["status"] in ("passed", "rejected")} == {
        "ort-cpu fp32", "ort-cpu int8"}  # fmt: skip
    judging = {Path(p).name for p in record["data"]["judging"]}
    assert not judging & {Path(p).name for p in record["data"]["calibration"]}
    images = [read_image(synthetic_data / "image" / name, 1) for name in sorted(judging)]
    with load(out) as deployed:
        assert deployed.name == winner["backend"] and deployed.preferred_batch == winner["settings"]["batch"]
        via_deploy = Segmenter(deployed).predict(images)
    with load(out / "model.onnx", winner["backend"]) as direct:
        by_hand = Segmenter(direct, winner["settings"]["batch"]).predict(images)
    for a, b in zip(via_deploy, by_hand):
        np.testing.assert_array_equal(a, b)
    from fcnx.runtime.commands.info import describe_model

    info = describe_model(out)
    assert info["kind"] == "deploy: model.onnx, onnx" and info["note"].startswith(
        f"deploy chose {winner['candidate']}"
    )
    assert info["note"].endswith("runs here")
    with pytest.raises(FileExistsError, match="--force"):
        deploy(_config(tiny_run, synthetic_data, out, tmp_path / "cache"), log=lambda _: None)


def test_a_failed_gate_is_a_rejected_row_and_nothing_within_budget_writes_nothing(
    tiny_run: Path, synthetic_data: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from fcnx.export import parity

    monkeypatch.setitem(parity.BUDGETS, "int8", parity.Budget(None, 1.01, None))  # no INT8 can pass
    lines: list[str] = []
    out = tmp_path / "D"
    config = _config(tiny_run, synthetic_data, out, tmp_path / "cache", candidates="ort-cpu int8")
    with pytest.raises(NothingWithinBudget) as caught:
        deploy(config, log=lines.append)
    assert "rejected: mask agreement" in caught.value.table and not out.exists()
    record = deploy(_config(tiny_run, synthetic_data, out, tmp_path / "cache"), log=lines.append)
    int8 = next(e for e in record["candidates"] if e["candidate"] == "ort-cpu int8")
    assert (
        int8["status"] == "rejected" and "mask agreement" in int8["reason"] and int8["parity"]["images"] == 6
    )
    assert record["winner"]["candidate"] == "ort-cpu fp32"


# what differs between two deploys of the same inputs: timings, and what timings decide (the winner
# of two candidates that close, the verdicts); and where the cache lies
TIMINGS = {"seconds", "export_seconds", "images_per_second", "p50_ms", "p99_ms", "calls", "stable", "margin",
           "best", "machine", "winner", "verdict", "file", "command", "provider", "rows"}  # fmt: skip


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_killed_deploy_resumes_from_the_cache(tiny_run: Path, synthetic_data: Path, tmp_path: Path) -> None:
    """SIGKILLed as its second export is being recorded, a deploy's rerun takes the first
    from the cache and makes the same deploy.json (apart from timings) as an unkilled one."""
    command = [sys.executable, "-m", "fcnx.runtime.cli", "deploy", str(tiny_run), "--data", str(synthetic_data),
               "--candidates", "ort-cpu fp32,ort-cpu fp16", "--time-budget", "2", "--no-baselines",
               "--no-report"]  # fmt: skip
    env = {**os.environ, "FCNX_KILL_AT": "before-replace:result.json#2"}
    killed = subprocess.run([*command, "-o", str(tmp_path / "D"), "--cache", str(tmp_path / "c")], env=env,
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "D").exists()
    rerun = subprocess.run([*command, "-o", str(tmp_path / "D"), "--cache", str(tmp_path / "c")],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("(cached)") == 1  # the first export; the second was made again
    fresh = subprocess.run([*command, "-o", str(tmp_path / "F"), "--cache", str(tmp_path / "c2")],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    a = json.loads((tmp_path / "D" / "deploy.json").read_text())
    b = json.loads((tmp_path / "F" / "deploy.json").read_text())
    assert _without_timings(a) == _without_timings(b)

    def tried(record: dict[str, Any]) -> list[tuple[str, str, int]]:  # every setting timed in the sweep
        return sorted((e["candidate"], r["stage"], r["setting"]["batch"]) for e in record["candidates"]
                      for r in e.get("rows", []) if r["stage"] == "sweep")  # fmt: skip

    assert tried(a) == tried(b) and len(tried(a)) == 6
    assert [e["status"] for e in a["candidates"] if e["status"] == "passed"] == ["passed", "passed"]
