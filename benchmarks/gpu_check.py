"""The one-call GPU check: everything fcnx does on an NVIDIA GPU, measured in order of value,
within a time budget, writing its JSON after every row (a cut-off run still leaves
results). Runs on the lent GPU machine after ``benchmarks/gpu_prepare.py`` (here) made
the files it needs and onnxruntime-gpu was staged there (``../shared/gpu/README.md``):

    bash benchmarks/gpu_check.sh .gpu/check            # there: installs the carried wheels, runs this
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry   # anywhere: CPU provider, tiny sizes

Rows, in order: the providers and the GPU; ``ort-cuda`` FP32 and FP16 (I/O binding) at
batch 1/8/32 on the 512x512 membrane FCN-2s, and a CUDA-graph row on a fixed-batch copy
made here with ``onnx``; ORT-CUDA FP16 masks against Keras masks computed on the CPU
(carried as ``reference.npz``) with the FP16 budget; the FP16 matmul ceiling; a Keras
baseline of the same model on PyTorch's GPU (``KERAS_BACKEND=torch``); the native
TensorRT backend's buffers and three streams against real cuda-python device memory;
then FCN-8s when its files were carried and time is left. ``update_readme.py`` puts
``results/gpu_check.md`` into docs/results/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


class Check:
    """The rows so far, written to OUT/gpu_check.json (and .md) after every one."""

    def __init__(self, out: Path, budget: float, dry_run: bool) -> None:
        self.out, self.budget, self.dry_run = out, budget, dry_run
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def row(self, name: str, run: Callable[[], dict[str, Any]], needs: float = 0.0) -> dict[str, Any]:
        """Run one check; its failure is a row with the error, never the end of the run."""
        if self.left() < needs:
            result: dict[str, Any] = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left"}
        else:
            began = time.perf_counter()
            try:
                result = {"status": "ok", **run()}
            except Skip as exc:
                result = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # a failed check is a result
                result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500],
                          "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
            result["seconds"] = round(time.perf_counter() - began, 2)
        entry = {"check": name, **result}
        self.rows.append(entry)
        self.write()
        print(f"{name}: {entry['status']} {entry.get('reason', '')}".rstrip(), flush=True)
        return entry

    def write(self) -> None:
        doc = {"dry_run": self.dry_run, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": self.rows}
        (self.out / "gpu_check.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(doc))


class Skip(Exception):
    """This check cannot run here; the reason is the row."""


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| check | status | result |", "|---|---|---|"]
    for r in doc["rows"]:
        shown = {k: v for k, v in r.items() if k not in ("check", "status", "traceback", "latencies_ms")}
        text = ", ".join(f"{k} {v}" for k, v in shown.items())
        lines.append(f"| {r['check']} | {r['status']} | {text[:300]} |")
    where = (
        "dry run on the CPU (no GPU numbers)"
        if doc["dry_run"]
        else "measured on the GPU named in the first row"
    )
    return "\n".join(lines) + f"\n\n{where}, {doc['date']}.\n"


def environment(provider: str) -> dict[str, Any]:
    import onnxruntime

    from fcnx.runtime.bench.machine import gpu_names

    providers = onnxruntime.get_available_providers()
    if provider not in providers:
        raise RuntimeError(f"{provider} is not available (providers: {providers})")
    return {"gpus": gpu_names(), "providers": providers, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}  # fmt: skip


def bench_rows(
    model: Path, backend: str, batches: str, seconds: float, cuda_graph: bool = False
) -> dict[str, Any]:
    from fcnx.runtime.backends.ort import OrtOptions
    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.bench.config import BenchConfig
    from fcnx.runtime.bench.run import Contender, run_infer_rows

    config = BenchConfig(models=(str(model),), backends=backend, batch=batches, min_seconds=seconds,
                         max_seconds=4 * seconds, warmup=2, ceiling=False)  # fmt: skip
    with load(model, backend, OrtOptions(cuda_graph=cuda_graph)) as loaded:
        h, w = (
            loaded.input_hw
            if loaded.input_hw[0]
            else (loaded.card.input_height or 64, loaded.card.input_width or 64)
        )
        rng = np.random.default_rng(0)
        sizes = [loaded.max_batch] if loaded.fixed_batch else config.batches()
        images = {b: rng.integers(0, 256, (b, h, w, loaded.card.input_channels), np.uint8) for b in sizes}
        rows = run_infer_rows(config, [Contender(str(model), loaded, loaded.card, images)])
        provider = loaded.provider
    return {"provider": provider, "rows": [
        {k: r.to_dict()[k] for k in ("batch", "precision", "images_per_second", "p50_ms", "p99_ms", "status", "reason")}
        for r in rows
    ]}  # fmt: skip


def fixed_batch_copy(model: Path, batch: int, out: Path) -> Path:
    """The same ONNX with the batch axis fixed (CUDA graphs replay fixed shapes)."""
    import onnx

    proto = onnx.load(str(model))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].ClearField("dim_param")
        value.type.tensor_type.shape.dim[0].dim_value = batch
    path = out / f"{model.stem}.batch{batch}.onnx"
    onnx.save(proto, str(path))
    return path


def fp16_parity(model: Path, reference: Path, backend: str) -> dict[str, Any]:
    from fcnx.export.parity import ParityAccumulator
    from fcnx.runtime import Segmenter, load

    if not reference.is_file():
        raise Skip(f"{reference} was not carried (benchmarks/gpu_prepare.py writes it)")
    data = np.load(reference)
    images = list(data["images"])
    if "foreground" in data:  # a binary model's reference carries one channel: background = 1 - it
        keras_probs = np.stack([1 - data["foreground"], data["foreground"]], axis=-1)
    else:
        keras_probs = data["probs"]
    with load(model, backend) as loaded:
        outputs = Segmenter(loaded).segment(images, probs=True)
        precision = loaded.card.precision
    accumulator = ParityAccumulator(model.name, precision, keras_probs.shape[-1])
    for out, ref in zip(outputs, keras_probs):
        accumulator.add(ref[None], out.mask[None], out.probs[None] if out.probs is not None else None)
    row = accumulator.result(tuple(f"class{k}" for k in range(keras_probs.shape[-1])))
    return {"precision": precision, "images": row.images, "mask_agreement": row.mask_agreement,
            "boundary_agreement": row.boundary_agreement, "max_abs_prob": row.max_abs_prob,
            "within_budget": row.passed, "failures": row.failures}  # fmt: skip


def ceiling(dry_run: bool) -> dict[str, Any]:
    from fcnx.runtime.bench.ceiling import cpu_ceiling, cuda_unavailable_reason, gpu_ceiling

    if dry_run:
        return {"cpu_fp32": cpu_ceiling(seconds=0.2, size=256)}
    result = gpu_ceiling(seconds=2.0)
    if result is None:
        raise Skip(cuda_unavailable_reason() or "the CUDA provider cannot run here")
    return {"gpu_fp16": result}


KERAS_TORCH = """
import json, sys, time, numpy as np, torch, keras
model = keras.saving.load_model(sys.argv[1], compile=False)
x = np.random.default_rng(0).integers(0, 256, (8, 512, 512, 1), np.uint8)
for _ in range(3): model.predict_on_batch(x)
n, start = 0, time.perf_counter()
while time.perf_counter() - start < float(sys.argv[2]): model.predict_on_batch(x); n += 1
torch.cuda.synchronize()
print(json.dumps({"images_per_second": 8 * n / (time.perf_counter() - start), "batch": 8, "keras": keras.__version__,
                  "torch": torch.__version__, "device": str(torch.cuda.get_device_name(0))}))
"""


def keras_on_torch(best: Path, seconds: float) -> dict[str, Any]:
    if not best.is_file():
        raise Skip(f"{best} was not carried")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", KERAS_TORCH, str(best), str(seconds)], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cuda_buffers() -> dict[str, Any]:
    """The TensorRT backend's CUDA side without TensorRT: pinned + device buffers, three
    non-blocking streams linked by events, a round trip of real bytes."""
    from fcnx.runtime.backends.trt.buffers import host_array
    from fcnx.runtime.backends.trt.cuda import (
        GpuUnavailable,
        check_cuda,
        gpu_identity,
        import_cudart,
        stream_handle,
    )

    try:
        cudart = import_cudart()
        name, capability = gpu_identity(cudart)
    except GpuUnavailable as exc:
        raise Skip(str(exc)) from None
    n = 8 * 512 * 512
    pinned = [check_cuda(cudart.cudaMallocHost(n), "cudaMallocHost") for _ in range(2)]
    device = check_cuda(cudart.cudaMalloc(n), "cudaMalloc")
    streams = [
        check_cuda(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "stream") for _ in range(2)
    ]
    uploaded = check_cuda(cudart.cudaEventCreate(), "cudaEventCreate")
    done = check_cuda(cudart.cudaEventCreate(), "cudaEventCreate")
    source = host_array(pinned[0], np.dtype(np.uint8), (n,))
    target = host_array(pinned[1], np.dtype(np.uint8), (n,))
    source[:] = np.random.default_rng(1).integers(0, 256, n, np.uint8)
    kinds = cudart.cudaMemcpyKind
    check_cuda(cudart.cudaMemcpyAsync(device, pinned[0], n, kinds.cudaMemcpyHostToDevice, streams[0]), "H2D")
    check_cuda(cudart.cudaEventRecord(uploaded, streams[0]), "cudaEventRecord")
    check_cuda(cudart.cudaStreamWaitEvent(streams[1], uploaded, 0), "cudaStreamWaitEvent")
    check_cuda(cudart.cudaMemcpyAsync(pinned[1], device, n, kinds.cudaMemcpyDeviceToHost, streams[1]), "D2H")
    check_cuda(cudart.cudaEventRecord(done, streams[1]), "cudaEventRecord")
    check_cuda(cudart.cudaEventSynchronize(done), "cudaEventSynchronize")
    same = bool(np.array_equal(source, target))
    handle = stream_handle(streams[1])
    for pointer in pinned:
        check_cuda(cudart.cudaFreeHost(pointer), "cudaFreeHost")
    check_cuda(cudart.cudaFree(device), "cudaFree")
    return {
        "gpu": name,
        "compute_capability": capability,
        "round_trip_identical": same,
        "stream_handle": handle,
    }


def _skip(reason: str) -> Callable[[], dict[str, Any]]:
    def skipped() -> dict[str, Any]:
        raise Skip(reason)

    return skipped


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=Path, default=Path(".gpu/check"), help="what gpu_prepare.py wrote")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where gpu_check.json/.md go")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per bench row")
    parser.add_argument(
        "--dry-run", action="store_true", help="the CPU provider and tiny sizes: proves this runs"
    )
    args = parser.parse_args()
    check = Check(args.out, args.budget, args.dry_run)
    files = args.files
    if args.dry_run:  # the shipped threshold model stands in for the FCN-2s exports
        from fcnx.export.tiny_model import threshold_probs
        from fcnx.runtime.data import FOLDER

        backend, batches, seconds, files = "ort-cpu", "1,2", 0.2, args.out
        fcn2s = {"fp32": FOLDER / "threshold.onnx", "fp16": FOLDER / "threshold.onnx"}
        images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1), np.uint8)
        np.savez(files / "reference.npz", images=images, probs=threshold_probs(images))
    else:
        backend, batches, seconds = "ort-cuda", "1,8,32", args.seconds
        fcn2s = {p: args.files / f"fcn2s.{p}.onnx" for p in ("fp32", "fp16")}
    provider = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}[backend]
    if check.row("environment", lambda: environment(provider))["status"] != "ok":
        return 1
    for precision, model in fcn2s.items():
        check.row(f"fcn2s {precision} {backend}", partial(bench_rows, model, backend, batches, seconds), 20)
    check.row(
        f"fcn2s fp16 {backend} cuda graph, batch 8"
        if not args.dry_run
        else "fixed-batch copy (cuda graphs on a GPU)",
        lambda: bench_rows(
            fixed_batch_copy(fcn2s["fp16"], 8, args.out), backend, "8", seconds, cuda_graph=not args.dry_run
        ),
        20,
    )
    check.row(
        "fcn2s fp16 masks vs Keras", lambda: fp16_parity(fcn2s["fp16"], files / "reference.npz", backend), 20
    )
    check.row("matmul ceiling", lambda: ceiling(args.dry_run), 10)
    if args.dry_run:
        check.row("keras on torch (GPU)", _skip("dry run: no GPU"))
        check.row("trt buffers and streams (cuda-python)", _skip("dry run: no GPU"))
    else:
        check.row("keras on torch (GPU)", lambda: keras_on_torch(args.files / "fcn2s.keras", seconds), 60)
        check.row("trt buffers and streams (cuda-python)", cuda_buffers, 10)
        for precision in ("fp32", "fp16"):
            model = args.files / f"fcn8s.{precision}.onnx"
            if model.is_file():
                check.row(
                    f"fcn8s {precision} {backend}", partial(bench_rows, model, backend, batches, seconds), 30
                )
    failed = [r["check"] for r in check.rows if r["status"] == "failed"]
    print(f"wrote {args.out / 'gpu_check.json'}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
