"""fcnx predict --ray over stacks, volumes and planes read by windows (runtime/predict/
ray_regions.py), on real Ray clusters with the tiny trained FCN (whose tiles really blend):
byte-identical to the local run with regions everywhere, a poisoned region failing alone
and a rerun finishing it, and a 3-node cluster (a head and two worker nodes, real
processes) surviving a SIGKILLed worker node and a SIGKILLed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fcnx.runtime.predict import regions, volumes
from fcnx.runtime.predict.job import predict_folder

from .predict_jobs import predict_config

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "fcnx[ray]"')
zarr = pytest.importorskip("zarr", reason='needs the volumes extra: pip install "fcnx[volumes]"')
tifffile = pytest.importorskip("tifffile", reason='needs the volumes extra: pip install "fcnx[volumes]"')
psutil = pytest.importorskip("psutil", reason="psutil finds a worker node's actor processes")


def _volume(path: Path, planes: int, height: int, width: int, chunk: int = 64, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, width)[None, :]
    data = np.stack([(rng.random((height, width)) * 70 + ramp).astype(np.uint8) for _ in range(planes)])
    array = zarr.create_array(path, shape=data.shape, chunks=(1, chunk, chunk), dtype="uint8", zarr_format=2)
    array[:] = data
    array.attrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"]
    return data


def _arrays(root: Path) -> dict[str, bytes]:
    """The arrays of a Zarr output (a group's levels, or one array) as bytes."""
    if (root / ".zarray").is_file():
        return {"": zarr.open_array(root, mode="r")[:].tobytes()}
    group = zarr.open_group(root, mode="r")
    return {key: group[key][:].tobytes() for key in sorted(group.array_keys())}


def test_regions_on_two_workers_equal_the_local_run_byte_for_byte(
    ray_cluster: None, tiny_onnx_dynamic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planes read by windows, cut into 3 column strips x 4 row regions each, run on 2
    actors in whatever order Ray runs them: labels and probabilities equal the local run."""
    from fcnx.runtime.arrays.ome_zarr import OmeZarrLabelWriter

    _volume(tmp_path / "big.zarr", 2, 300, 270)
    monkeypatch.setattr(volumes, "WHOLE_PLANE_PIXELS", 0)  # every plane windowed
    monkeypatch.setattr(volumes, "BAND_ROWS", 48)
    monkeypatch.setattr(OmeZarrLabelWriter, "STRIP", 96)
    monkeypatch.setattr(regions, "MIN_REGION_BANDS", 1)
    monkeypatch.setattr(regions, "REGION_PIXELS", 96 * 96)  # regions of 2 bands (96 rows)
    kw: dict[str, Any] = {"tile": "64x64", "overlap": 16, "save_probs": "npy"}
    local = predict_folder(
        predict_config(tiny_onnx_dynamic, [tmp_path / "big.zarr"], tmp_path / "local", **kw)
    )
    assert local["counts"]["written"] == 1, local
    summary = predict_folder(
        predict_config(
            tiny_onnx_dynamic, [tmp_path / "big.zarr"], tmp_path / "ray", ray=True, workers=2, **kw
        )
    )
    assert summary["counts"] == local["counts"], summary
    stats = summary["ray"]["regions"]
    assert (stats["total"], stats["run"], stats["done_before"], stats["failed"]) == (24, 24, 0, 0), stats
    assert stats["object_store_peak_bytes"] is not None and stats["object_store_peak_bytes"] < 1 << 20, stats
    assert stats["cost"]["pixels"] == 2 * 300 * 270 and stats["cost"]["pixels_read"] > stats["cost"]["pixels"]
    assert _arrays(tmp_path / "ray" / "big.zarr") == _arrays(tmp_path / "local" / "big.zarr")
    assert _arrays(tmp_path / "ray" / "big.probs.zarr") == _arrays(tmp_path / "local" / "big.probs.zarr")
    assert not [
        p.name for p in (tmp_path / "ray").iterdir() if p.name.startswith(".big")
    ]  # nothing left over


def test_a_tiff_stack_spreads_its_planes_over_workers_to_the_local_bytes(
    ray_cluster: None, tiny_onnx_dynamic: Path, tmp_path: Path
) -> None:
    """An ISBI-style multi-page TIFF (planes read whole): regions of planes, one multi-page
    TIFF of masks, byte-identical to the local run's."""
    data = _volume(tmp_path / "scratch.zarr", 6, 128, 160)
    tifffile.imwrite(tmp_path / "stack.tif", data)
    local = predict_folder(predict_config(tiny_onnx_dynamic, [tmp_path / "stack.tif"], tmp_path / "local"))
    summary = predict_folder(
        predict_config(tiny_onnx_dynamic, [tmp_path / "stack.tif"], tmp_path / "ray", ray=True, workers=2)
    )
    assert summary["counts"]["written"] == local["counts"]["written"] == 1, summary
    assert summary["ray"]["regions"]["total"] == 6  # 6 planes over 2 workers: a plane a region
    assert (tmp_path / "ray" / "stack.tif").read_bytes() == (tmp_path / "local" / "stack.tif").read_bytes()


def test_a_poisoned_region_fails_alone_with_its_bounds_and_a_rerun_finishes_it(
    ray_cluster: None, tiny_onnx_dynamic: Path, tmp_path: Path
) -> None:
    _volume(tmp_path / "vol.zarr", 6, 128, 128)
    predict_folder(predict_config(tiny_onnx_dynamic, [tmp_path / "vol.zarr"], tmp_path / "local"))
    chunk = tmp_path / "vol.zarr" / "3.1.0"  # plane 3, a chunk in its second row of chunks
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a blosc chunk")
    config = predict_config(tiny_onnx_dynamic, [tmp_path / "vol.zarr"], tmp_path / "ray", ray=True, workers=2)
    summary = predict_folder(config)
    assert summary["counts"]["failed"] == 1 and summary["ray"]["regions"]["failed"] == 1, summary
    assert summary["ray"]["regions"]["run"] == 6  # the other five regions ran and stayed
    (line,) = [json.loads(x) for x in (tmp_path / "ray" / "failures.jsonl").read_text().splitlines()]
    assert line["path"] == str(tmp_path / "vol.zarr") and line["stage"] == "read"
    assert line["reason"].startswith("plane 3 rows 0..128 columns 0..128: "), line
    (region,) = line["regions"]
    assert region["planes"] == [3, 4] and region["rows"] == [0, 128] and region["columns"] == [0, 128]
    assert not (tmp_path / "ray" / "vol.zarr").exists()  # no half output in place

    chunk.write_bytes(good)
    again = predict_folder(config)
    assert again["counts"]["written"] == 1, again
    stats = again["ray"]["regions"]
    assert (stats["done_before"], stats["run"]) == (5, 1), stats  # only the failed region again
    assert _arrays(tmp_path / "ray" / "vol.zarr") == _arrays(tmp_path / "local" / "vol.zarr")


# -- a real multi-node cluster on this machine --------------------------------------------------------------


def _journal_lines(out: Path, name: str) -> int:
    try:
        return len((out / f".{name}.fcnx-done.jsonl").read_text().splitlines()) - 1
    except OSError:
        return 0


def _actor_pids(node: Any) -> list[int]:
    """The RegionWorker actor processes of one Ray node (children of its raylet)."""
    raylet = node.all_processes["raylet"][0].process.pid
    found = []
    for child in psutil.Process(raylet).children(recursive=True):
        try:
            if "RegionWorker" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _driver(model: Path, source: Path, out: Path, address: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "fcnx.runtime.cli", "predict", str(model), str(source), "-o", str(out),
        "--ray", "--address", address, "--workers", "2", "--cpus-per-worker", "1", "--no-progress",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_three_node_cluster_survives_a_killed_worker_node_and_a_killed_driver(
    tiny_onnx_dynamic: Path, tmp_path: Path
) -> None:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    _volume(tmp_path / "vol.zarr", 24, 384, 384, chunk=128)
    local = predict_folder(predict_config(tiny_onnx_dynamic, [tmp_path / "vol.zarr"], tmp_path / "local"))
    assert local["counts"]["written"] == 1
    expected = _arrays(tmp_path / "local" / "vol.zarr")

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()

        # 1. SIGKILL a worker node that runs an actor, mid-run: its regions run again elsewhere
        out = tmp_path / "node-kill"
        driver = _driver(tiny_onnx_dynamic, tmp_path / "vol.zarr", out, cluster.address)
        _wait_for(lambda: _journal_lines(out, "vol.zarr") >= 1 or driver.poll() is not None, 180, "a region")
        victim = next((n for n in workers if _actor_pids(n)), None)
        assert victim is not None and driver.poll() is None, "no worker node runs an actor mid-run"
        killed = _actor_pids(victim)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILLs the node's raylet and the rest
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output.decode()
        assert _arrays(out / "vol.zarr") == expected
        summary = json.loads((out / "summary.json").read_text())
        assert summary["ray"]["regions"]["failed"] == 0 and summary["ray"]["regions"]["run"] >= 8, summary

        # 2. SIGKILL the driver mid-run: the rerun computes only the regions not journaled
        cluster.add_node(num_cpus=1)  # the cluster has 3 CPUs again
        cluster.wait_for_nodes()
        out = tmp_path / "driver-kill"
        driver = _driver(tiny_onnx_dynamic, tmp_path / "vol.zarr", out, cluster.address)
        _wait_for(lambda: _journal_lines(out, "vol.zarr") >= 6 or driver.poll() is not None, 180, "2 regions")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        journaled = _journal_lines(out, "vol.zarr")  # bands: 3 planes of 1 band a region
        rerun = _driver(tiny_onnx_dynamic, tmp_path / "vol.zarr", out, cluster.address)
        output, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, output.decode()
        stats = json.loads((out / "summary.json").read_text())["ray"]["regions"]
        assert stats["done_before"] >= 2 and stats["done_before"] + stats["run"] == stats["total"], stats
        assert stats["done_before"] * 3 == journaled  # what the journal held (3 bands a region), no more
        assert _arrays(out / "vol.zarr") == expected
    finally:
        cluster.shutdown()
