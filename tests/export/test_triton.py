"""``fcnx export triton``: model repositories written from the session's real ONNX exports
and from an engine file with a real sidecar (TensorRT is never needed to write one).

The Triton server itself is not run here (no docker or GPU): each ``config.pbtxt`` is
parsed back into tritonclient's ``ModelConfig`` and checked field by field, and the
repository's ONNX is run with onnxruntime through the config's input to prove the config
describes the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import triton_to_np_dtype

from fcnx.export.onnx_export import ExportError
from fcnx.export.onnx_graph import read_card, set_card
from fcnx.export.triton import TritonRepoConfig, write_repository
from fcnx.runtime.backends.trt.sidecar import BatchProfile, EngineSidecar, sidecar_path, write_sidecar
from fcnx.runtime.card import ModelCard
from fcnx.runtime.cli import main

GIB = 1 << 30


def parse(folder: Path) -> Any:
    return text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), pb.ModelConfig())


def io(specs: Any) -> list[tuple[str, str, list[int]]]:
    return [(s.name, pb.DataType.Name(s.data_type), list(s.dims)) for s in specs]


def accelerators(config: Any) -> list[tuple[str, dict[str, str]]]:
    gpu = config.optimization.execution_accelerators.gpu_execution_accelerator
    return [(a.name, dict(a.parameters)) for a in gpu]


def write(model: Path, repo: Path, name: str = "fcn", **options: Any) -> dict[str, Any]:
    return write_repository(TritonRepoConfig(model=str(model), repo=str(repo), name=name, **options))


def onnx_card(path: Path) -> ModelCard:
    card = read_card(onnx.load(str(path), load_external_data=False))
    assert card is not None
    return card


def test_onnx_repository_config_field_by_field(tiny_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = write(tiny_onnx, repo, preferred_batch="16,8", instances=2, max_queue_delay_us=500)
    folder = repo / "fcn"
    assert sorted(p.name for p in repo.iterdir()) == ["fcn"]  # no temp folder left behind
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "fcnx-card.json",
    ]  # fmt: skip
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert ModelCard.read(folder / "fcnx-card.json") == onnx_card(tiny_onnx)
    assert result["path"] == str(folder) and result["note"] is None and result["tensorrt_version"] is None

    config = parse(folder)
    assert config.name == "fcn" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert io(config.input) == [("image", "TYPE_UINT8", [64, 64, 1])]
    assert io(config.output) == [("probs", "TYPE_FP32", [64, 64, 2]), ("mask", "TYPE_UINT8", [64, 64])]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (2, "KIND_GPU")
    ]
    assert accelerators(config) == [
        (
            "tensorrt",
            {
                "precision_mode": "FP16",
                "max_workspace_size_bytes": str(4 * GIB),
                "trt_profile_min_shapes": "image:1x64x64x1",
                "trt_profile_opt_shapes": "image:16x64x64x1",
                "trt_profile_max_shapes": "image:32x64x64x1",
            },
        )
    ]
    assert not config.optimization.execution_accelerators.cpu_execution_accelerator
    assert not config.backend and not config.HasField("sequence_batching")


def test_the_repository_onnx_runs_as_its_config_describes(tiny_onnx: Path, tmp_path: Path) -> None:
    write(tiny_onnx, tmp_path)
    config = parse(tmp_path / "fcn")
    session = ort.InferenceSession(
        str(tmp_path / "fcn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (image,) = config.input
    dtype = triton_to_np_dtype(pb.DataType.Name(image.data_type).removeprefix("TYPE_"))
    batch = np.random.default_rng(0).integers(0, 256, (3, *image.dims), dtype=np.int64).astype(dtype)
    names = [o.name for o in config.output]
    results = dict(zip(names, session.run(names, {image.name: batch}), strict=True))
    for out in config.output:
        value = results[out.name]
        assert value.dtype == triton_to_np_dtype(pb.DataType.Name(out.data_type).removeprefix("TYPE_"))
        assert value.shape == (3, *out.dims)
    assert set(np.unique(results["mask"])) <= {0, 1}
    np.testing.assert_array_equal(results["mask"], results["probs"].argmax(-1))


def test_cpu_kind_fp32_cache_and_no_accelerator(tiny_onnx: Path, tmp_path: Path) -> None:
    result = write(tiny_onnx, tmp_path, name="cpu", kind="cpu", instances=3, max_batch=4)
    config = parse(tmp_path / "cpu")
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (3, "KIND_CPU")
    ]
    assert config.max_batch_size == 4 and not config.HasField("optimization")
    assert "GPU instances only" in result["note"]

    write(tiny_onnx, tmp_path, name="fp32", trt_precision="fp32", trt_workspace=0.5, trt_cache="/cache/fcn")
    ((name, params),) = accelerators(parse(tmp_path / "fp32"))
    assert name == "tensorrt" and params["precision_mode"] == "FP32"
    assert params["max_workspace_size_bytes"] == str(GIB // 2)
    assert params["trt_engine_cache_enable"] == "1" and params["trt_engine_cache_path"] == "/cache/fcn"
    assert params["trt_timing_cache_enable"] == "1" and params["trt_timing_cache_path"] == "/cache/fcn"
    assert params["trt_profile_opt_shapes"] == "image:32x64x64x1"  # no preferred sizes: the max

    write(tiny_onnx, tmp_path, name="cuda", trt_accelerator=False, max_queue_delay_us=0)
    config = parse(tmp_path / "cuda")
    assert not config.HasField("optimization") and config.dynamic_batching.max_queue_delay_microseconds == 0
    assert config.HasField("dynamic_batching") and not config.dynamic_batching.preferred_batch_size


def test_dynamic_spatial_size_is_minus_one(tiny_onnx_dynamic: Path, tmp_path: Path) -> None:
    write(tiny_onnx_dynamic, tmp_path)
    config = parse(tmp_path / "fcn")
    assert io(config.input) == [("image", "TYPE_UINT8", [-1, -1, 1])]
    assert io(config.output) == [("probs", "TYPE_FP32", [-1, -1, 2]), ("mask", "TYPE_UINT8", [-1, -1])]
    ((_, params),) = accelerators(config)
    assert params == {"precision_mode": "FP16", "max_workspace_size_bytes": str(4 * GIB)}  # no fixed profile


def test_a_fixed_batch_onnx_is_refused(tiny_onnx_fixed: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ExportError, match=r"fixed\.onnx: was exported with a fixed batch of 3.*--batch dynamic"
    ):
        write(tiny_onnx_fixed, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_an_existing_model_folder_is_kept_without_force_and_replaced_with_it(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    write(tiny_onnx, tmp_path)
    (tmp_path / "fcn" / "2").mkdir()  # a stale version someone left there
    with pytest.raises(ExportError, match=r"fcn: already exists; pass --force to replace it"):
        write(tiny_onnx, tmp_path, max_batch=8)
    assert parse(tmp_path / "fcn").max_batch_size == 32
    write(tiny_onnx, tmp_path, max_batch=8, force=True)
    assert parse(tmp_path / "fcn").max_batch_size == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn"]  # no .tmp / .old folders
    assert sorted(p.name for p in (tmp_path / "fcn").iterdir()) == ["1", "config.pbtxt", "fcnx-card.json"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preferred_batch": "8,64"}, r"--preferred-batch 64 is larger than max_batch_size 32"),
        ({"preferred_batch": "4", "max_batch": 2}, r"--preferred-batch 4 is larger than max_batch_size 2"),
        ({"preferred_batch": "a,b"}, r"positive integers separated by commas like 8,16, got 'a,b'"),
        ({"preferred_batch": "8,,16"}, r"got '8,,16'"),
        ({"preferred_batch": "0"}, r"got '0'"),
        ({"max_batch": 0}, r"--max-batch must be 1 or more, got 0"),
        ({"instances": 0}, r"--instances must be 1 or more"),
        ({"trt_workspace": 0}, r"--trt-workspace must be positive"),
        ({"trt_precision": "int8"}, r"--trt-precision int8 needs an INT8 \(Q/DQ\) ONNX, this one is fp32"),
    ],
)
def test_bad_options(tiny_onnx: Path, tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        write(tiny_onnx, tmp_path / "repo", **options)
    assert not (tmp_path / "repo" / "fcn").exists()


def test_bad_names_and_models(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"model name '\.hidden'"):
        write(tiny_onnx, tmp_path, name=".hidden")
    with pytest.raises(ExportError, match=r"model name 'a/b'"):
        write(tiny_onnx, tmp_path, name="a/b")
    with pytest.raises(ExportError, match=r"none\.onnx: no such model file"):
        write(tmp_path / "none.onnx", tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match=r"junk\.onnx: not a readable ONNX file"):
        write(junk, tmp_path)
    other = tmp_path / "model.bin"
    other.write_bytes(b"?")
    with pytest.raises(ExportError, match=r"model\.bin: expected an fcnx ONNX file"):
        write(other, tmp_path)
    bare = onnx.load(str(tiny_onnx))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ExportError, match=r"bare\.onnx: has no fcnx model card"):
        write(tmp_path / "bare.onnx", tmp_path)


def _with_card(source: Path, out: Path, **changes: Any) -> Path:
    """The tiny ONNX with its card edited (a real file, re-labelled: cheaper than a
    calibrated INT8 export, and the card is all the accelerator decision reads)."""
    model = onnx.load(str(source))
    set_card(model, onnx_card(source).replace(**changes))
    onnx.save(model, str(out))
    return out


def test_int8_onnx_accelerator(tiny_onnx: Path, tmp_path: Path) -> None:
    s8s8 = _with_card(
        tiny_onnx, tmp_path / "s8s8.onnx", precision="int8",
        export={"calibration": {"format": "s8s8", "tensorrt_compatible": True}},
    )  # fmt: skip
    write(s8s8, tmp_path / "repo", name="s8s8")
    ((_, params),) = accelerators(parse(tmp_path / "repo" / "s8s8"))
    assert params["precision_mode"] == "INT8"
    with pytest.raises(ExportError, match=r"INT8 Q/DQ ONNX; TensorRT builds it only with INT8 enabled"):
        write(s8s8, tmp_path / "repo", name="s8s8-fp16", trt_precision="fp16")

    u8s8 = _with_card(
        tiny_onnx, tmp_path / "u8s8.onnx", precision="int8",
        export={"calibration": {"format": "u8s8", "tensorrt_compatible": False}},
    )  # fmt: skip
    result = write(u8s8, tmp_path / "repo", name="u8s8")
    config = parse(tmp_path / "repo" / "u8s8")
    assert not config.HasField("optimization")  # dropped, with the note saying why
    assert "u8s8 format" in result["note"] and "--int8-format s8s8" in result["note"]
    assert pb.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"


def _fake_engine(
    tiny_onnx: Path, folder: Path, batch: str = "1:8:16", outputs: tuple[str, ...] = ("probs", "mask")
) -> Path:
    """Plan bytes TensorRT would write (opaque here) plus a real sidecar."""
    engine = folder / "model.engine"
    engine.write_bytes(b"not a real plan: Triton's TensorRT backend would load it")
    sidecar = EngineSidecar(
        card=onnx_card(tiny_onnx).replace(precision="fp16"),
        tensorrt_version="10.13.0",
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        input_name="image",
        input_shape=(64, 64, 1),
        batch=BatchProfile.parse(batch),
        precision="fp16",
        onnx_sha256="0" * 64,
        onnx_file="model.fp16.onnx",
        outputs=outputs,
    )
    write_sidecar(engine, sidecar)
    return engine


def test_engine_repository(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = _fake_engine(tiny_onnx, tmp_path)
    repo = tmp_path / "repo"
    result = write(engine, repo, name="fcn-trt", preferred_batch="8", trt_precision="fp32")
    folder = repo / "fcn-trt"
    assert (folder / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert (folder / "fcnx-engine.json").read_bytes() == sidecar_path(engine).read_bytes()
    assert json.loads((folder / "fcnx-card.json").read_text())["precision"] == "fp16"
    assert result["tensorrt_version"] == "10.13.0" and result["compute_capability"] == "8.9"
    config = parse(folder)
    assert config.name == "fcn-trt" and config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert io(config.input) == [("image", "TYPE_UINT8", [64, 64, 1])]
    assert io(config.output) == [("probs", "TYPE_FP32", [64, 64, 2]), ("mask", "TYPE_UINT8", [64, 64])]
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert pb.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert not config.HasField("optimization")  # the plan is TensorRT already

    write(engine, repo, name="small", max_batch=4)
    assert parse(repo / "small").max_batch_size == 4
    with pytest.raises(
        ExportError, match=r"--max-batch 32 is larger than .*model\.engine's batch profile max 16"
    ):
        write(engine, repo, name="big", max_batch=32)
    with pytest.raises(ExportError, match=r"a TensorRT plan runs on GPU instances only"):
        write(engine, repo, name="cpu", kind="cpu")
    assert sorted(p.name for p in repo.iterdir()) == ["fcn-trt", "small"]


def test_engine_sidecar_problems(tiny_onnx: Path, tmp_path: Path) -> None:
    engine = _fake_engine(tiny_onnx, tmp_path, batch="2:8:16", outputs=("mask",))
    with pytest.raises(
        ExportError, match=r"model\.engine\.json: the engine's batch profile 2:8:16 starts at 2"
    ):
        write(engine, tmp_path / "repo")
    engine = _fake_engine(tiny_onnx, tmp_path, outputs=("mask",))
    write(engine, tmp_path / "repo")
    assert io(parse(tmp_path / "repo" / "fcn").output) == [("mask", "TYPE_UINT8", [64, 64])]
    sidecar_path(engine).unlink()
    with pytest.raises(
        ExportError, match=r"model\.engine\.json: missing; every fcnx engine has this sidecar"
    ):
        write(engine, tmp_path / "repo2")
    assert not (tmp_path / "repo2").exists()


def test_cli(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    args = ["export", "triton", str(tiny_onnx), "-o", str(repo), "--name", "fcn"]
    assert main([*args, "--preferred-batch", "4,8", "--instances", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {repo / 'fcn'}:" in printed and str(repo / "fcn" / "1" / "model.onnx") in printed
    assert "onnxruntime_onnx: inputs image TYPE_UINT8 [64, 64, 1]; outputs probs TYPE_FP32" in printed
    assert "preferred batch sizes 4,8" in printed and "instances 2 x KIND_GPU" in printed
    assert "tensorrt accelerator: FP16" in printed
    assert parse(repo / "fcn").instance_group[0].count == 2
    assert main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force", "--preferred-batch", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --preferred-batch must be positive integers") and "Traceback" not in err

    engine = _fake_engine(tiny_onnx, tmp_path)
    assert main(["export", "triton", str(engine), "-o", str(repo), "--name", "trt"]) == 0
    assert "model.plan needs TensorRT 10.13.0 and a GPU of compute capability 8.9" in capsys.readouterr().out


def test_cli_without_tritonclient_is_one_line_exit_2(tiny_onnx: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['tritonclient'] = None; from fcnx.runtime.cli import main; sys.exit(main())"
    )
    repo = tmp_path / "repo"
    out = subprocess.run(
        [sys.executable, "-c", code, "export", "triton", str(tiny_onnx), "-o", str(repo), "--name", "fcn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: tritonclient is not installed (its model_config protobuf writes config.pbtxt): "
        'pip install "fcnx[triton]"'
    ]
    assert not repo.exists()
