"""The TensorRT engine path. TensorRT cannot be installed on fcnx's CI or dev machines,
so everything around the TensorRT calls is tested here on the CPU; the calls themselves
are exercised once against a recording stand-in (a mock, because the real library
cannot exist here) and for real only in the ``tensorrt``-marked test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fcnx.export import engine
from fcnx.export.engine import EngineBuildConfig, ExportError, build_engine, plan_build
from fcnx.runtime.backends.trt.sidecar import (
    BatchProfile,
    EngineMismatch,
    check_compatible,
    read_sidecar,
    sidecar_path,
)
from fcnx.runtime.card import CardError


@pytest.mark.parametrize(
    ("text", "expected"), [("1:8:32", (1, 8, 32)), ("4", (4, 4, 4)), (" 2:2:3", (2, 2, 3))]
)
def test_batch_profile_parsing(text: str, expected: tuple[int, int, int]) -> None:
    p = BatchProfile.parse(text)
    assert (p.min, p.opt, p.max) == expected and str(BatchProfile.parse(str(p))) == str(p)


@pytest.mark.parametrize("text", ["8:1:32", "0:1:2", "1:8", "a:b:c", "1:8:32:64", ""])
def test_bad_batch_profiles(text: str) -> None:
    with pytest.raises(ValueError, match="batch profile"):
        BatchProfile.parse(text)


def test_plan_reads_card_shape_and_precision(tiny_onnx: Path) -> None:
    plan = plan_build(EngineBuildConfig(onnx=str(tiny_onnx), out="x.engine", batch="1:4:16"))
    assert plan.input_name == "image" and plan.input_shape == (64, 64, 1)
    assert plan.shapes() == ((1, 64, 64, 1), (4, 64, 64, 1), (16, 64, 64, 1))
    assert plan.precision == "fp32" and plan.outputs == ("probs", "mask")


def test_plan_errors(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no such ONNX file"):
        plan_build(EngineBuildConfig(onnx=str(tmp_path / "none.onnx"), out="x"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match=r"junk\.onnx: not a readable ONNX file"):
        plan_build(EngineBuildConfig(onnx=str(junk), out="x"))
    with pytest.raises(ExportError, match="batch profile"):
        plan_build(EngineBuildConfig(onnx=str(tiny_onnx), out="x", batch="9:1:1"))


def test_cli_without_tensorrt_is_one_line_exit_2(tiny_onnx: Path, tmp_path: Path) -> None:
    code = "import sys; sys.modules['tensorrt'] = None; from fcnx.runtime.cli import main; sys.exit(main())"
    out = subprocess.run(
        [sys.executable, "-c", code, "export", "engine", str(tiny_onnx), "-o", str(tmp_path / "m.engine")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        'error: TensorRT is not installed: pip install "fcnx[gpu,tensorrt]" --extra-index-url https://pypi.nvidia.com '
        'on a machine with an NVIDIA GPU (CUDA 12 drivers: "fcnx[gpu-cu12,tensorrt-cu12]")'
    )
    assert not list(tmp_path.iterdir())


class _Recorder:
    """A stand-in for the tensorrt module (a mock: TensorRT cannot be installed here).
    It records the calls fcnx makes so the call sequence and arguments are checked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.accept_cache = True
        self.__version__ = "10.13.0"
        rec = self

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                rec.calls.append(("Logger", level))

        class Flag:
            STRONGLY_TYPED = 1

        class Pool:
            WORKSPACE = 0

        class Profile:
            def set_shape(self, name: str, *shapes: tuple[int, ...]) -> None:
                rec.calls.append(("set_shape", (name, shapes)))

        class Cache:
            def serialize(self) -> bytes:
                return b"timing-cache"

        class Config:
            def set_memory_pool_limit(self, pool: int, size: int) -> None:
                rec.calls.append(("workspace", size))

            def add_optimization_profile(self, profile: Profile) -> None:
                rec.calls.append(("add_profile", None))

            def create_timing_cache(self, data: bytes) -> Cache:
                rec.calls.append(("create_timing_cache", data))
                return Cache()

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                # as TensorRT does with a cache from another device: refused
                return rec.accept_cache or rec.calls[-1] == ("create_timing_cache", b"")

            def get_timing_cache(self) -> None:
                return None  # what TensorRT gives after a rejected cache: never call it

        class Parser:
            num_errors = 0

            def __init__(self, network: object, logger: object) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                rec.calls.append(("parse", Path(path).name))
                return True

        class Builder:
            def __init__(self, logger: object) -> None:
                pass

            def create_network(self, flags: int) -> object:
                rec.calls.append(("create_network", flags))
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: object, config: Config) -> bytes:
                rec.calls.append(("build", None))
                return b"PLAN"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, Parser
        self.NetworkDefinitionCreationFlag, self.MemoryPoolType = Flag, Pool


def test_build_sequence_and_sidecar_with_a_recording_stand_in(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _Recorder()
    monkeypatch.setattr(engine, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(engine, "gpu_identity", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    out = tmp_path / "model.engine"
    cache = tmp_path / "cache" / "timing.cache"
    build_engine(
        EngineBuildConfig(
            onnx=str(tiny_onnx), out=str(out), batch="1:8:32", workspace=2, timing_cache=str(cache)
        )
    )
    assert out.read_bytes() == b"PLAN" and cache.read_bytes() == b"timing-cache"
    calls = dict(fake.calls)
    strongly_typed = 1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # whatever value it has
    assert calls["create_network"] == strongly_typed  # the precision is the ONNX's
    assert calls["workspace"] == 2 << 30
    assert calls["set_shape"] == ("image", ((1, 64, 64, 1), (8, 64, 64, 1), (32, 64, 64, 1)))
    assert "add_profile" in calls and "build" in calls
    sidecar = read_sidecar(out)
    assert sidecar.tensorrt_version == "10.13.0" and sidecar.compute_capability == "9.0"
    assert (
        str(sidecar.batch) == "1:8:32" and sidecar.precision == "fp32" and sidecar.input_shape == (64, 64, 1)
    )
    assert len(sidecar.onnx_sha256) == 64 and sidecar.card.classes == ("background", "foreground")
    with pytest.raises(ExportError, match="already exists"):
        build_engine(EngineBuildConfig(onnx=str(tiny_onnx), out=str(out)))


def test_sidecar_compatibility_check(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "import_tensorrt", lambda: _Recorder())
    monkeypatch.setattr(engine, "gpu_identity", lambda: ("NVIDIA L4", "8.9"))
    out = tmp_path / "model.engine"
    build_engine(EngineBuildConfig(onnx=str(tiny_onnx), out=str(out), batch="1:2:4"))
    sidecar = read_sidecar(out)
    assert check_compatible(sidecar, out, "10.13.0", "8.9", "NVIDIA L4") == []
    assert "rebuild for best speed" in check_compatible(sidecar, out, "10.13.0", "8.9", "NVIDIA RTX 4090")[0]
    with pytest.raises(
        EngineMismatch, match=r"TensorRT 10.13.0, this machine has 11.0.0.*Rebuild with: fcnx export engine"
    ):
        check_compatible(sidecar, out, "11.0.0", "8.9", "NVIDIA L4")
    with pytest.raises(EngineMismatch, match=r"compute capability 8.9 \(NVIDIA L4\), this GPU is 9.0"):
        check_compatible(sidecar, out, "10.13.0", "9.0", "NVIDIA H100")
    sidecar_path(out).unlink()
    with pytest.raises(CardError, match="missing; every fcnx engine has this sidecar"):
        read_sidecar(out)


def test_parser_failure_is_reported(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Recorder()
    fake.OnnxParser.parse_from_file = lambda self, path: False  # type: ignore[method-assign]
    fake.OnnxParser.num_errors = 1
    fake.OnnxParser.get_error = lambda self, i: "unsupported op"  # type: ignore[attr-defined]
    monkeypatch.setattr(engine, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(engine, "gpu_identity", lambda: ("GPU", "9.0"))
    with pytest.raises(ExportError, match="ONNX parser failed: unsupported op"):
        build_engine(EngineBuildConfig(onnx=str(tiny_onnx), out=str(tmp_path / "m.engine")))
    assert not list(tmp_path.iterdir())


@pytest.mark.tensorrt
def test_real_tensorrt_build(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.engine"
    build_engine(EngineBuildConfig(onnx=str(tiny_onnx), out=str(out), batch="1:2:4"))
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    deserialized = runtime.deserialize_cuda_engine(out.read_bytes())
    names = [deserialized.get_tensor_name(i) for i in range(deserialized.num_io_tensors)]
    assert names == ["image", "probs", "mask"]
    assert read_sidecar(out).tensorrt_version == trt.__version__


def test_a_rejected_timing_cache_costs_nothing_but_a_note(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _Recorder()
    fake.accept_cache = False  # the saved cache came from another GPU
    monkeypatch.setattr(engine, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(engine, "gpu_identity", lambda: ("NVIDIA L4", "8.9"))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from-an-H100")
    result = build_engine(
        EngineBuildConfig(onnx=str(tiny_onnx), out=str(tmp_path / "m.engine"), timing_cache=str(cache))
    )
    assert (tmp_path / "m.engine").read_bytes() == b"PLAN" and cache.read_bytes() == b"timing-cache"
    assert [c[1] for c in fake.calls if c[0] == "create_timing_cache"] == [b"from-an-H100", b""]
    assert "rejected" in result["note"]
