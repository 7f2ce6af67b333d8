"""fcnx predict --ray on a real local Ray cluster (2 CPUs, no dashboard) with a real
onnxruntime model: the same bytes as a local run, the same failures, resume, and the
public SegmentationPredictor in a pipeline of one's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fcnx.runtime.backends.ort import usable_cores
from fcnx.runtime.backends.registry import load
from fcnx.runtime.cli import main
from fcnx.runtime.predict.config import PredictConfig
from fcnx.runtime.predict.job import EXIT_FAILURES, predict_folder
from fcnx.runtime.predict.segmenter import Segmenter

from .image_files import assert_threshold_masks, bad_files, good_files, masks, png
from .predict_jobs import predict_config

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "fcnx[ray]"')


def _failures(out: Path) -> dict[str, tuple[str, str]]:
    lines = (out / "failures.jsonl").read_text().splitlines()
    return {r["path"]: (r["stage"], r["reason"].replace(str(out), "OUT")) for r in map(json.loads, lines)}


def test_ray_and_local_runs_write_the_same_bytes_and_failures(
    ray_cluster: None, threshold_onnx: Path, tmp_path: Path
) -> None:
    sizes = good_files(tmp_path / "in")
    bad_files(tmp_path / "in")
    (tmp_path / "in" / "grey.jpg").write_bytes(png(np.zeros((64, 64), np.uint8)))  # same output as grey.png
    local = predict_folder(
        predict_config(threshold_onnx, [tmp_path / "in"], tmp_path / "local", batch=2, overlay=True)
    )
    on_ray = predict_folder(
        predict_config(
            threshold_onnx, [tmp_path / "in"], tmp_path / "ray", batch=2, overlay=True, ray=True, workers=2
        )
    )
    assert on_ray["counts"] == local["counts"] == {"total": 10, "written": 5, "skipped": 0, "failed": 5}
    assert masks(tmp_path / "ray") == masks(tmp_path / "local") and len(masks(tmp_path / "ray")) == 5
    del sizes["grey.png"]  # grey.jpg came first and got that output (grey.png is the name-collision failure)
    assert_threshold_masks(tmp_path / "in", tmp_path / "ray", sizes)
    assert not np.array(Image.open(tmp_path / "ray" / "grey.png")).any()  # grey.jpg is all black
    overlays = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.overlay.jpg"))
    assert len(overlays) == 5
    for rel in overlays:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    assert _failures(tmp_path / "ray") == _failures(tmp_path / "local")
    assert on_ray["backend"] == "ray" and on_ray["provider"] == "ort-cpu (CPUExecutionProvider)"
    assert on_ray["ray"]["replicas"] == 2 and on_ray["ray"]["cluster_resources"]["CPU"] == 2
    assert on_ray["ray"]["cpus_per_replica"] == 0.5  # a joined 2-CPU cluster: room left for read/write
    assert not list((tmp_path / "ray").rglob(".*.tmp"))
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["backend"] == "ray"


def test_a_ray_rerun_resumes_and_redoes_only_what_is_missing(
    ray_cluster: None, threshold_onnx: Path, tmp_path: Path
) -> None:
    good_files(tmp_path / "in")
    out = tmp_path / "out"
    config = predict_config(threshold_onnx, [tmp_path / "in"], out, ray=True, workers=1)
    assert predict_folder(config)["counts"]["written"] == 5
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "grey.png").unlink()
    again = predict_folder(config)
    assert again["counts"] == {"total": 5, "written": 1, "skipped": 4, "failed": 0}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.name != "grey.png"} == {
        p: t for p, t in done.items() if p.name != "grey.png"
    }
    nothing_left = predict_folder(config)  # every output there: Ray is not even needed
    assert nothing_left["counts"]["skipped"] == 5 and nothing_left["provider"] == "-"


def test_segmentation_predictor_in_a_users_own_pipeline(
    ray_cluster: None, threshold_onnx: Path, tmp_path: Path
) -> None:
    from fcnx.runtime.predict.ray import SegmentationPredictor, read_images

    good_files(tmp_path / "in")
    paths = sorted(str(p) for p in (tmp_path / "in").rglob("*") if p.is_file())
    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(read_images, fn_kwargs={"channels": 1}, batch_size=2, num_cpus=0.5)
    ds = ds.map_batches(
        SegmentationPredictor,
        fn_constructor_kwargs={"model": str(threshold_onnx), "backend": "ort-cpu", "threads": 1},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=3,
        num_cpus=1,
    )
    rows = {row["path"]: row for row in ds.iter_rows()}
    assert sorted(rows) == paths and "image" not in rows[paths[0]]

    from fcnx.runtime.images import read_image

    backend = load(threshold_onnx, "ort-cpu")
    expected = Segmenter(backend).predict([read_image(p, 1) for p in paths])
    backend.close()
    for path, mask in zip(paths, expected):
        assert rows[path]["error"] == ""
        np.testing.assert_array_equal(rows[path]["mask"], mask)


def test_cli_predict_ray_reports_failures_and_cluster_limits(
    ray_cluster: None, threshold_onnx: Path, tmp_path: Path, capsys: Any
) -> None:
    good_files(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    args = [
        "predict",
        str(threshold_onnx),
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main([*args, "--ray", "--workers", "1"]) == EXIT_FAILURES
    text = capsys.readouterr().out
    assert "5 written, 0 already done, 1 failed of 6" in text and "on ray (ort-cpu" in text

    assert main([*args, "--ray", "--workers", "1", "--gpus-per-worker", "1", "--overwrite"]) == 1
    assert "needs 1 GPUs; the Ray cluster has 0" in capsys.readouterr().err
    assert main([*args, "--ray", "--workers", "3", "--cpus-per-worker", "1", "--overwrite"]) == 1
    assert "needs 4 CPUs; the Ray cluster has 2" in capsys.readouterr().err


def test_ray_flags_need_ray() -> None:
    with pytest.raises(ValueError, match="--address, --cpus-per-worker only apply with --ray"):
        PredictConfig(model="m.onnx", inputs=("in",), out="out", address="auto", cpus_per_worker=2)
    with pytest.raises(ValueError, match="--gpus-per-worker only apply with --ray"):
        PredictConfig(model="m.onnx", inputs=("in",), out="out", gpus_per_worker=1)


def test_without_address_fcnx_starts_its_own_cluster_or_joins_ray_address(
    threshold_onnx: Path, tmp_path: Path
) -> None:
    """Another Ray cluster on this machine (it writes /tmp/ray/ray_current_cluster, which a
    bare ray.init() would join and then refuse fcnx's CPU count) is left alone; RAY_ADDRESS,
    what `ray job submit` sets, is joined."""
    from ray.cluster_utils import Cluster

    good_files(tmp_path / "in")
    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        for name, extra in (("own", {}), ("joined", {"RAY_ADDRESS": other.address})):
            out = tmp_path / name
            command = [sys.executable, "-m", "fcnx.runtime.cli", "predict", str(threshold_onnx),
                       str(tmp_path / "in"), "-o", str(out), "--ray", "--workers", "1", "--no-progress"]  # fmt: skip
            done = subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            run = json.loads((out / "summary.json").read_text())
            assert run["counts"]["written"] == 5
            cpus = run["ray"]["cluster_resources"]["CPU"]
            assert cpus == (2 if name == "joined" else usable_cores() + 1), (name, cpus)
            assert run["ray"]["address"] == (other.address if name == "joined" else "local")
    finally:
        other.shutdown()
