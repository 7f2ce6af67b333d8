"""The onnxruntime GPU options that can be decided without a GPU: the TensorRT EP's
profile and the limits that follow from it, and CUDA-graph output buffer shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnx.runtime.backends.base import BackendError
from fcnx.runtime.backends.ort import OrtOptions, _provider_options, cuda_graph_output_shapes, trt_ep_shape
from fcnx.runtime.backends.trt.sidecar import BatchProfile
from fcnx.runtime.card import ModelCard, default_palette

CARD = ModelCard(architecture="fcn2s", classes=("bg", "fg"), palette=default_palette(2), input_channels=1,
                 input_height=512, input_width=512)  # fmt: skip
BATCH = BatchProfile(1, 8, 32)


def test_a_dynamic_batch_gets_a_batch_profile_and_its_max_as_the_limit() -> None:
    shape = trt_ep_shape("image", (None, 512, 512, 1), CARD, BATCH, Path("m.onnx"))
    assert shape.options == {
        "trt_profile_min_shapes": "image:1x512x512x1",
        "trt_profile_opt_shapes": "image:8x512x512x1",
        "trt_profile_max_shapes": "image:32x512x512x1",
    }
    assert (shape.max_batch, shape.fixed_batch, shape.input_hw) == (32, False, (512, 512))


def test_a_dynamic_size_is_pinned_to_the_cards_and_a_static_input_needs_no_profile() -> None:
    dynamic = trt_ep_shape("image", (None, None, None, 1), CARD, BATCH, Path("m.onnx"))
    assert dynamic.options["trt_profile_max_shapes"] == "image:32x512x512x1" and dynamic.input_hw == (
        512,
        512,
    )
    static = trt_ep_shape("image", (4, 256, 256, 1), CARD, BATCH, Path("m.onnx"))
    assert static.options == {} and (static.max_batch, static.fixed_batch, static.input_hw) == (
        4,
        True,
        (256, 256),
    )
    fixed_batch = trt_ep_shape("image", (4, None, None, 1), CARD, BATCH, Path("m.onnx"))
    assert fixed_batch.options["trt_profile_min_shapes"] == "image:4x512x512x1" and fixed_batch.fixed_batch


def test_no_size_anywhere_is_one_line_not_image_1xNonexNone() -> None:
    anysize = CARD.replace(input_height=None, input_width=None)
    with pytest.raises(BackendError, match=r"m\.onnx: ort-trt needs a spatial size .* --size HxW"):
        trt_ep_shape("image", (None, None, None, 1), anysize, BATCH, Path("m.onnx"))


def test_the_profile_reaches_the_tensorrt_provider_options(tmp_path: Path) -> None:
    shape = trt_ep_shape("image", (None, 512, 512, 1), CARD, BATCH, Path("m.onnx"))
    providers = _provider_options("ort-trt", tmp_path / "m.onnx", CARD, shape, OrtOptions())
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers[0][1]["trt_profile_opt_shapes"] == "image:8x512x512x1"
    assert "None" not in "".join(providers[0][1].values())


def test_cuda_graph_buffers_come_from_the_fixed_input_shape() -> None:
    assert cuda_graph_output_shapes((8, 512, 512, 1), CARD, ["probs", "mask"]) == {
        "probs": (8, 512, 512, 2),
        "mask": (8, 512, 512),
    }
    sigmoid = CARD.replace(output_kind="sigmoid")
    assert cuda_graph_output_shapes((2, 64, 64, 1), sigmoid, ["probs"]) == {"probs": (2, 64, 64, 1)}
