"""fcnx export {onnx,openvino,engine,triton}: Keras -> ONNX (FP32/FP16/INT8, parity-checked) or OpenVINO IR
(FP32/BF16/INT8, parity-checked) -> TensorRT engine -> Triton Inference Server model repository."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from fcnx.export.engine import EngineBuildConfig
from fcnx.export.onnx_export import OnnxExportConfig
from fcnx.export.openvino_export import OpenvinoExportConfig
from fcnx.export.triton import TritonRepoConfig
from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = sub.add_parser(
        "onnx",
        help="Keras .keras (or run folder) -> ONNX, parity-checked against Keras",
        description="Convert with tf2onnx, add the in-graph uint8 mask, embed the model card, check, "
        "prove parity against Keras, then write. Over budget: nothing is written, exit 1.",
    )
    onnx.add_argument("model", help="a .keras file or a run folder (its best.keras)")
    onnx.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    add_dataclass_flags(onnx, OnnxExportConfig)
    openvino = sub.add_parser(
        "openvino",
        help="Keras .keras (or run folder) -> OpenVINO IR (.xml + .bin), parity-checked against Keras",
        description="fcnx's ONNX export, then openvino.convert_model (INT8: NNCF post-training "
        "quantization), the model card and inference precision in the IR's rt_info, parity proven on the "
        "ov-cpu backend, then the .bin and the .xml written. Over budget: nothing is written, exit 1. "
        'Needs pip install "fcnx[openvino-export]".',
    )
    openvino.add_argument("model", help="a .keras file or a run folder (its best.keras)")
    openvino.add_argument("-o", "--out", required=True, help="the .xml file to write (its .bin beside it)")
    add_dataclass_flags(openvino, OpenvinoExportConfig)
    engine = sub.add_parser(
        "engine",
        help="fcnx ONNX -> TensorRT engine (needs TensorRT and an NVIDIA GPU)",
        description="Build a strongly typed TensorRT engine (precision from the ONNX) with one batch "
        "optimization profile, and write OUT plus its sidecar OUT.json.",
    )
    engine.add_argument("onnx", help="an ONNX file exported by fcnx export onnx")
    engine.add_argument("-o", "--out", required=True, help="the engine file to write")
    add_dataclass_flags(engine, EngineBuildConfig)
    triton = sub.add_parser(
        "triton",
        help="fcnx ONNX or TensorRT engine -> Triton Inference Server model repository",
        description="Write REPO/NAME/config.pbtxt (inputs, outputs and dims from the model, dynamic "
        "batching, instances; ONNX: a TensorRT accelerator), REPO/NAME/1/model.onnx or model.plan and "
        'the model card, atomically. Needs tritonclient (pip install "fcnx[triton]").',
    )
    triton.add_argument("model", help="an ONNX file from fcnx export onnx, or an engine with its sidecar")
    triton.add_argument("-o", "--out", required=True, metavar="REPO", help="the model repository folder")
    triton.add_argument("--name", required=True, help="the model's name in Triton (the folder REPO/NAME)")
    add_dataclass_flags(triton, TritonRepoConfig)
    return parser


def run(args: argparse.Namespace) -> int:
    from fcnx.runtime.cli import CommandError

    if args.format == "onnx":
        from fcnx.export.onnx_export import export_onnx

        config = dataclass_from_args(OnnxExportConfig, args, model=args.model, out=args.out)
        return _run_proven(export_onnx, config, lambda r: f"wrote {r['path']}")

    if args.format == "openvino":
        return _run_openvino(args)

    if args.format == "triton":
        return _run_triton(args)

    from fcnx.export.engine import TensorRTUnavailable, build_engine

    config = dataclass_from_args(EngineBuildConfig, args, onnx=args.onnx, out=args.out)
    try:
        result = build_engine(config)
    except TensorRTUnavailable as exc:
        raise CommandError(str(exc), 2) from None
    print(f"wrote {result['path']} and {result['sidecar']} in {result['seconds']:.0f} s on {result['gpu']}")
    if result["note"]:
        print(f"note: {result['note']}", file=sys.stderr)
    return 0


def _run_openvino(args: argparse.Namespace) -> int:
    from fcnx.export.openvino_export import export_openvino

    config = dataclass_from_args(OpenvinoExportConfig, args, model=args.model, out=args.out)
    return _run_proven(export_openvino, config, lambda r: f"wrote {r['bin']} and {r['path']}")


def _run_proven(export: Callable[[Any], dict[str, Any]], config: Any, wrote: Callable[[dict], str]) -> int:
    """A parity-gated export: its parity table, then what it wrote, or exit 1 over budget."""
    from fcnx.export.onnx_export import ParityError
    from fcnx.export.parity import format_rows
    from fcnx.runtime.cli import CommandError

    try:
        result = export(config)
    except ParityError as exc:
        print(format_rows(exc.rows))
        raise CommandError(str(exc), 1) from None
    print(format_rows(result["parity"]))
    print(
        f"\n{wrote(result)} ({result['bytes'] / 2**20:.1f} MiB, {result['precision']}, "
        f"outputs {', '.join(result['outputs'])}) in {result['convert_seconds']:.1f} s"
    )
    return 0


def _run_triton(args: argparse.Namespace) -> int:
    from fcnx.export.triton import TritonClientUnavailable, write_repository
    from fcnx.runtime.cli import CommandError

    config = dataclass_from_args(TritonRepoConfig, args, model=args.model, repo=args.out, name=args.name)
    try:
        result = write_repository(config)
    except TritonClientUnavailable as exc:
        raise CommandError(str(exc), 2) from None
    print(f"wrote {result['path']}:")
    for path in result["files"]:
        print(f"  {path}")
    for line in result["summary"]:
        print(line)
    if result["note"]:
        print(f"note: {result['note']}")
    if result["tensorrt_version"]:
        print(
            f"model.plan needs TensorRT {result['tensorrt_version']} and a GPU of compute capability "
            f"{result['compute_capability']} (built on {result['gpu_name']}): serve it with a Triton container "
            "whose TensorRT is that version (NVIDIA's support matrix lists it per release)"
        )
    return 0
