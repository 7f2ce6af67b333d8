"""One candidate's artifact, exported through its parity gate (or found in the cache).

Candidates share artifacts: ort-cpu and ort-cuda FP32 run the same FP32 ONNX, ort-trt
INT8 the same Q/DQ ONNX as ort-cpu INT8, and a TensorRT engine is built from the ONNX of
its precision (whose parity stands for it: TensorRT 10/11 run the precision the ONNX
decides). Each artifact is exported once, by ``fcnx export onnx|openvino``'s own
function, judged on the judging images only (INT8 calibrated on the calibration images
only), at the model card's input size with a dynamic batch. A gate over budget is a
rejected candidate with its parity row, not an error.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import DeployCache
from .candidates import ARTIFACTS, Candidate


@dataclass
class Built:
    artifact: str  # "onnx-fp32", "openvino-int8", "engine-fp16"
    status: str  # "passed" | "rejected" (over its parity gate) | "failed" (could not be exported)
    path: Path | None = None  # the artifact file (in the cache)
    parity: dict[str, Any] = field(default_factory=dict)  # the ParityRow, as a dict
    reason: str = ""
    seconds: float = 0.0
    cached: bool = False


def artifact_of(candidate: Candidate) -> str:
    """The artifact a candidate runs: its export format and precision."""
    return f"{candidate.kind}-{candidate.precision}"


def export_options(artifact: str, calib_count: int) -> dict[str, Any]:
    """The export options an artifact is made with (part of its cache key)."""
    kind, precision = artifact.split("-")
    options: dict[str, Any] = {"kind": kind, "precision": precision, "batch": "dynamic", "size": "card"}
    if precision == "int8":
        options["calib_count"] = calib_count
    return options


def build(
    artifact: str,
    keras: Path,
    calib: Path,
    judge: Path,
    calib_count: int,
    cache: DeployCache,
    built: dict[str, Built],
) -> Built:
    """``artifact`` exported (once per deploy: ``built`` holds what this run made already)."""
    if artifact in built:
        return built[artifact]
    options = export_options(artifact, calib_count)
    folder = cache.export_dir(artifact, options)
    recorded = cache.export_result(folder)
    if recorded is not None:
        path = folder / recorded["file"] if recorded.get("file") else None
        if path is None or path.is_file() or recorded["status"] != "passed":
            result = Built(artifact, recorded["status"], path, recorded.get("parity", {}), recorded.get("reason", ""),
                           float(recorded.get("seconds", 0.0)), cached=True)  # fmt: skip
            built[artifact] = result
            return result
    shutil.rmtree(folder, ignore_errors=True)  # what a killed export left
    folder.mkdir(parents=True)
    started = time.perf_counter()
    result = _export(artifact, keras, calib, judge, calib_count, folder, built)
    result.seconds = round(time.perf_counter() - started, 2)
    cache.finish_export(folder, {
        "status": result.status, "file": result.path.name if result.path else "", "parity": result.parity,
        "reason": result.reason, "seconds": result.seconds, "options": options,
    })  # fmt: skip
    built[artifact] = result
    return result


def _export(
    artifact: str,
    keras: Path,
    calib: Path,
    judge: Path,
    calib_count: int,
    folder: Path,
    built: dict[str, Built],
) -> Built:
    from fcnx.export.onnx_export import ExportError, OnnxExportConfig, ParityError, export_onnx

    kind, precision = artifact.split("-")
    out = folder / f"model{ARTIFACTS[kind]}"
    common: dict[str, Any] = {"model": str(keras), "out": str(out), "data": str(judge), "parity_images": 0}
    if precision == "int8":
        common.update(calib=str(calib), calib_count=calib_count)
    try:
        if kind == "onnx":
            result = export_onnx(OnnxExportConfig(precision=precision, **common))
        elif kind == "openvino":
            from fcnx.export.openvino_export import OpenvinoExportConfig, export_openvino

            result = export_openvino(OpenvinoExportConfig(precision=precision, **common))
        else:
            return _engine(artifact, precision, out, built)
    except ParityError as exc:
        row = exc.rows[0].to_dict() if exc.rows else {}
        return Built(artifact, "rejected", None, row, "; ".join(row.get("failures", [])) or str(exc))
    except (ExportError, ValueError, RuntimeError, OSError) as exc:
        return Built(artifact, "failed", None, {}, " ".join(str(exc).split()))
    return Built(artifact, "passed", out, result["parity"][0].to_dict())


def _engine(
    artifact: str,
    precision: str,
    out: Path,
    built: dict[str, Built],
) -> Built:
    """A TensorRT engine from the ONNX of its precision (whose parity gate it shares)."""
    from fcnx.export.engine import EngineBuildConfig, build_engine

    onnx = built.get(f"onnx-{precision}")
    if onnx is None or onnx.status != "passed" or onnx.path is None:
        reason = onnx.reason if onnx is not None else f"onnx-{precision} was not exported"
        return Built(artifact, onnx.status if onnx else "failed", None, onnx.parity if onnx else {}, reason)
    result = build_engine(EngineBuildConfig(onnx=str(onnx.path), out=str(out)))
    return Built(artifact, "passed", out, {**onnx.parity, "artifact": str(out)},
                 f"judged through its ONNX; built on {result['gpu']}")  # fmt: skip
