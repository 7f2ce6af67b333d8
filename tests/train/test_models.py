from __future__ import annotations

import numpy as np
import pytest

from fcnx.train.config import ARCHS, WIDTHS, ModelConfig
from fcnx.train.models import bilinear_kernel, build_fcn


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_variant_keeps_the_input_size(arch: str, width: str) -> None:
    model = build_fcn(ModelConfig(arch=arch, width=width, fc_filters=64))
    for h, w in [(32, 32), (64, 96), (128, 64)]:
        probs = model.predict_on_batch(np.zeros((2, h, w, 1), np.uint8))
        assert probs.shape == (2, h, w, 2), (arch, width, h, w)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        (dict(in_channels=3, num_classes=5), (1, 64, 64, 5)),
        (dict(head="sigmoid"), (1, 64, 64, 1)),
    ],
)
def test_channels_classes_and_sigmoid_head(kwargs: dict, shape: tuple) -> None:
    model = build_fcn(ModelConfig(arch="fcn2s", fc_filters=64, **kwargs))
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, kwargs.get("in_channels", 1)), np.uint8)
    probs = model.predict_on_batch(x)
    assert probs.shape == shape
    assert ((probs >= 0) & (probs <= 1)).all()


def test_model_takes_uint8_and_normalizes_in_graph() -> None:
    model = build_fcn(ModelConfig(norm_mean=127.5, norm_std=50.0))
    assert model.inputs[0].dtype == "uint8"
    normalize = model.get_layer("normalize")
    out = np.asarray(normalize(np.array([[[[0], [255]]]], np.uint8)))
    np.testing.assert_allclose(out.ravel(), [(0 - 127.5) / 50, (255 - 127.5) / 50], rtol=1e-6)


def test_slim_fcn8s_parameter_count_by_hand() -> None:
    """The write-up's model: no batch norm, 1 grey input, 2 classes."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    widths, convs = (32, 64, 128, 256, 256), (2, 2, 3, 3, 3)
    encoder, cin = 0, 1
    for cout, n in zip(widths, convs):
        for _ in range(n):
            encoder += conv(3, cin, cout)
            cin = cout
    fc = conv(1, 256, 1024) + conv(1, 1024, 1024)
    n = 2
    scores = conv(1, 1024, n) + conv(1, 256, n) + conv(1, 128, n)  # score_fr, score_pool4, score_pool3
    upsampling = 4 * 4 * n * n + 4 * 4 * n * n + 16 * 16 * n * n  # 2x, 2x, 8x, no bias
    expected = encoder + fc + scores + upsampling
    model = build_fcn(ModelConfig(arch="fcn8s", width="slim", batch_norm=False))
    assert model.count_params() == expected == 4_996_326


def test_batch_norm_adds_its_parameters() -> None:
    plain = build_fcn(ModelConfig(batch_norm=False)).count_params()
    bn = build_fcn(ModelConfig(batch_norm=True)).count_params()
    bn_channels = 2 * 32 + 2 * 64 + 3 * 128 + 3 * 256 + 3 * 256
    assert bn == plain - bn_channels + 4 * bn_channels  # no conv bias; gamma, beta, mean, var


def test_bilinear_init_upsamples_a_constant_to_a_constant() -> None:
    kernel = bilinear_kernel(4, 2)
    assert kernel.shape == (4, 4, 2, 2)
    assert kernel[:, :, 0, 1].sum() == 0  # channels independent
    model = build_fcn(ModelConfig(arch="fcn32s", fc_filters=8))
    up = model.get_layer("upscore_final")
    x = np.ones((1, 4, 4, 2), np.float32)
    y = np.asarray(up(x))
    assert y.shape == (1, 128, 128, 2)
    np.testing.assert_allclose(y[0, 32:96, 32:96], 1.0, atol=1e-5)  # interior: exact interpolation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(arch="fcn3s"), "arch must be one of fcn32s, fcn16s, fcn8s, fcn4s, fcn2s, got 'fcn3s'"),
        (dict(width="huge"), "width must be one of slim, vgg16, got 'huge'"),
        (dict(in_channels=2), "in_channels must be 1 or 3, got 2"),
        (dict(num_classes=1), "num_classes must be at least 2, got 1"),
        (dict(head="sigmoid", num_classes=3), "a sigmoid head is binary: num_classes must be 2, got 3"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_model_config_is_an_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        ModelConfig(**kwargs)


def test_output_stride_and_skips() -> None:
    assert ModelConfig(arch="fcn8s").skip_levels == (4, 3)
    assert ModelConfig(arch="fcn8s").final_upsample == 8
    assert ModelConfig(arch="fcn2s").skip_levels == (4, 3, 2, 1)
    assert ModelConfig(arch="fcn2s").final_upsample == 2
    assert ModelConfig(arch="fcn32s").final_upsample == 32
