"""fcnx info MODEL: what a model is (its card), what goes in and out, and where it can
run on this machine (onnxruntime providers; for an engine, whether this TensorRT and
GPU can load it). fcnx info STACK (a TIFF, a .zarr folder, FILE.h5[:/dataset]): what fcnx
predict will read of it (shape, axes, dtype, chunks, pyramid levels, planes). Reads files
and metadata only; never needs TensorFlow."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "model",
        help="model.onnx, model.engine, a .keras file or a training run folder; or an array input: a "
        "TIFF, a .zarr folder, FILE.h5[:/dataset]",
    )
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--axes", default=None, help="an array input's axes, as fcnx predict --axes")
    parser.add_argument("--level", type=int, default=0, help="an array input's pyramid level (default: 0)")
    return parser


ARRAY_SPEC = re.compile(
    r".+\.(?:tiff?|btf|tf8|h5|hdf5|he5)(?::/.*)?|.+\.(?:zarr|n5)/?", re.IGNORECASE | re.DOTALL
)


def describe_array(spec: str, axes: str | None = None, level: int = 0) -> dict[str, Any]:
    """What fcnx predict reads of an array input, and how (planes whole or by windows)."""
    from fcnx.runtime.arrays.readers import open_array
    from fcnx.runtime.arrays.source import describe
    from fcnx.runtime.predict.volumes import WHOLE_PLANE_PIXELS

    with open_array(spec, axes, level) as source:
        info = source.info
    whole = info.height * info.width <= WHOLE_PLANE_PIXELS
    return {
        "array": spec,
        "format": info.format,
        "axes": info.axes,
        "shape": list(info.shape),
        "dtype": info.dtype,
        "chunks": list(info.chunks) if info.chunks else None,
        "levels": [list(shape) for shape in info.levels],
        "level": info.level,
        "planes": info.planes,
        "plane_axes": info.plane_axes,
        "channels": info.channels,
        "read": "each plane whole" if whole else "each plane by rows of tiles (windows)",
        "summary": describe(info),
    }


def format_array(info: dict[str, Any]) -> str:
    return "\n".join([info["array"], *(f"  {line}" for line in info["summary"]), f"  read: {info['read']}"])


def _card_summary(card: Any) -> dict[str, Any]:
    metrics = card.training.get("val_metrics", {})
    return {
        "architecture": card.architecture,
        "width": card.width,
        "classes": list(card.classes),
        "input": f"{card.input_height or 'any'}x{card.input_width or 'any'}x{card.input_channels} {card.input_dtype}",
        "output_kind": card.output_kind,
        "precision": card.precision,
        "intensity": card.intensity,
        "val_metrics": metrics,
    }


def _onnx_info(path: Path) -> dict[str, Any]:
    from fcnx.runtime.backends.ort import OrtBackend
    from fcnx.runtime.backends.registry import offered_backends

    backend = OrtBackend(path, "ort-cpu")
    session = backend.session

    def describe_tensor(t: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) else "N" for d in t.shape]  # dynamic axes: named by the exporter
        return {"name": t.name, "shape": shape, "type": t.type.removeprefix("tensor(").rstrip(")")}

    tensors = {
        "inputs": [describe_tensor(t) for t in session.get_inputs()],
        "outputs": [describe_tensor(t) for t in session.get_outputs()],
    }
    offered = offered_backends("onnx")
    info = {
        "kind": "onnx",
        "card": backend.card,
        **tensors,
        "runs_here_on": offered,
        "auto_backend": offered[0] if offered else None,
        "note": "auto takes the first of these that starts; fcnx predict reports the one that ran",
    }
    backend.close()
    return info


def _openvino_info(path: Path) -> dict[str, Any]:
    """An IR pair: checked and compiled on ov-cpu (the precision it runs in is what it reports)."""
    from fcnx.runtime.backends.ov import OvBackend

    with OvBackend(path) as backend:
        model = backend._model

        def describe(port: Any) -> dict[str, Any]:
            dims = [d.get_length() if d.is_static else "N" for d in port.get_partial_shape()]
            return {
                "name": port.get_any_name(),
                "shape": dims,
                "type": port.get_element_type().get_type_name(),
            }

        return {
            "kind": "openvino",
            "card": backend.card,
            "inputs": [describe(p) for p in model.inputs],
            "outputs": [describe(p) for p in model.outputs],
            "runs_here_on": ["ov-cpu"],
            "note": f"{backend.provider}; {'; '.join(backend.notes)}",
        }


def _engine_info(path: Path) -> dict[str, Any]:
    from fcnx.runtime.backends.base import BackendError
    from fcnx.runtime.backends.trt.sidecar import EngineMismatch, check_compatible, read_sidecar

    sidecar = read_sidecar(path)
    h, w, c = sidecar.input_shape
    info: dict[str, Any] = {
        "kind": "engine",
        "card": sidecar.card,
        "inputs": [{"name": sidecar.input_name, "shape": [f"{sidecar.batch}", h, w, c], "type": "uint8"}],
        "outputs": [{"name": name} for name in sidecar.outputs],
        "built_with": {
            "tensorrt": sidecar.tensorrt_version,
            "gpu": sidecar.gpu_name,
            "compute_capability": sidecar.compute_capability,
            "batch_profile": str(sidecar.batch),
            "precision": sidecar.precision,
            "onnx": sidecar.onnx_file,
        },
    }
    try:
        import tensorrt

        from fcnx.runtime.backends.trt.cuda import gpu_identity

        gpu, capability = gpu_identity()
        warnings = check_compatible(sidecar, path, tensorrt.__version__, capability, gpu)
        info["loads_here"] = True
        info["compatibility"] = (
            "; ".join(warnings) or f"loads on this {gpu} with TensorRT {tensorrt.__version__}"
        )
    except ModuleNotFoundError:
        info["loads_here"] = False
        info["compatibility"] = (
            'TensorRT is not installed here (pip install "fcnx[tensorrt]" on an NVIDIA GPU box)'
        )
    except (EngineMismatch, BackendError) as exc:
        info["loads_here"] = False
        info["compatibility"] = str(exc)
    return info


def _keras_info(path: Path) -> dict[str, Any]:
    """A .keras file or run folder, opened the safe way (safe_mode: no Lambda layers; a
    garbage file is one line saying so) when Keras is installed; else its card.json only."""
    import importlib.util

    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.card import ModelCard

    if importlib.util.find_spec("keras") is not None:
        with load(path, "keras") as backend:  # a file Keras cannot or must not open: BackendError
            card = backend.card
            h, w = backend.input_hw
        note = "opened with Keras (safe mode); export with fcnx export onnx to deploy"
    else:
        card_path = (path if path.is_dir() else path.parent) / "card.json"
        if not card_path.is_file():
            raise ValueError(
                f'{card_path}: missing, and Keras is not installed to open {path}: pip install "fcnx[train]"'
            )
        card = ModelCard.read(card_path)
        h, w = card.input_height, card.input_width
        note = f'not opened: Keras is not installed (pip install "fcnx[train]"); this is {card_path}'
    c = card.input_channels
    return {
        "kind": "keras",
        "card": card,
        "inputs": [{"name": "image", "shape": ["N", h or "H", w or "W", c], "type": "uint8"}],
        "outputs": [{"name": "probs", "shape": ["N", "H", "W", card.num_classes], "type": "float32"}],
        "runs_here_on": ["keras"],
        "note": note,
    }


def _deploy_info(path: Path) -> dict[str, Any]:
    """A deploy folder: its winning artifact described as itself, then what deploy chose,
    with what settings, on which machine, and whether this machine can run it."""
    from fcnx.runtime.backends.registry import model_kind
    from fcnx.runtime.bench.machine import cpu_flags, gpu_names
    from fcnx.runtime.deployed import machine_mismatches, read_deploy, rerun_command

    record = read_deploy(path)
    winner = record["winner"]
    artifact = path / winner["artifact"]
    info = _READERS[model_kind(artifact)](artifact)
    settings = ", ".join(f"{k} {v}" for k, v in (winner.get("settings") or {}).items() if v is not None)
    machine = record.get("machine") or {}
    problems = machine_mismatches(record, cpu_flags(), gpu_names())
    speed = winner.get("images_per_second")
    margin = (
        f", {winner['margin']:.2f}x the runner-up ({winner['runner_up']})" if winner.get("margin") else ""
    )
    info["kind"] = f"deploy: {winner['artifact']}, {model_kind(artifact)}"
    info["deployed"] = {
        "winner": winner["candidate"],
        "settings": settings,
        "measured_on": machine.get("cpu"),
    }
    info["note"] = (
        f"deploy chose {winner['candidate']} ({settings}"
        + (f", {speed:.2f} images/s" if speed else "")
        + f"{margin}) on {machine.get('cpu', '?')}; "
        + (
            "; ".join(problems) + f"; choose again here: {rerun_command(record, path)}"
            if problems
            else "runs here"
        )
    )
    return info


_READERS = {"onnx": _onnx_info, "openvino": _openvino_info, "engine": _engine_info, "keras": _keras_info,
            "deploy": _deploy_info}  # fmt: skip


def describe_model(model: str | Path) -> dict[str, Any]:
    from fcnx.runtime.backends.registry import model_kind

    path = Path(model)
    if not path.exists():
        raise ValueError(f"{path}: no such model file or folder")
    info = _READERS[model_kind(path)](path)
    card = info.pop("card")
    if path.is_file():
        info["file"] = {"path": str(path), "mib": round(path.stat().st_size / 2**20, 2)}
    return {"model": str(path), "card": _card_summary(card), **info, "card_full": card.to_dict()}


def format_info(info: dict[str, Any]) -> str:
    card = info["card"]
    lines = [f"{info['model']}  ({info['kind']})"]
    if "file" in info:
        lines[0] += f"  {info['file']['mib']} MiB"
    lines += [
        f"  model      {card['architecture']} ({card['width']}), {card['precision']}, {card['output_kind']} output",
        f"  classes    {', '.join(card['classes'])}",
        f"  input      {card['input']}",
        f"  16-bit     images mapped to 8-bit by {card['intensity']} (the card's; --intensity overrides it)",
    ]
    if card["val_metrics"]:
        m = card["val_metrics"]
        shown = [f"{k} {m[k]:.4f}" for k in ("miou", "pixel_accuracy", "mean_dice") if k in m]
        lines.append(f"  val        {', '.join(shown)} on {m.get('images', '?')} images")
    for role in ("inputs", "outputs"):
        for t in info[role]:
            shape = "x".join(str(d) for d in t.get("shape", [])) or "?"
            lines.append(f"  {role[:-1]:<10} {t['name']}: {shape} {t.get('type', '')}".rstrip())
    if "built_with" in info:
        b = info["built_with"]
        lines.append(
            f"  built with TensorRT {b['tensorrt']} on {b['gpu']} (sm {b['compute_capability']}), "
            f"batch {b['batch_profile']}, {b['precision']}"
        )
        lines.append(f"  here       {info['compatibility']}")
    if "runs_here_on" in info:
        lines.append(
            f"  runs here  {', '.join(info['runs_here_on']) or 'nowhere: onnxruntime is not installed'}"
        )
    if info.get("note"):
        lines.append(f"  note       {info['note']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if ARRAY_SPEC.fullmatch(args.model) and not Path(args.model).name.endswith((".onnx", ".engine")):
        array = describe_array(args.model, args.axes, args.level)
        print(json.dumps(array, indent=2) if args.json else format_array(array))
        return 0
    info = describe_model(args.model)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_info(info))
    return 0
