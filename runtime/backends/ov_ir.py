"""The OpenVINO IR pair (``model.xml`` + ``model.bin``) as fcnx writes and checks it.

Two files cannot be renamed together atomically, so ``fcnx export openvino`` writes the
``.bin`` first, records its sha256 in the ``.xml``'s ``rt_info`` and renames the
``.xml`` last. A reader checks the pair before OpenVINO maps the weights: a missing,
half-written or foreign ``.bin`` is a one-line error naming the file, never garbage
masks. Everything fcnx keeps in the IR lives under ``rt_info/fcnx`` (keys below); it is
read here with ElementTree, so the check needs nothing from OpenVINO.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ..card import sha256_file
from .base import BackendError

RT_SECTION = "fcnx"
CARD_KEY = "card"  # the model card, JSON
PRECISION_KEY = "inference_precision"  # OpenVINO's INFERENCE_PRECISION_HINT the export proved: f32, bf16
BIN_SHA_KEY = "bin_sha256"  # sha256 of the .bin written with this .xml

# card precision -> the INFERENCE_PRECISION_HINT its export proves (INT8: the float parts in f32)
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def bin_path(xml: str | Path) -> Path:
    """The weights file OpenVINO reads with ``xml``: the same name with ``.bin``."""
    return Path(xml).with_suffix(".bin")


def read_fcnx_info(xml: str | Path) -> dict[str, str]:
    """The ``rt_info/fcnx`` entries of an IR ``.xml`` ({} when it has none)."""
    path = Path(xml)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise BackendError(f"{path}: not a complete OpenVINO IR .xml ({exc})") from None
    except OSError as exc:
        raise BackendError(f"{path}: cannot read it: {exc.strerror}") from None
    section = root.find(f"rt_info/{RT_SECTION}")
    if section is None:
        return {}
    return {child.tag: child.get("value", "") for child in section}


def verify_pair(xml: str | Path) -> dict[str, str]:
    """The ``.xml``'s fcnx entries, after checking that its ``.bin`` is the one written with it."""
    path = Path(xml)
    info = read_fcnx_info(path)
    if CARD_KEY not in info or BIN_SHA_KEY not in info:
        raise BackendError(
            f"{path}: no fcnx model card in its rt_info (not exported by fcnx export openvino)"
        )
    weights = bin_path(path)
    if not weights.is_file():
        raise BackendError(f"{weights}: missing; {path.name} needs its weights file beside it (re-export)")
    actual = sha256_file(weights)
    if actual != info[BIN_SHA_KEY]:
        raise BackendError(
            f"{weights}: not the weights {path.name} was written with (sha256 {actual[:12]}…, expected "
            f"{info[BIN_SHA_KEY][:12]}…): a half-written or mismatched pair; re-export"
        )
    return info
