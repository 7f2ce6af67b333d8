"""``fcnx export openvino``: a Keras model -> an OpenVINO IR pair that computes the same thing.

The model goes through fcnx's own ONNX export (``convert``: uint8 in, in-graph mask,
softmax on the last axis), then ``openvino.convert_model``. FP32 and BF16 IRs hold FP32
weights (``compress_to_fp16=False``: OpenVINO's default FP16 weight compression breaks
the FP32 budget); BF16 is the inference precision OpenVINO is told to run
(``INFERENCE_PRECISION_HINT``, in the IR's ``rt_info`` with the model card). INT8 is
NNCF post-training quantization, calibrated on images read and prepared by the
runtime's own code exactly as for the ONNX INT8 export (``quantize.calibration_batches``),
with the decoder kept in float by default as the ONNX INT8 export keeps it
(``--keep-float``) and chosen layers too (``--ignore``: NNCF's ignored scope).

Every export proves parity against Keras with its precision's budget through the
runtime's ``ov-cpu`` backend and writes nothing when over budget. The pair is written
``.bin`` first (atomically), then the ``.xml`` that records the ``.bin``'s sha256; the
runtime checks the pair at load (runtime/backends/ov_ir.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import remove_stale_temps, replace_durably, temp_folder
from fcnx.runtime.backends.ov_ir import (
    BIN_SHA_KEY,
    CARD_KEY,
    INFERENCE_PRECISION,
    PRECISION_KEY,
    RT_SECTION,
    bin_path,
)
from fcnx.runtime.card import library_versions, sha256_file
from fcnx.runtime.flags import opt

from .onnx_export import ExportError, ExportOptions, OnnxExportConfig, ParityError, check_output_path


@dataclass(frozen=True)
class OpenvinoExportConfig(ExportOptions):
    out: str = opt("", "the .xml file to write (its .bin beside it)", cli=False)
    precision: str = opt(
        "fp32",
        "fp32; bf16 (OpenVINO runs it in bfloat16: AVX512-BF16 or AMX CPUs); int8 (NNCF, needs --calib)",
        choices=tuple(INFERENCE_PRECISION),
    )
    keep_float: str = opt(
        "decoder",
        "int8: kept in float: decoder (transposed convs, score convs and the skip additions after them, as "
        "fcnx export onnx keeps them by default: all of the boundary detail for ~0.1 %% of the FLOPs) or none",
        choices=("decoder", "none"),
    )
    ignore: tuple[str, ...] = opt(
        (), "int8: more OpenVINO node names NNCF keeps in float (its ignored scope)"
    )

    def __post_init__(self) -> None:
        if self.out and Path(self.out).suffix.lower() != ".xml":
            raise ExportError(f"{self.out}: an OpenVINO IR is written as NAME.xml (+ NAME.bin)")
        if self.precision == "int8" and not self.calib:
            raise ExportError(
                "--precision int8 needs --calib DIR: real images to calibrate activation ranges"
            )
        if self.precision != "int8" and (self.calib or self.ignore):
            raise ExportError("--calib and --ignore are for --precision int8")
        self.onnx_config()  # batch, size, parity images: checked as for fcnx export onnx

    def onnx_config(self) -> OnnxExportConfig:
        """The FP32 ONNX export the IR is converted from."""
        return OnnxExportConfig(
            model=self.model,
            batch=self.batch,
            size=self.size,
            output=self.output,
            data=self.data,
            parity_images=self.parity_images,
        )


def import_openvino_export() -> Any:
    """openvino, with the pip line when missing."""
    try:
        import openvino
    except ModuleNotFoundError:
        raise ExportError('openvino is not installed: pip install "fcnx[openvino-export]"') from None
    return openvino


def decoder_ops(model: Any, num_classes: int) -> list[str]:
    """The FCN decoder in an OpenVINO graph: transposed convolutions, the score convolutions
    (as many output channels as classes) and the additions that fuse upsampled scores
    (fed by a transposed convolution directly or through its bias addition)."""

    def kind(node: Any) -> str:
        return str(node.get_type_name())

    def fed_by_deconv(node: Any, hops: int) -> bool:
        producers = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        return any(
            kind(p) == "ConvolutionBackpropData" or (hops and kind(p) == "Add" and fed_by_deconv(p, hops - 1))
            for p in producers
        )

    names = []
    for op in model.get_ordered_ops():
        if kind(op) == "ConvolutionBackpropData":
            names.append(op.get_friendly_name())
        elif kind(op) == "Convolution":
            shape = op.input(1).get_partial_shape()
            if shape.rank.is_static and shape[0].is_static and shape[0].get_length() == num_classes:
                names.append(op.get_friendly_name())
        elif kind(op) == "Add" and fed_by_deconv(op, 1):
            names.append(op.get_friendly_name())
    return names


def quantize_with_nncf(
    model: Any, onnx_path: Path, config: OpenvinoExportConfig, num_classes: int
) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training INT8 of the converted FP32 ``model``; calibration images from the
    runtime's own reading and preparation (as for the ONNX INT8 export)."""
    try:
        import nncf
    except ModuleNotFoundError:
        raise ExportError(
            'INT8 needs nncf, which is not installed: pip install "fcnx[openvino-export]"'
        ) from None

    from .quantize import Int8Options, calibration_batches

    options = Int8Options(calib=str(config.calib), count=config.calib_count)
    batches = calibration_batches(onnx_path, options)
    known = {op.get_friendly_name() for op in model.get_ops()}
    missing = [name for name in config.ignore if name not in known]
    if missing:
        raise ExportError(f"--ignore: no OpenVINO nodes named {', '.join(missing)} in the converted graph")
    floats = list(config.ignore)
    if config.keep_float == "decoder":
        floats += [name for name in decoder_ops(model, num_classes) if name not in floats]
    scope = nncf.IgnoredScope(names=floats) if floats else None
    if not os.environ.get("FCNX_DEBUG"):  # its INFO lines per node kept in float: fcnx's record says it
        nncf.set_log_level(logging.WARNING)
    kwargs: dict[str, Any] = {"subset_size": len(batches)}
    if scope is not None:
        kwargs["ignored_scope"] = scope
    quantized = nncf.quantize(model, nncf.Dataset(batches), **kwargs)
    record = {
        "calibration": {
            "tool": f"nncf {nncf.__version__} quantize (post-training, default preset)",
            "folder": str(config.calib),
            "images": len(batches),
            "float_nodes": floats,
        }
    }
    return quantized, record


def save_ir(ov: Any, model: Any, folder: Path, name: str) -> Path:
    """Save the IR into ``folder`` with the sha256 of its own ``.bin`` in its ``rt_info``:
    saved once to learn the weights' hash, then again with it (the weights are the same
    bytes; checked)."""
    xml = folder / name
    ov.save_model(model, str(xml), compress_to_fp16=False)
    digest = sha256_file(bin_path(xml))
    model.set_rt_info(digest, [RT_SECTION, BIN_SHA_KEY])
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if sha256_file(bin_path(xml)) != digest:
        raise ExportError(f"{xml}: OpenVINO wrote different weights on a second save; cannot seal the pair")
    return xml


def publish_pair(xml_tmp: Path, out: Path) -> None:
    """The ``.bin`` into place first, the ``.xml`` (which names the ``.bin``'s hash) last: a
    kill in between leaves an old ``.xml`` whose hash no longer matches, which the runtime
    refuses in one line, never a pair that loads wrongly."""
    replace_durably(bin_path(xml_tmp), bin_path(out))
    replace_durably(xml_tmp, out)


def export_openvino(config: OpenvinoExportConfig) -> dict[str, Any]:
    """Export, prove parity through ov-cpu, then write the pair. Returns a summary with the parity rows."""
    import onnx

    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model, resolve_model_path

    from .onnx_export import convert, flops_entries
    from .onnx_graph import set_card
    from .parity_check import check_against_keras

    ov = import_openvino_export()
    out = Path(config.out)
    check_output_path(out, config.force)
    check_output_path(bin_path(out), config.force)
    source = resolve_model_path(config.model)
    model = load_keras_model(source)
    card = card_for(model, find_card(source))
    onnx_config = config.onnx_config()

    started = time.perf_counter()
    proto, _ = convert(model, card, onnx_config)
    fp32_card = card.replace(
        precision="fp32", export={"format": "onnx", "outputs": [o.name for o in proto.graph.output]}
    )
    set_card(proto, fp32_card)
    with tempfile.TemporaryDirectory(prefix="fcnx-openvino-") as scratch:
        onnx_path = Path(scratch) / "fp32.onnx"
        onnx.save_model(proto, str(onnx_path))
        ir = ov.convert_model(str(onnx_path))
        record: dict[str, Any] = {}
        if config.precision == "int8":
            classes = 1 if card.output_kind == "sigmoid" else card.num_classes  # score channels
            ir, record = quantize_with_nncf(ir, onnx_path, config, classes)
    card = card.replace(
        precision=config.precision,
        export={
            "format": "openvino",
            "batch": config.batch,
            "outputs": [o.get_any_name() for o in ir.outputs],
            "inference_precision": INFERENCE_PRECISION[config.precision],
            "via": "fcnx export onnx (fp32), openvino.convert_model",
            "keras_sha256": sha256_file(source),
            "keras_file": source.name,
            **flops_entries(proto, card, onnx_config),
            **record,
        },
        versions={
            **card.versions,
            **library_versions("fcnx", "tf2onnx", "onnx", "openvino", "nncf"),
        },
    )
    ir.set_rt_info(card.to_json(), [RT_SECTION, CARD_KEY])
    ir.set_rt_info(INFERENCE_PRECISION[config.precision], [RT_SECTION, PRECISION_KEY])
    convert_seconds = time.perf_counter() - started

    remove_stale_temps(out)  # a killed export's staging folder
    staging = temp_folder(out)  # removed by the next export if this one is killed
    try:
        xml_tmp = save_ir(ov, ir, staging, out.name)
        rows = check_against_keras(
            model,
            [xml_tmp],
            card,
            data=config.data,
            random_images=config.random_images,
            display_names=[str(out)],
        )
        over = [r for r in rows if not r.passed]
        if over:
            raise ParityError(f"{out}: not written, parity over budget: {'; '.join(over[0].failures)}", rows)
        publish_pair(xml_tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "path": str(out),
        "bin": str(bin_path(out)),
        "precision": config.precision,
        "outputs": card.export["outputs"],
        "convert_seconds": round(convert_seconds, 2),
        "bytes": out.stat().st_size + bin_path(out).stat().st_size,
        "parity": rows,
    }
