"""fcnx bench on the tiny model: rows for every runnable (model, backend, batch), a row
with the reason for what cannot run, the report files, and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fcnx.runtime.backends.registry import load, offered_backends
from fcnx.runtime.bench.config import BenchConfig, BenchRow
from fcnx.runtime.bench.report import table, write_report
from fcnx.runtime.bench.run import Contender, run_bench, run_infer_rows
from fcnx.runtime.cli import main

from ..fakes import FakeBackend

QUICK = {"min_seconds": 0.3, "max_seconds": 2.0, "warmup": 1, "ceiling": False}


@pytest.fixture(scope="module")
def report(tiny_run: Path, tiny_onnx: Path, tiny_onnx_fixed: Path) -> dict[str, Any]:
    config = BenchConfig(
        models=(str(tiny_run), str(tiny_onnx), str(tiny_onnx_fixed)),
        backends="keras,ort-cpu,ort-cuda",
        batch="1,3",
        pipeline=True,
        **QUICK,  # type: ignore[arg-type]
    )
    return run_bench(config)


def _rows(report: dict[str, Any], **match: Any) -> list[BenchRow]:
    rows = [BenchRow.from_dict(r) for r in report["rows"]]
    return [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]


def test_every_backend_runs_every_file_it_can_load(report: dict[str, Any], tiny_onnx: Path) -> None:
    ok = _rows(report, status="ok", mode="infer")
    assert {(Path(r.model).name, r.backend, r.batch) for r in ok} == {
        ("tiny", "keras", 1), ("tiny", "keras", 3), ("model.onnx", "ort-cpu", 1), ("model.onnx", "ort-cpu", 3),
        ("fixed.onnx", "ort-cpu", 3),
    }  # fmt: skip
    for r in ok:
        assert r.images_per_second and r.images_per_second > 0 and r.calls >= 1
        assert r.p50_ms is not None and r.p50_ms <= (r.p99_ms or 0) and len(r.latencies_ms) == r.calls
        assert r.provider and r.precision == "fp32" and r.input == "64x64x1"
    onnx_row = _rows(report, model=str(tiny_onnx), batch=3, mode="infer")[0]
    assert onnx_row.vs_keras is not None and onnx_row.vs_keras > 0  # measured against the keras row
    assert "CPUExecutionProvider" in report["providers"]


def test_rows_say_why_something_did_not_run(report: dict[str, Any], tiny_onnx_fixed: Path) -> None:
    cuda = _rows(report, backend="ort-cuda")
    if "ort-cuda" in offered_backends("onnx"):  # a GPU box: the CUDA rows ran
        assert cuda and all(r.status == "ok" for r in cuda if r.batch != 1 or "fixed" not in r.model)
    else:
        assert cuda and all(r.status == "unavailable" and "CUDAExecutionProvider" in r.reason for r in cuda)
    skipped = _rows(report, model=str(tiny_onnx_fixed), batch=1)
    assert skipped[0].status == "skipped" and "fixed batch of 3" in skipped[0].reason


def test_pipeline_rows_compare_fcnx_predict_with_raw_inference(
    report: dict[str, Any], tiny_onnx: Path
) -> None:
    raw = _rows(report, model=str(tiny_onnx), mode="raw", batch=3)[0]
    pipeline = _rows(report, model=str(tiny_onnx), mode="pipeline", batch=3)[0]
    assert raw.images_per_second and pipeline.images_per_second and pipeline.vs_raw
    assert pipeline.vs_raw == pytest.approx(pipeline.images_per_second / raw.images_per_second, rel=1e-2)


def test_a_failing_backend_leaves_a_failed_row_and_the_run_goes_on(threshold_onnx: Path) -> None:
    good = load(threshold_onnx, "ort-cpu")
    broken = FakeBackend()
    broken._infer = lambda batch: (_ for _ in ()).throw(RuntimeError("device lost"))  # type: ignore[method-assign]
    batch = {2: np.zeros((2, 64, 64, 1), np.uint8)}
    contenders = [
        Contender("a.onnx", broken, broken.card, batch),
        Contender("b.onnx", good, good.card, batch),
    ]
    rows = run_infer_rows(BenchConfig(models=("x",), batch="2", **QUICK), contenders)  # type: ignore[arg-type]
    assert [(r.model, r.status) for r in rows] == [("a.onnx", "failed"), ("b.onnx", "ok")]
    assert rows[0].reason == "RuntimeError: device lost"
    assert rows[1].arch == "threshold" and rows[1].input == "64x64x1" and rows[1].calls >= 1


def test_report_files_and_json_round_trip(report: dict[str, Any], tmp_path: Path) -> None:
    written = write_report(report, tmp_path)
    assert {p.name for p in written} == {
        "bench.json",
        "bench.csv",
        "bench.md",
        "throughput.png",
        "latency.png",
    }
    assert all(p.stat().st_size > 0 for p in written)
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = json.loads((tmp_path / "bench.json").read_text())
    assert [BenchRow.from_dict(r).to_dict() for r in back["rows"]] == report["rows"]
    assert "| model | backend |" in (tmp_path / "bench.md").read_text()
    assert len((tmp_path / "bench.csv").read_text().splitlines()) == len(report["rows"]) + 1
    with pytest.raises(ValueError, match=r"bench row: unknown keys \['speed'\]"):
        BenchRow.from_dict({**back["rows"][0], "speed": 1})
    assert ("unavailable" in table(report)) == ("ort-cuda" not in offered_backends("onnx"))


def test_cli_bench(tiny_onnx: Path, tmp_path: Path, capsys: Any) -> None:
    code = main(["bench", str(tiny_onnx), "--backends", "ort-cpu", "--batch", "2", "--min-seconds", "0.2",
                 "--warmup", "1", "--no-ceiling", "--no-plots", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    assert "img/s" in capsys.readouterr().out and (tmp_path / "bench.json").is_file()
    assert main(["bench", str(tiny_onnx), "--batch", "0", "--out", str(tmp_path)]) == 1
    assert "positive integers" in capsys.readouterr().err


def test_keras_rows_get_the_same_networks_flops_and_int8_rows_no_float_peak() -> None:
    from fcnx.runtime.bench.run import _peak_for, _same_network_flops

    keras = BenchRow(model="run", backend="keras", batch=8, arch="fcn8s", precision="fp32", input="512x512x1",
                     images_per_second=6.0)  # fmt: skip
    onnx = BenchRow(model="m.onnx", backend="ort-cpu", batch=8, arch="fcn8s", precision="fp32", input="512x512x1",
                    images_per_second=8.0, gflops_per_image=40.8)  # fmt: skip
    int8 = BenchRow(model="q.onnx", backend="ort-cpu", batch=8, arch="fcn8s", precision="int8", input="512x512x1",
                    images_per_second=14.0, gflops_per_image=40.8)  # fmt: skip
    _same_network_flops([keras, onnx, int8])
    assert keras.gflops_per_image == 40.8 and keras.gflops_per_second == pytest.approx(244.8)
    ceiling = {"cpu": {"peak_gflops": 340.0}}
    assert _peak_for(onnx, ceiling) == 340.0 and _peak_for(int8, ceiling) is None
    assert (
        _peak_for(BenchRow(model="e", backend="trt", batch=1, precision="fp16"), ceiling) is None
    )  # no GPU peak


def test_a_deploy_folder_is_timed_on_the_backend_it_won_on(threshold_onnx: Path, tmp_path: Path) -> None:
    """fcnx bench DEPLOY/: rows for its winner's backend, a skipped row when that backend is not asked for."""
    import json
    import shutil

    from fcnx.runtime.bench.config import BenchConfig
    from fcnx.runtime.bench.run import run_bench

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(threshold_onnx, deploy / "model.onnx")
    record = {"format": "fcnx-deploy", "version": 1, "command": "fcnx deploy m --data d -o deploy --force",
              "winner": {"backend": "ort-cpu", "precision": "fp32", "artifact": "model.onnx", "settings": {"batch": 2}},
              "requires": {"gpu": None}}  # fmt: skip
    (deploy / "deploy.json").write_text(json.dumps(record))
    common = dict(models=(str(deploy),), batch="1", min_seconds=0.0, warmup=0, out=str(tmp_path / "b"),
                  ceiling=False, plots=False)  # fmt: skip
    rows = run_bench(BenchConfig(backends="ort-cpu,ov-cpu", **common))["rows"]  # type: ignore[arg-type]
    assert [(r["backend"], r["status"]) for r in rows] == [("ort-cpu", "ok")]
    rows = run_bench(BenchConfig(backends="ov-cpu", **common))["rows"]  # type: ignore[arg-type]
    assert [(r["backend"], r["status"]) for r in rows] == [("ort-cpu", "skipped")]
    assert "add it to --backends" in rows[0]["reason"]
