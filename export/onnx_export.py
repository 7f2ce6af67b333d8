"""``fcnx export onnx``: a Keras model -> an ONNX file that computes the same thing.

tf2onnx converts the Keras graph (uint8 NHWC ``image`` in, ``probs`` out); fcnx adds
the in-graph ``mask`` output, optionally converts to FP16, embeds the model card,
runs onnx's full checker, loads the result in onnxruntime and checks parity against
the Keras model. Only a file that passes all of that is written (atomically).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnx.runtime.atomic import atomic_path, remove_stale_temps
from fcnx.runtime.card import ModelCard, library_versions, sha256_file
from fcnx.runtime.flags import opt

from .parity import ParityRow

MIN_OPSET = 13  # Squeeze with an axes input and Softmax over the last axis
MAX_OPSET = 18  # the newest opset tf2onnx 1.17 emits


class ExportError(ValueError):
    """An export that cannot be done; the message names the file and the problem."""


class ParityError(ExportError):
    """The exported model does not compute what Keras computes (over budget)."""

    def __init__(self, message: str, rows: list[ParityRow]) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass(frozen=True)
class ExportOptions:
    """What every parity-gated export takes (``fcnx export onnx``, ``fcnx export openvino``)."""

    model: str = opt("", "a .keras file or a run folder", cli=False)
    out: str = opt("", "the file to write", cli=False)
    batch: str = opt("dynamic", "batch axis: 'dynamic' or a fixed size N")
    size: str = opt("card", "spatial size: 'card' (the model card's), 'dynamic', or HxW like 512x512")
    output: str = opt("both", "graph outputs", choices=("both", "probs", "mask"))
    force: bool = opt(False, "overwrite an existing output file")
    data: str | None = opt(
        None, "folder of real images (image/ and optional label/) for the parity check", metavar="DIR"
    )
    parity_images: int | None = opt(
        None,
        "seeded random images in the parity check (default: 4 without --data; none with it, so that reduced "
        "precisions are judged on real images, not on noise they were never calibrated for)",
    )
    calib: str | None = opt(
        None, "int8: folder of calibration images (or a dataset with image/)", metavar="DIR"
    )
    calib_count: int = opt(64, "int8: calibration images used, at most")

    @property
    def random_images(self) -> int:
        """The seeded random images parity runs: as asked, else 4 without --data, none with it."""
        return self.parity_images if self.parity_images is not None else random_images_default(self.data)


def random_images_default(data: str | Path | None) -> int:
    """Random images judge numerics where there is no real data; with real images they are
    left out: an INT8 or BF16 model is calibrated for, and judged on, what it will see."""
    return 0 if data else 4


@dataclass(frozen=True)
class OnnxExportConfig(ExportOptions):
    out: str = opt("", "the .onnx file to write", cli=False)
    opset: int = opt(17, f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})")
    precision: str = opt(
        "fp32",
        "fp32; fp16 (FP16 compute, FP32 I/O kept); int8 (calibrated Q/DQ, needs --calib)",
        choices=("fp32", "fp16", "int8"),
    )
    method: str = opt(
        "minmax", "int8: activation range calibration", choices=("minmax", "entropy", "percentile")
    )
    int8_format: str = opt(
        "s8s8", "int8: s8s8 (symmetric, TensorRT-ready), u8s8 or u8u8 (onnxruntime CPU)",
        choices=("s8s8", "u8s8", "u8u8"),
    )  # fmt: skip
    reduce_range: bool = opt(False, "int8: 7-bit weights (onnxruntime's advice for x86 CPUs without VNNI)")
    exclude_nodes: tuple[str, ...] = opt((), "int8: ONNX node names to keep in float")
    keep_fp32: str = opt(
        "decoder",
        "int8: kept in float, comma-separated: decoder (score convs, transposed convs, skip adds: ~0.1 %% of "
        "the FLOPs, all of the boundary detail), first, last (the end convs), or none",
    )

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ExportError(
                f"opset {self.opset} is not supported: this graph needs opset {MIN_OPSET} or newer "
                f"(Squeeze with an axes input, Softmax over the last axis) and tf2onnx 1.17 emits up to {MAX_OPSET}"
            )
        if self.batch != "dynamic" and not (self.batch.isdigit() and int(self.batch) >= 1):
            raise ExportError(f"batch must be 'dynamic' or a positive integer, got {self.batch!r}")
        parse_size(self.size)
        if self.random_images < 0 or (self.random_images == 0 and not self.data):
            raise ExportError("the parity check needs images: --parity-images N (N >= 1) and/or --data DIR")
        if self.precision == "int8" and not self.calib:
            raise ExportError(
                "--precision int8 needs --calib DIR: real images to calibrate activation ranges"
            )
        if self.precision != "int8" and self.calib:
            raise ExportError("--calib is for --precision int8")

    def int8_options(self) -> Any:
        from .quantize import Int8Options

        return Int8Options(
            calib=str(self.calib),
            count=self.calib_count,
            method=self.method,
            format=self.int8_format,
            reduce_range=self.reduce_range,
            exclude_nodes=tuple(self.exclude_nodes),
            keep_fp32=tuple(p.strip() for p in self.keep_fp32.split(",") if p.strip() not in ("", "none")),
        )


def parse_size(size: str) -> tuple[int, int] | str:
    if size in ("card", "dynamic"):
        return size
    parts = size.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ExportError(f"size must be 'card', 'dynamic' or HxW like 512x512, got {size!r}")


def check_output_path(out: Path, force: bool) -> None:
    """Fail before any work when OUT exists (without --force) or its folder cannot be written;
    then remove the temp files a killed export of OUT left (``.OUT.*``)."""
    if out.exists() and not force:
        raise ExportError(f"{out}: already exists; pass --force to overwrite it")
    if out.exists() and out.is_dir():
        raise ExportError(f"{out}: is a folder, not a file path")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(f"{probe}: is a file, not a folder")
    if not _writable(probe):
        raise ExportError(f"{probe}: output folder is not writable")
    remove_stale_temps(out)


def _writable(folder: Path) -> bool:
    """A real write probe: permission bits say nothing for root or read-only mounts."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def convert(model: Any, card: ModelCard, config: OnnxExportConfig) -> tuple[Any, dict[str, Any]]:
    """tf2onnx conversion of the Keras model with fcnx's edits; returns the ModelProto and
    anything the card's ``export`` record needs to add (INT8: the calibration)."""
    import tensorflow as tf
    import tf2onnx

    from .onnx_graph import add_mask_output, convert_to_fp16, select_outputs, softmax_on_last_axis

    size = parse_size(config.size)
    if size == "card":
        height, width = card.input_height, card.input_width
    elif size == "dynamic":
        height = width = None
    else:
        assert isinstance(size, tuple)
        height, width = size
    for side in (height, width):
        if side is not None and side % card.input_multiple:
            raise ExportError(f"size {height}x{width}: sides must be multiples of {card.input_multiple}")
    batch = None if config.batch == "dynamic" else int(config.batch)
    spec = (tf.TensorSpec((batch, height, width, card.input_channels), tf.uint8, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=config.opset)
    old = proto.graph.output[0].name
    if old != "probs":
        # tf2onnx names the output after the Keras output layer: fcnx models call it "probs",
        # a bare .keras file from elsewhere may not. Rename the tensor where it is produced and used.
        proto.graph.output[0].name = "probs"
        for node in proto.graph.node:
            node.output[:] = ["probs" if o == old else o for o in node.output]
            node.input[:] = ["probs" if i == old else i for i in node.input]
    softmax_on_last_axis(proto)
    record: dict[str, Any] = {}
    if config.precision == "fp16":
        proto = convert_to_fp16(proto)
    elif config.precision == "int8":
        from .quantize import quantize_int8

        proto, record = quantize_int8(proto, card, config.int8_options())
    add_mask_output(proto, card.output_kind)
    select_outputs(proto, config.output)
    proto.producer_name = "fcnx"
    return proto, record


def flops_entries(proto: Any, card: ModelCard, config: OnnxExportConfig) -> dict[str, Any]:
    """The card's ``gflops_per_image`` and ``gflops_size`` [H, W]: at the exported size, or
    for ``--size dynamic`` at the card's own size; nothing when no size is known."""
    from .flops import FlopCountError, count_flops

    size = parse_size(config.size)
    height, width = size if isinstance(size, tuple) else (card.input_height, card.input_width)
    if height is None or width is None:
        return {}
    batch = 1 if config.batch == "dynamic" else int(config.batch)
    try:
        count = count_flops(proto, {"image": [batch, height, width, card.input_channels]})
    except FlopCountError:
        return {}  # an unusual graph: the card simply has no FLOP count
    return {"gflops_per_image": round(count.gflops_per_image, 3), "gflops_size": [height, width]}


def export_onnx(config: OnnxExportConfig) -> dict[str, Any]:
    """Export, check, prove parity, then write. Returns a summary with the parity rows."""
    import onnx

    from fcnx.train.keras_backend import card_for
    from fcnx.train.model_file import find_card, load_keras_model, resolve_model_path

    from .onnx_graph import set_card
    from .parity_check import check_against_keras

    out = Path(config.out)
    check_output_path(out, config.force)
    source = resolve_model_path(config.model)
    model = load_keras_model(source)
    card = card_for(model, find_card(source))

    started = time.perf_counter()
    proto, record = convert(model, card, config)
    card = card.replace(
        precision=config.precision,
        export={
            "format": "onnx",
            "opset": config.opset,
            "batch": config.batch,
            "outputs": [o.name for o in proto.graph.output],
            "keras_sha256": sha256_file(source),
            "keras_file": source.name,
            **flops_entries(proto, card, config),
            **record,
        },
        versions={
            **card.versions,
            **library_versions("fcnx", "tf2onnx", "onnx", "onnxconverter-common", "onnxruntime"),
        },
    )
    set_card(proto, card)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"{out}: the converted graph fails onnx's checker: {exc}") from None
    convert_seconds = time.perf_counter() - started

    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save_model(proto, str(tmp))
        rows = check_against_keras(
            model, [tmp], card, data=config.data, random_images=config.random_images, display_names=[str(out)]
        )
        over = [r for r in rows if not r.passed]
        if over:
            raise ParityError(f"{out}: not written, parity over budget: {'; '.join(over[0].failures)}", rows)
    return {
        "path": str(out),
        "precision": config.precision,
        "outputs": card.export["outputs"],
        "convert_seconds": round(convert_seconds, 2),
        "bytes": out.stat().st_size,
        "parity": rows,
    }
