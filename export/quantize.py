"""INT8: one calibrated Q/DQ ONNX that onnxruntime runs on CPUs and TensorRT builds as an
explicitly quantized network (TensorRT 11 takes INT8 only this way).

onnxruntime.quantization's ``quantize_static`` does the work: QDQ format, per-channel
weights, activation ranges calibrated on real images. The calibration images are read
and prepared by the runtime's own code (``read_image`` and ``Segmenter.prepare`` on
the FP32 graph), so calibration sees exactly what inference will see.

Formats (``--int8-format``):

- ``s8s8``: symmetric int8 activations and weights, zero points 0: what TensorRT
  requires; onnxruntime's CPU runs it too. The default.
- ``u8s8``: uint8 activations, int8 weights: onnxruntime's documented fast path on
  x86 (with ``--reduce-range`` for CPUs without VNNI). Not for TensorRT.
- ``u8u8``: uint8 both. Not for TensorRT.

``--method entropy``: ``quantize_static`` builds its entropy calibrator with as many
histogram bins as quantized bins (128 and 128), which leaves the KL-divergence search one
candidate threshold, the full range: the result is minmax's, byte for byte (measured).
So fcnx runs that calibrator itself with a 2048-bin histogram searched for a 128-bin
half range (TensorRT's entropy calibration setting) and hands its ranges to
``quantize_static`` as a calibration cache.

Only convolutions, transposed convolutions and the skip additions are quantized, and by
default not the decoder's (``--keep-fp32 decoder``): its score convs, transposed convs
and skip additions are ~0.1 % of the FLOPs but carry every class boundary at full
resolution; in float they cost no measurable speed and halve the flipped pixels (on
the membrane FCN-2s, 99.44 % mask agreement instead of 98.97 %). The softmax and the
mask's argmax always stay in float (8-bit probabilities would tie at boundaries).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnx.runtime.card import ModelCard
from fcnx.runtime.images import ImageError, dataset_images, read_image

INT8_FORMATS = ("s8s8", "u8s8", "u8u8")
METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Add"]
KEEP_CHOICES = ("first", "last", "decoder")
ENTROPY_BINS = {
    "num_bins": 2048,
    "num_quantized_bins": 128,
}  # histogram bins, bins of the searched half range


class CalibrationError(ValueError):
    """No usable calibration images, or a bad calibration option."""


@dataclass(frozen=True)
class Int8Options:
    calib: str  # folder of images (or a dataset folder with image/)
    count: int = 64
    method: str = "minmax"
    format: str = "s8s8"
    reduce_range: bool = False
    exclude_nodes: tuple[str, ...] = ()
    keep_fp32: tuple[str, ...] = ("decoder",)  # "first", "last", "decoder"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(
                f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.format not in INT8_FORMATS:
            raise CalibrationError(
                f"int8 format must be one of {', '.join(INT8_FORMATS)}, got {self.format!r}"
            )
        if self.count < 1:
            raise CalibrationError(f"--calib-count must be at least 1, got {self.count}")
        unknown = set(self.keep_fp32) - set(KEEP_CHOICES)
        if unknown:
            raise CalibrationError(
                f"--keep-fp32 takes {', '.join(KEEP_CHOICES)} (comma-separated), got {', '.join(sorted(unknown))}"
            )


def calibration_files(folder: str | Path) -> list[Path]:
    """Image files in ``folder/image`` (a dataset) or ``folder``, sorted."""
    try:
        return dataset_images(folder, "calibration images")
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None


def calibration_batches(fp32_path: Path, options: Int8Options) -> list[np.ndarray]:
    """Up to ``count`` images as (1, H, W, C) uint8 batches, prepared by the runtime's
    Segmenter for the FP32 graph; unreadable files are skipped with a warning."""
    from fcnx.runtime.backends.ort import OrtBackend
    from fcnx.runtime.predict.segmenter import Segmenter

    backend = OrtBackend(fp32_path, "ort-cpu")
    segmenter = Segmenter(backend, batch_size=1)
    batches: list[np.ndarray] = []
    skipped: list[str] = []
    for path in calibration_files(options.calib):
        if len(batches) == options.count:
            break
        try:
            image = read_image(path, backend.card.input_channels, intensity=backend.card.intensity)
        except ImageError as exc:
            skipped.append(str(exc))
            continue
        batches.append(segmenter.prepare(image, str(path)).image[None])
    backend.close()
    for message in skipped:
        print(f"warning: calibration image skipped: {message}", file=sys.stderr)
    if not batches:
        raise CalibrationError(f"{options.calib}: none of the calibration images could be read")
    return batches


def decoder_nodes(proto: Any, num_classes: int) -> list[str]:
    """The FCN decoder: score convs (as many output channels as classes), the transposed
    convs and the additions that fuse their outputs. A few per mille of the FLOPs, but
    every output pixel's class boundary passes through them at full resolution."""
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    produced_by = {o: n for n in proto.graph.node for o in n.output}

    def is_decoder(node: Any) -> bool:
        weight = shapes.get(node.input[1], []) if len(node.input) > 1 else []
        if node.op_type == "ConvTranspose" or (node.op_type == "Conv" and weight[:1] == [num_classes]):
            return True
        upsampled = [produced_by.get(i) for i in node.input]
        return node.op_type == "Add" and any(
            p is not None and p.op_type == "ConvTranspose" for p in upsampled
        )

    return [node.name for node in proto.graph.node if is_decoder(node)]


def _excluded(proto: Any, options: Int8Options, num_classes: int) -> list[str]:
    """Node names kept in float: the user's, plus the first conv, the last (transposed)
    conv and/or the decoder for ``--keep-fp32``."""
    names = list(options.exclude_nodes)
    convs = [n.name for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    known = {n.name for n in proto.graph.node}
    missing = [n for n in names if n not in known]
    if missing:
        raise CalibrationError(f"--exclude-nodes: no nodes named {', '.join(missing)} in the graph")
    if "first" in options.keep_fp32 and convs:
        names.append(convs[0])
    if "last" in options.keep_fp32 and convs:
        names.append(convs[-1])
    if "decoder" in options.keep_fp32:
        names += decoder_nodes(proto, num_classes)
    return list(dict.fromkeys(names))


def entropy_ranges(model_path: Path, reader: Any, folder: Path) -> Path:
    """Entropy-calibrated activation ranges of ``model_path`` over ``reader``'s batches, saved
    as the calibration cache ``quantize_static`` reads instead of calibrating itself."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise CalibrationError(
            "--method entropy needs an onnxruntime whose quantize_static takes calibration_cache_path "
            "(1.32 or newer); its own entropy calibrator gives minmax's ranges"
        )
    calibrator = create_calibrator(
        model_path,
        QUANTIZED_OPS,
        augmented_model_path=str(folder / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options=dict(ENTROPY_BINS),
    )
    calibrator.collect_data(reader)
    cache = folder / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def quantize_int8(proto: Any, card: ModelCard, options: Int8Options) -> tuple[Any, dict[str, Any]]:
    """The FP32 graph (card attached, probs output) -> the Q/DQ INT8 graph, and what
    to record in the card about its calibration."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_graph import set_card

    activation, weight = {
        "s8s8": (QuantType.QInt8, QuantType.QInt8),
        "u8s8": (QuantType.QUInt8, QuantType.QInt8),
        "u8u8": (QuantType.QUInt8, QuantType.QUInt8),
    }[options.format]
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[options.method]
    excluded = _excluded(proto, options, 1 if card.output_kind == "sigmoid" else card.num_classes)
    with tempfile.TemporaryDirectory(prefix="fcnx-int8-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        with_card = onnx.ModelProto()
        with_card.CopyFrom(proto)
        set_card(with_card, card)
        onnx.save_model(with_card, str(fp32_path))
        batches = calibration_batches(fp32_path, options)
        input_name = proto.graph.input[0].name
        # onnxruntime's documented first step: shape inference and graph cleanup, so every
        # tensor the quantizer sees has a known shape and type (symbolic inference is for
        # transformers' dynamic shapes, and needs sympy)
        prepared_path = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it: Iterator[np.ndarray] = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self._it, None)
                return None if batch is None else {input_name: batch}

        out_path = Path(tmp) / "int8.onnx"
        ranges: dict[str, Any] = {}
        if options.method == "entropy":
            ranges["calibration_cache_path"] = entropy_ranges(prepared_path, Reader(), Path(tmp))
        quantize_static(
            str(prepared_path),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=options.reduce_range,
            activation_type=activation,
            weight_type=weight,
            nodes_to_exclude=excluded,
            calibrate_method=method,
            extra_options={"ActivationSymmetric": options.format == "s8s8", "WeightSymmetric": True},
            **ranges,
        )
        quantized = onnx.load_model(str(out_path))
    record = {
        "calibration": {
            "folder": str(options.calib),
            "images": len(batches),
            "method": options.method,
            "format": options.format,
            "reduce_range": options.reduce_range,
            "per_channel": True,
            "float_nodes": excluded,
            "tensorrt_compatible": options.format == "s8s8",
        }
    }
    del quantized.metadata_props[:]  # the export sets the final card
    return quantized, record
