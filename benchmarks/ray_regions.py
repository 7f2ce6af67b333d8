"""One huge image or volume across a Ray cluster: ``fcnx predict --ray`` by regions.

The membrane FCN-2s as its INT8 OpenVINO IR (the fastest CPU artifact here; ``fcnx
deploy``'s winner), default tiles; inputs are mosaics of the 24 real slices written chunk
by chunk (``runtime/arrays/mosaic.py``; reused from ``benchmarks/volumes.py``'s work folder
when it has them). Every run is ``fcnx predict`` in a subprocess; a sampler reads the peak
RSS of the driver and of each RegionWorker actor process (psutil).

- **throughput**: a 32768² OME-Zarr and a 64 x 4096 x 4096 OME-Zarr volume, local and
  ``--ray`` with 1 and 2 workers on the same 2 cores, one after the other in one run:
  seconds, Mpx/s (whole job, and after the first region's result: Ray's fixed cost
  left out), the object store's peak (sampled by the driver), the labels against the
  local run's (byte for byte, every pyramid level).
- **cluster**: a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``:
  a head and two worker nodes, each its own raylet and worker processes, 1 CPU each) on
  the 16384² mosaic: the node running an actor SIGKILLed at a random moment (the job
  must finish, identical); then the driver SIGKILLed at a random moment and the same
  command run again (the regions it recomputes, counted; identical).
- **scaling**: per-region costs (read, write, model + blend, the driver's own time per
  region) from the 2-worker 32768² run, extrapolated to 8 and 64 nodes and a 10¹² voxel
  volume: where the driver or the filesystem becomes the bottleneck (``to_markdown``).

Writes ``benchmarks/results/ray_regions.{json,md}`` after each row.

    python benchmarks/ray_regions.py                    # ~75 min on 2 cores
    python benchmarks/ray_regions.py --parts cluster    # ~10 min
    python benchmarks/ray_regions.py --render
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from large_images import table  # noqa: E402
from report import suite_parser, write_report  # noqa: E402
from volumes import export_ir, journal_bands, membrane  # noqa: E402

PARTS = ("throughput", "cluster", "scaling")
INPUTS = {  # name -> (file in the work folder, shape)
    "32768² OME-Zarr": ("mosaic-32768.zarr", (1, 32768, 32768)),
    "64x4096² volume": ("volume-64x4096.zarr", (64, 4096, 4096)),
}
QUICK = {"8192² OME-Zarr": ("mosaic-8192.zarr", (1, 8192, 8192))}  # --quick: the plumbing in minutes
CLUSTER_INPUT = ("mosaic-16384.zarr", (1, 16384, 16384))
RUNS = (("local", 0), ("--ray, 1 worker", 1), ("--ray, 2 workers", 2))


class Sampler:
    """Peak RSS of a driver process and of the RegionWorker actors while it runs."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.psutil, self.pid = psutil, pid
        self.driver = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for process in self.psutil.process_iter(["pid", "cmdline", "memory_info"]):
                try:
                    rss = process.info["memory_info"].rss
                    if process.info["pid"] == self.pid:
                        self.driver = max(self.driver, rss)
                    elif "RegionWorker" in " ".join(process.info["cmdline"] or ()):
                        self.worker = max(self.worker, rss)
                except (self.psutil.Error, AttributeError, TypeError):
                    continue

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        self._thread.join()
        return {"driver_rss_gib": self.driver / 2**30, "worker_rss_gib": self.worker / 2**30 or None}


def predict_command(model: Path, source: Path, out: Path, workers: int, *extra: str) -> list[str]:
    command = ["fcnx", "predict", str(model), str(source), "-o", str(out), "--no-progress", *extra]
    return command + (["--ray", "--workers", str(workers)] if workers else [])


def run(command: list[str]) -> dict[str, Any]:
    """A command to its end: seconds, exit code, peak RSS of the driver and of the actors."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(process.pid)
    output, _ = process.communicate()
    return {"seconds": time.perf_counter() - started, "returncode": process.returncode,
            "output": output[-2000:], **sampler.stop()}  # fmt: skip


def same_labels(a: Path, b: Path) -> bool:
    """Every level of two OME-Zarr label images, byte for byte (read 4096 rows at a time)."""
    import zarr

    ga: Any = zarr.open_group(a, mode="r")
    gb: Any = zarr.open_group(b, mode="r")
    if sorted(ga.array_keys()) != sorted(gb.array_keys()):
        return False
    for key in ga.array_keys():
        x, y = ga[key], gb[key]
        if x.shape != y.shape:
            return False
        step = 4096
        for i in range(0, x.shape[-2], step):
            if not np.array_equal(x[..., i : i + step, :], y[..., i : i + step, :]):
                return False
    return True


def inputs_for(work: Path, name: str, shape: tuple[int, int, int], images: list[np.ndarray]) -> Path:
    """The mosaic or volume, reused from benchmarks/volumes.py's work folder, else written."""
    from fcnx.runtime.arrays.mosaic import write_mosaic

    for folder in (work, work.parent / "volumes"):
        if (folder / name).exists():
            return folder / name
    planes, h, w = shape
    return write_mosaic(images, work / name, (h, w), "ome-zarr", planes=planes if planes > 1 else None)


def label_bytes(labels: Path) -> float:
    """Bytes on disk per pixel of an OME-Zarr label image's full-resolution level."""
    import zarr

    files = [p for p in (labels / "0").rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sum(p.stat().st_size for p in files) / int(np.prod(zarr.open_array(labels / "0", mode="r").shape))


def throughput(
    model: Path, work: Path, images: list[np.ndarray], rows: list[dict], save: Any, inputs: dict
) -> None:
    for label, (name, shape) in inputs.items():
        source = inputs_for(work, name, shape, images)
        pixels = int(np.prod(shape))
        local_out = None
        for how, workers in RUNS:
            out = work / f"out-{name.split('.')[0]}-{workers}"
            result = run(predict_command(model, source, out, workers, "--overwrite"))
            summary = json.loads((out / "summary.json").read_text()) if result["returncode"] == 0 else {}
            stats = summary.get("ray", {}).get("regions", {})
            row = {"input": label, "shape": list(shape), "how": how, "workers": workers, **result,
                   "megapixels_per_second": pixels / result["seconds"] / 1e6}  # fmt: skip
            if workers:
                first, first_pixels = (
                    stats.get("seconds_to_first_result"),
                    stats.get("pixels_in_first_result"),
                )
                after = summary["seconds"] - first if first is not None else None
                rate = (pixels - (first_pixels or 0)) / after / 1e6 if after else None
                row.update(regions=stats.get("total"), seconds_to_first_result=first,
                           object_store_peak_bytes=stats.get("object_store_peak_bytes"),
                           nodes=stats.get("nodes"), cost=stats.get("cost"),
                           driver_seconds_per_region=stats.get("driver_seconds_per_region"),
                           after_first_mpx_per_second=rate)  # fmt: skip
            if local_out is None:
                local_out = out
                row["label_bytes_per_pixel"] = label_bytes(out / name)
            else:
                row["identical"] = same_labels(out / name, local_out / name)
                local = next(r for r in rows if r["input"] == label and r["workers"] == 0)
                row["vs_local"] = local["seconds"] / result["seconds"]
                if row.get("after_first_mpx_per_second"):
                    row["after_first_vs_local"] = (
                        row["after_first_mpx_per_second"] / local["megapixels_per_second"]
                    )
            rows.append(row)
            print({k: v for k, v in row.items() if k != "output"}, flush=True)
            save()


def cluster(
    model: Path, work: Path, images: list[np.ndarray], rows: list[dict], save: Any, seed: int, quick: bool
) -> None:
    """The 16384² mosaic on a head + 2 worker nodes: a worker node SIGKILLed, then the driver."""
    import psutil
    from ray.cluster_utils import Cluster

    name, shape = next(iter(QUICK.values())) if quick else CLUSTER_INPUT
    source = inputs_for(work, name, shape, images)
    reference = work / "out-cluster-local"
    local = run(predict_command(model, source, reference, 0, "--overwrite"))
    rng = random.Random(seed)
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = [head.add_node(num_cpus=1) for _ in range(2)]
        head.wait_for_nodes()
        extra = ("--address", head.address, "--cpus-per-worker", "1", "--overwrite")

        def actor_pids(node: Any) -> list[int]:
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            return [c.pid for c in raylet.children(recursive=True) if "RegionWorker" in " ".join(c.cmdline())]

        # a worker node SIGKILLed at a random moment
        out = work / "out-cluster-node-kill"
        at = rng.uniform(0.2, 0.6) * local["seconds"]
        started = time.perf_counter()
        process = subprocess.Popen(predict_command(model, source, out, 2, *extra),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        time.sleep(at)
        victim = next(n for n in nodes if actor_pids(n))
        killed_regions = journal_bands(out, name)
        for pid in actor_pids(victim):
            os.kill(pid, signal.SIGKILL)
        head.remove_node(victim, allow_graceful=False)
        output, _ = process.communicate()
        seconds = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text()) if process.returncode == 0 else {}
        rows.append({"input": f"{shape[1]}² OME-Zarr", "how": "3-node cluster, a worker node SIGKILLed",
                     "killed_at_seconds": at, "bands_durable_at_kill": killed_regions, "seconds": seconds,
                     "local_seconds": local["seconds"], "returncode": process.returncode,
                     "regions": summary.get("ray", {}).get("regions"), "output": output[-1500:],
                     "identical": process.returncode == 0 and same_labels(out / name, reference / name)})  # fmt: skip
        print({k: v for k, v in rows[-1].items() if k != "output"}, flush=True)
        save()

        head.add_node(num_cpus=1)  # 3 CPUs again
        head.wait_for_nodes()
        out = work / "out-cluster-driver-kill"
        at = rng.uniform(0.3, 0.7) * local["seconds"]
        killed = subprocess.Popen(predict_command(model, source, out, 2, *extra),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(at)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        durable = journal_bands(out, name)
        rerun = run(
            predict_command(model, source, out, 2, "--address", head.address, "--cpus-per-worker", "1")
        )
        summary = json.loads((out / "summary.json").read_text()) if rerun["returncode"] == 0 else {}
        stats = summary.get("ray", {}).get("regions", {})
        rows.append({"input": f"{shape[1]}² OME-Zarr", "how": "3-node cluster, the driver SIGKILLed, then rerun",
                     "killed_at_seconds": at, "bands_durable_at_kill": durable, "seconds": rerun["seconds"],
                     "local_seconds": local["seconds"], "returncode": rerun["returncode"],
                     "regions": stats, "output": rerun["output"],
                     "identical": rerun["returncode"] == 0 and same_labels(out / name, reference / name)})  # fmt: skip
        print({k: v for k, v in rows[-1].items() if k != "output"}, flush=True)
        save()
    finally:
        head.shutdown()


# -- the report ---------------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 2) -> Any:
    return None if value is None else round(value, digits) if isinstance(value, float) else value


def scaling(doc: dict) -> list[str]:
    """The scaling model on paper, from the 2-worker 32768² run's measured per-region costs."""
    rows = doc["rows"].get("throughput", [])
    row = next((r for r in rows if r["workers"] == 2 and r.get("cost") and r["shape"][0] == 1), None)
    if row is None:
        return ["(no 2-worker run of a 2D mosaic measured)"]
    local = next(r for r in rows if r["input"] == row["input"] and r["workers"] == 0)
    label_bytes = local["label_bytes_per_pixel"]
    cost, regions = row["cost"], row["regions"]
    per = {k: cost[k] / regions for k in ("seconds", "read_seconds", "write_seconds")}
    mpx_region = cost["pixels"] / regions / 1e6
    worker_rate = cost["pixels"] / cost["seconds"] / 1e6  # Mpx/s of one worker (1 core) while busy
    halo = cost["pixels_read"] / cost["pixels"]
    driver = row["driver_seconds_per_region"]
    lines = [
        f"Measured per region of the {row['input']} run on 2 workers x 1 core ({regions} regions of "
        f"{mpx_region:.0f} Mpx, the INT8 IR):",
        "",
        *table(
            ["cost", "seconds per region", "share of the region's time"],
            [
                ["whole region (read + model + blend + write, overlapped)", _num(per["seconds"]), "100 %"],
                [
                    "reading its window (on the reader thread)",
                    _num(per["read_seconds"]),
                    f"{100 * per['read_seconds'] / per['seconds']:.1f} %",
                ],
                [
                    "writing its chunks, fsynced (on the writer thread)",
                    _num(per["write_seconds"]),
                    f"{100 * per['write_seconds'] / per['seconds']:.1f} %",
                ],
                [
                    "the driver's own time per region (journal, bookkeeping)",
                    _num(driver, 4),
                    f"{100 * driver / per['seconds']:.3f} %",
                ],
            ],
        ),
        f"One worker core segments {worker_rate:.2f} Mpx/s; a region reads {halo:.2f}x its pixels (each row of "
        "tiles is read whole and rows of tiles overlap by the tile overlap; the local run reads the same). "
        "Reading and writing run on their own threads, overlapped with the model and the "
        "blend, which take the rest of the region's time.",
        "",
        f"Extrapolated to 10¹² voxels (assumptions: 32 cores a node at this per-core rate, regions of "
        f"{mpx_region:.0f} Mpx, one byte per input voxel, {label_bytes:.3f} bytes per label voxel written as "
        "measured here):",
        "",
    ]
    volume = 1e12
    out_rows = []
    for nodes, cores in ((8, 32), (64, 32)):
        rate = nodes * cores * worker_rate * 1e6  # voxels / s
        regions_total = volume / (mpx_region * 1e6)
        driver_load = rate / (mpx_region * 1e6) * driver  # driver-seconds per second
        read_gbs = rate * halo / 1e9
        write_gbs = rate * label_bytes / 1e9
        out_rows.append([f"{nodes} nodes x {cores} cores", f"{volume / rate / 3600:.1f} h", f"{regions_total:,.0f}",
                         f"{driver_load * 100:.2f} %", f"{read_gbs:.2f} GB/s", f"{write_gbs:.3f} GB/s"])  # fmt: skip
    lines += table(
        ["cluster", "10¹² voxels in", "regions", "driver busy", "filesystem reads", "filesystem writes"],
        out_rows,
    )
    lines += [
        f"The driver handles a region in {1000 * driver:.1f} ms, so it could keep up with {1 / driver:,.0f} "
        "regions per second: at the rates above it is busy the 'driver busy' share of its time, and it would "
        "become the bottleneck only with regions hundreds of times smaller or clusters hundreds of times "
        "larger. The shared filesystem is the first limit: every worker reads its own windows and writes its own "
        "chunks there, so the aggregate rate grows with the cores (the read and write columns), which a parallel "
        "filesystem or an object store serves and a single NFS server does not. Faster workers (GPUs) raise the "
        "read rate per node in the same proportion.",
        "",
    ]
    return lines


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB). The membrane FCN-2s, "
        "INT8 OpenVINO IR, default tiles; every run a `fcnx predict` subprocess, rows measured one after the "
        "other in one run. `--ray` started its own local cluster (workers share the same 2 cores).",
        "",
    ]
    rows = doc["rows"].get("throughput", [])
    if rows:
        lines += table(
            ["input", "run", "seconds", "Mpx/s", "vs local", "after the 1st result, vs local", "regions",
             "to 1st result (s)", "object store peak", "driver RSS GiB", "worker RSS GiB", "identical"],
            [[r["input"], r["how"], _num(r["seconds"], 1), _num(r["megapixels_per_second"]), _num(r.get("vs_local")),
              _num(r.get("after_first_vs_local")), r.get("regions"), _num(r.get("seconds_to_first_result"), 1),
              None if r.get("object_store_peak_bytes") is None else f"{r['object_store_peak_bytes'] / 2**20:.0f} MiB",
              _num(r["driver_rss_gib"]), _num(r.get("worker_rss_gib")),
              None if "identical" not in r else "yes" if r["identical"] else "NO"] for r in rows],
        )  # fmt: skip
    rows = doc["rows"].get("cluster", [])
    if rows:
        lines += table(
            ["input", "what happened", "killed at (s)", "bands durable at the kill", "regions",
             "skipped (finished before)", "run", "retried by Ray", "seconds (the job, or the rerun)", "local seconds",
             "identical"],
            [[r["input"], r["how"], _num(r["killed_at_seconds"], 1), r["bands_durable_at_kill"],
              *((r.get("regions") or {}).get(k) for k in ("total", "done_before", "run", "retried")),
              _num(r["seconds"], 1), _num(r["local_seconds"], 1), "yes" if r["identical"] else "NO"] for r in rows],
        )  # fmt: skip
    lines += ["### Scaling model", "", *scaling(doc)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = suite_parser(__doc__, "ray_regions")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    parser.add_argument("--seed", type=int, default=0, help="the random kill moments")
    parser.add_argument("--quick", action="store_true", help="an 8192² mosaic everywhere (~6 min)")
    args = parser.parse_args()
    if args.quick:  # the plumbing, not results: kept apart
        args.results = args.work / "quick-results"
    results = args.results / "ray_regions.json"
    if args.render:
        (args.results / "ray_regions.md").write_text(to_markdown(json.loads(results.read_text())))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"throughput": [], "cluster": []}
    if results.is_file():
        rows.update(json.loads(results.read_text())["rows"])
    model = export_ir(args.work.parent / "volumes", args.data, "int8")
    _, images, _ = membrane(args.data)

    def save() -> None:
        write_report(args.results, "ray_regions", rows, to_markdown)

    if "throughput" in args.parts:
        rows["throughput"] = []
        throughput(model, args.work, images, rows["throughput"], save, QUICK if args.quick else INPUTS)
    if "cluster" in args.parts:
        rows["cluster"] = []
        cluster(model, args.work, images, rows["cluster"], save, args.seed, args.quick)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
