"""The ov-cpu backend on real OpenVINO sessions: the shipped threshold model and the tiny
trained FCN as IR pairs. FP32 parity with onnxruntime, the card through the IR, the pair
check, the precision that ran, auto never changing precision, the model cache folder and
the ordered AsyncInferQueue stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnx.runtime.backends import ov as ov_module
from fcnx.runtime.backends.base import BackendError
from fcnx.runtime.backends.ov import OvBackend, OvOptions, cache_folder
from fcnx.runtime.backends.ov_ir import bin_path
from fcnx.runtime.backends.registry import load
from fcnx.runtime.card import ModelCard
from fcnx.runtime.predict.segmenter import Segmenter

from ..fakes import THRESHOLD_ONNX, threshold_mask

openvino = pytest.importorskip("openvino", reason='openvino is not installed: pip install "fcnx[openvino]"')


def write_ir(onnx_path: Path, xml: Path, precision: str = "fp32") -> ModelCard:
    """An fcnx IR pair of an fcnx ONNX, written the way fcnx export openvino writes it."""
    from fcnx.export.openvino_export import publish_pair, save_ir
    from fcnx.runtime.backends.ort import OrtBackend
    from fcnx.runtime.backends.ov_ir import CARD_KEY, INFERENCE_PRECISION, PRECISION_KEY, RT_SECTION

    with OrtBackend(onnx_path) as ort:
        card = ort.card.replace(precision=precision)
    model = openvino.convert_model(str(onnx_path))
    model.set_rt_info(card.to_json(), [RT_SECTION, CARD_KEY])
    model.set_rt_info(INFERENCE_PRECISION[precision], [RT_SECTION, PRECISION_KEY])
    staging = xml.parent / f".{xml.name}.staging"
    staging.mkdir(parents=True)
    publish_pair(save_ir(openvino, model, staging, xml.name), xml)
    staging.rmdir()
    return card


@pytest.fixture(scope="module")
def threshold_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    xml = tmp_path_factory.mktemp("ir") / "threshold.xml"
    write_ir(THRESHOLD_ONNX, xml)
    return xml


@pytest.fixture(scope="module")
def tiny_xml(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-ir")
    irs = {}
    for precision in ("fp32", "bf16"):
        irs[precision] = folder / f"tiny.{precision}.xml"
        write_ir(tiny_onnx, irs[precision], precision)
    return irs


def batch_of(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), np.uint8)


def test_fp32_matches_onnxruntime_and_keeps_the_card(tiny_onnx: Path, tiny_xml: dict[str, Path]) -> None:
    batch = batch_of(3)
    with load(tiny_onnx, "ort-cpu") as ort, load(tiny_xml["fp32"]) as ov:
        assert ov.name == "ov-cpu" and "f32 inference" in ov.provider and ov.precision_run == "fp32"
        assert ov.card == ort.card  # the card survives the IR round trip (fp32 both)
        assert ov.input_hw == (64, 64) and not ov.fixed_batch
        want, got = ort.infer(batch), ov.infer(batch)
    assert set(got) == {"probs", "mask"}
    assert np.abs(got["probs"] - want["probs"]).max() <= 1e-5
    assert (got["mask"] == want["mask"]).mean() >= 0.9999


def test_threshold_ir_gives_the_known_masks(threshold_xml: Path) -> None:
    images = [batch_of(1, 64, seed)[0] for seed in range(3)] + [batch_of(1, 96, 7)[0]]
    with load(threshold_xml) as backend:
        assert backend.input_hw == (None, None)  # any size: compiled per shape
        masks = Segmenter(backend, batch_size=2).predict(images)
    for image, mask in zip(images, masks):
        assert np.array_equal(mask, threshold_mask(image))


def test_a_share_of_the_cores_is_not_pinned_to_the_first_ones(threshold_xml: Path) -> None:
    """OpenVINO pins its threads to the first cores: two 1-thread processes (two Ray workers)
    would share one core. With fewer threads than this process's cores, fcnx turns pinning off."""
    from fcnx.runtime.backends.ort import usable_cores
    from fcnx.runtime.backends.ov import OvOptions

    if usable_cores() < 2:
        pytest.skip("one usable core: every thread count is the whole machine")
    for threads, pinned in ((1, False), (None, True)):
        with load(threshold_xml, "ov-cpu", OvOptions(threads=threads)) as backend:
            backend.infer(batch_of(1, 64, 0))
            (entry,) = backend._compiled.values()
            assert entry.compiled.get_property("ENABLE_CPU_PINNING") is pinned, threads


def test_bf16_reports_and_runs_bf16(tiny_xml: dict[str, Path]) -> None:
    batch = batch_of(2)
    with OvBackend(tiny_xml["fp32"]) as fp32:
        reference = fp32.infer(batch)["probs"]
    try:
        backend = load(tiny_xml["bf16"])
    except BackendError as exc:  # a CPU without BF16 says so
        assert "no BF16 support" in str(exc)
        pytest.skip("this CPU has no BF16 support")
    with backend:
        assert backend.card.precision == "bf16" and backend.precision_run == "bf16"
        assert "bf16 inference" in backend.provider
        probs = backend.infer(batch)["probs"]
    error = np.abs(probs - reference).max()
    assert 1e-5 < error < 0.05  # bfloat16 really ran (its 8-bit mantissa shows), and close


def test_bf16_on_a_cpu_without_bf16_is_an_error(
    tiny_xml: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ov_module, "bf16_supported", lambda core: False)
    with pytest.raises(BackendError, match="a BF16 artifact, and this CPU has no BF16 support"):
        load(tiny_xml["bf16"])


def test_auto_never_changes_precision(threshold_xml: Path, tiny_xml: dict[str, Path]) -> None:
    with load(THRESHOLD_ONNX) as backend:
        assert backend.name.startswith("ort-")  # an .onnx never goes to OpenVINO
    with pytest.raises(BackendError, match="not ov-cpu"):
        load(THRESHOLD_ONNX, "ov-cpu")
    with load(tiny_xml["fp32"]) as backend:
        assert backend.name == "ov-cpu" and backend.precision_run == "fp32"  # not the CPU's bf16 default


def _broken(folder: Path, threshold_xml: Path) -> Path:
    folder.mkdir()
    xml = folder / "model.xml"
    xml.write_bytes(threshold_xml.read_bytes())
    bin_path(xml).write_bytes(bin_path(threshold_xml).read_bytes())
    return xml


@pytest.mark.parametrize(
    "damage", ["missing-bin", "truncated-bin", "foreign-bin", "truncated-xml", "no-card"]
)
def test_a_broken_pair_is_one_line_naming_the_file(threshold_xml: Path, tmp_path: Path, damage: str) -> None:
    xml = _broken(tmp_path / damage, threshold_xml)
    weights = bin_path(xml)
    if damage == "missing-bin":
        weights.unlink()
    elif damage == "truncated-bin":
        weights.write_bytes(weights.read_bytes()[:-3])
    elif damage == "foreign-bin":
        weights.write_bytes(bytes(reversed(weights.read_bytes())))
    elif damage == "truncated-xml":
        xml.write_bytes(xml.read_bytes()[:-200])
    else:
        xml.write_text(xml.read_text().replace("<fcnx>", "<other>").replace("</fcnx>", "</other>"))
    with pytest.raises(BackendError) as caught:
        load(xml)
    message = str(caught.value)
    assert "\n" not in message
    named = xml if damage in ("truncated-xml", "no-card") else weights
    assert message.startswith(f"{named}:")


def test_model_cache_is_in_the_user_cache_folder(
    threshold_xml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cache_folder() == tmp_path / "cache" / "fcnx" / "openvino"
    before = set(threshold_xml.parent.iterdir())
    with load(threshold_xml) as first:
        first.infer(batch_of(2))
    with load(threshold_xml) as second:
        second.infer(batch_of(2))
    assert any(cache_folder().iterdir())
    assert set(threshold_xml.parent.iterdir()) == before  # nothing beside the model
    assert [c["cache"] for c in first.compiles] == ["cold"]
    assert [c["cache"] for c in second.compiles] == ["warm"]
    assert "model cache warm" in second.notes[-1]


def test_stream_keeps_order_and_equals_infer(threshold_xml: Path) -> None:
    batches = [batch_of(2, 64, seed) for seed in range(6)] + [batch_of(1, 32, 9), batch_of(2, 64, 10)]
    with OvBackend(threshold_xml, options=OvOptions(requests=3)) as backend:
        streamed = list(backend.infer_stream(iter(batches)))
        assert backend.requests_in_flight == 3
        synced = [backend.infer(b) for b in batches]
    assert len(streamed) == len(batches)
    for batch, got, want in zip(batches, streamed, synced):
        assert np.array_equal(got["mask"], want["mask"])
        assert np.array_equal(got["probs"], want["probs"])
        assert np.array_equal(got["mask"], batch[..., 0] > 127)


def test_a_smaller_batch_runs_padded_on_a_compiled_shape(tiny_xml: dict[str, Path]) -> None:
    """The last, partial batch of an image (or strip) runs on the batch already compiled
    (padded, then cut), not on a new compile that would stay in memory: same results."""
    full = batch_of(4)
    with OvBackend(tiny_xml["fp32"]) as backend:
        whole = backend.infer(full)
        part = backend.infer(full[:3])
        streamed = list(backend.infer_stream(iter([full, full[:1], full[:3]])))
        assert [c["shape"][0] for c in backend.compiles] == [1, 4]  # the load's batch 1, then 4: no 3
    assert part["probs"].shape[0] == 3 and part["mask"].shape[0] == 3
    np.testing.assert_array_equal(part["probs"], whole["probs"][:3])
    np.testing.assert_array_equal(streamed[1]["mask"], whole["mask"][:1])
    np.testing.assert_array_equal(streamed[2]["probs"], whole["probs"][:3])
