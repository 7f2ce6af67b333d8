"""The native TensorRT backend, on the CPU.

TensorRT and cuda-python cannot be installed on fcnx's CI or development machines, so
these tests put recording stand-ins (mocks) for exactly those two, and nothing else,
in ``sys.modules``: ``tensorrt`` and ``cuda.bindings.runtime``. The stand-in "GPU"
keeps device buffers as bytearrays keyed by fake pointers, runs each stream's work
only when an event or the stream is synchronized (as a real GPU may run it late),
and its engine computes a simple deterministic function of the image, so outputs,
buffer sizes, the call order and the overlap of double buffering are all checked.
The plain planning code (runtime/trt_buffers.py) is tested directly. The real library
runs only in the ``tensorrt``-marked test at the end.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import sys
import types
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fcnx.runtime.backends.base import Backend, BackendError
from fcnx.runtime.backends.trt.buffers import (
    SLOTS,
    STREAMS,
    EngineTensor,
    Slot,
    double_buffered,
    host_array,
    plan_buffers,
)
from fcnx.runtime.backends.trt.sidecar import BatchProfile, EngineMismatch, EngineSidecar, write_sidecar
from fcnx.runtime.card import ModelCard, default_palette

H, W, C = 8, 8, 1
U8, F32 = np.dtype(np.uint8), np.dtype(np.float32)
PLAN_BYTES = b"PLAN"


def make_sidecar(batch: str = "1:2:4", gpu: str = "NVIDIA L4", capability: str = "8.9") -> EngineSidecar:
    card = ModelCard(
        architecture="fcn8s",
        classes=("background", "foreground"),
        palette=default_palette(2),
        input_channels=C,
        input_height=H,
        input_width=W,
    )
    return EngineSidecar(
        card=card,
        tensorrt_version="10.13.0",
        gpu_name=gpu,
        compute_capability=capability,
        input_name="image",
        input_shape=(H, W, C),
        batch=BatchProfile.parse(batch),
        precision="fp32",
        onnx_sha256="0" * 64,
        onnx_file="model.onnx",
    )


def fcnx_specs() -> list[EngineTensor]:
    return [
        EngineTensor("image", True, U8, (-1, H, W, C)),
        EngineTensor("probs", False, F32, (-1, H, W, 2)),
        EngineTensor("mask", False, U8, (-1, H, W)),
    ]


def expected_outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
    """What the stand-in engine computes: foreground probability = pixel / 255."""
    fg = batch[..., 0].astype(np.float32) / 255
    return {"probs": np.stack([1 - fg, fg], axis=-1), "mask": (batch[..., 0] > 127).astype(np.uint8)}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, C), dtype=np.uint8)


# -- the stand-ins for cuda-python and TensorRT ---------------------------------------------


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2


class Kind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class Handle:
    """A stream or event handle: ``int()`` gives its address, like cuda-python's."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.done = True  # an event never recorded counts as complete
        self.stream = 0  # the stream an event was last recorded on

    def __int__(self) -> int:
        return self.value


class FakeCudart:
    """A recording stand-in for cuda-python's runtime module (a mock)."""

    cudaError_t = Err
    cudaMemcpyKind = Kind
    cudaStreamNonBlocking = 1

    def __init__(self, gpu: str = "NVIDIA L4", capability: str = "8.9") -> None:
        self.gpu, self.capability = gpu, capability
        self.log: list[tuple[Any, ...]] = []
        self.host: dict[int, Any] = {}  # address -> ctypes buffer (pinned memory is real host memory)
        self.device: dict[int, bytearray] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.fail: dict[str, int] = {}  # call name -> fail on its n-th call (1-based)
        self.counts: dict[str, int] = {}
        self._next = 0x7F0000000000

    def _handle(self) -> int:
        self._next += 0x100000
        return self._next

    def _failing(self, call: str) -> bool:
        self.counts[call] = self.counts.get(call, 0) + 1
        return self.fail.get(call) == self.counts[call]

    def cudaGetDeviceProperties(self, device: int) -> tuple[Err, Any]:
        major, minor = self.capability.split(".")
        return Err.cudaSuccess, types.SimpleNamespace(name=self.gpu.encode(), major=major, minor=minor)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Err, Handle]:
        stream = Handle(self._handle())
        self.streams[stream.value] = []
        self.log.append(("cudaStreamCreateWithFlags", flags))
        return Err.cudaSuccess, stream

    def cudaMallocHost(self, nbytes: int) -> tuple[Err, int]:
        if self._failing("cudaMallocHost"):
            return Err.cudaErrorMemoryAllocation, 0
        buffer = ctypes.create_string_buffer(nbytes)
        self.host[ctypes.addressof(buffer)] = buffer
        self.log.append(("cudaMallocHost", nbytes))
        return Err.cudaSuccess, ctypes.addressof(buffer)

    def cudaMalloc(self, nbytes: int) -> tuple[Err, int]:
        if self._failing("cudaMalloc"):
            return Err.cudaErrorMemoryAllocation, 0
        pointer = self._handle()
        self.device[pointer] = bytearray(nbytes)
        self.log.append(("cudaMalloc", nbytes))
        return Err.cudaSuccess, pointer

    def cudaEventCreate(self) -> tuple[Err, Handle]:
        event = Handle(self._handle())
        self.log.append(("cudaEventCreate", event.value))
        return Err.cudaSuccess, event

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: Kind, stream: Handle) -> tuple[Err]:
        if kind == Kind.cudaMemcpyHostToDevice:
            assert src in self.host and dst in self.device, "H2D must go from pinned host to device memory"
            assert nbytes <= len(self.device[dst])
            self.log.append(("H2D", dst, nbytes))

            def run() -> None:
                self.device[dst][:nbytes] = ctypes.string_at(src, nbytes)  # read at run time, like a GPU

        else:
            assert dst in self.host and src in self.device, "D2H must go from device to pinned host memory"
            self.log.append(("D2H", src, nbytes))

            def run() -> None:
                ctypes.memmove(dst, bytes(self.device[src][:nbytes]), nbytes)

        self.streams[int(stream)].append(run)
        return (Err.cudaSuccess,)

    def enqueue(self, stream_handle: int, work: Callable[[], None]) -> None:
        self.streams[stream_handle].append(work)

    def cudaEventRecord(self, event: Handle, stream: Handle) -> tuple[Err]:
        event.done, event.stream = False, int(stream)
        self.log.append(("cudaEventRecord", event.value))

        def run() -> None:
            event.done = True

        self.streams[int(stream)].append(run)
        return (Err.cudaSuccess,)

    def _run(self, stream: int, until: Callable[[], bool] = lambda: False) -> None:
        work = self.streams[stream]
        while work and not until():
            work.pop(0)()

    def cudaEventSynchronize(self, event: Handle) -> tuple[Err]:
        self.log.append(("cudaEventSynchronize", event.value))
        self._run(event.stream, lambda: event.done)
        return (Err.cudaSuccess,)

    def cudaStreamWaitEvent(self, stream: Handle, event: Handle, flags: int) -> tuple[Err]:
        """Work enqueued on ``stream`` after this waits until ``event`` (recorded on another
        stream) has happened: the other stream runs up to it first."""
        self.log.append(("cudaStreamWaitEvent", int(stream), event.value))
        self.streams[int(stream)].append(lambda: self._run(event.stream, lambda: event.done))
        return (Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: Handle) -> tuple[Err]:
        self.log.append(("cudaStreamSynchronize", int(stream)))
        self._run(int(stream))
        return (Err.cudaSuccess,)

    def cudaFreeHost(self, pointer: int) -> tuple[Err]:
        self.log.append(("cudaFreeHost", pointer))
        return (Err.cudaSuccess if self.host.pop(pointer, None) is not None else Err.cudaErrorInvalidValue,)

    def cudaFree(self, pointer: int) -> tuple[Err]:
        self.log.append(("cudaFree", pointer))
        return (Err.cudaSuccess if self.device.pop(pointer, None) is not None else Err.cudaErrorInvalidValue,)

    def cudaEventDestroy(self, event: Handle) -> tuple[Err]:
        self.log.append(("cudaEventDestroy", event.value))
        return (Err.cudaSuccess,)

    def cudaStreamDestroy(self, stream: Handle) -> tuple[Err]:
        self.log.append(("cudaStreamDestroy", int(stream)))
        self.streams.pop(int(stream))
        return (Err.cudaSuccess,)

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == name]


class Mode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class FakeTensorRT:
    """A recording stand-in for the tensorrt module (a mock): an engine whose "kernels"
    run on the stand-in GPU's stream and compute ``expected_outputs``."""

    TensorIOMode = Mode

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    def __init__(self, gpu: FakeCudart, version: str = "10.13.0") -> None:
        self.__version__ = version
        self.gpu = gpu
        self.deserialized: list[bytes] = []
        self.tensors = [
            (s.name, Mode.INPUT if s.is_input else Mode.OUTPUT, s.dtype.name, s.shape) for s in fcnx_specs()
        ]
        self.profile = (1, 4)
        fake = self

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                fake.deserialized.append(data)
                return FakeEngine(fake) if data == PLAN_BYTES else None

        self.Runtime = Runtime

    @staticmethod
    def nptype(trt_type: str) -> type:
        if trt_type == "bfloat16":
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(trt_type).type


class FakeEngine:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt
        self.by_name = {t[0]: t for t in trt.tensors}

    @property
    def num_io_tensors(self) -> int:
        return len(self.trt.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.trt.tensors[index][0]

    def get_tensor_mode(self, name: str) -> Mode:
        return self.by_name[name][1]

    def get_tensor_dtype(self, name: str) -> str:
        return self.by_name[name][2]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.by_name[name][3]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self.trt)


class FakeContext:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt, self.gpu = trt, trt.gpu
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.gpu.log.append(("set_input_shape", name, tuple(shape)))
        low, high = self.trt.profile
        if not low <= shape[0] <= high:
            return False
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.gpu.log.append(("set_tensor_address", name, address))
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int)
        self.gpu.log.append(("execute_async_v3", self.addresses["image"], stream_handle))
        shape, addresses, device = self.shape, dict(self.addresses), self.gpu.device
        assert shape is not None

        def run() -> None:  # the state captured at enqueue, like TensorRT
            n = int(np.prod(shape))
            batch = np.frombuffer(bytes(device[addresses["image"]][:n]), np.uint8).reshape(shape)
            for name, value in expected_outputs(batch).items():
                data = value.tobytes()
                device[addresses[name]][: len(data)] = data

        self.gpu.enqueue(stream_handle, run)
        return True


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCudart, FakeTensorRT]:
    """Install the stand-ins as ``tensorrt`` and ``cuda.bindings.runtime``."""
    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return cudart, trt


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(PLAN_BYTES)
    write_sidecar(path, make_sidecar())
    return path


def open_backend(path: Path) -> Any:
    from fcnx.runtime.backends.trt.backend import TrtBackend

    return TrtBackend(path)


# -- plain planning ----------------------------------------------------------------------------


def test_buffers_are_sized_at_the_profiles_max_batch() -> None:
    plan = plan_buffers(fcnx_specs(), make_sidecar("1:2:4"), "m.engine")
    assert plan.input.max_shape == (4, H, W, C) and plan.input.nbytes == 4 * H * W
    sizes = {t.name: (t.max_shape, t.nbytes) for t in plan.outputs}
    assert sizes == {"probs": ((4, H, W, 2), 4 * H * W * 2 * 4), "mask": ((4, H, W), 4 * H * W)}
    assert sum(t.nbytes for t in plan.tensors) == 4 * H * W * (1 + 8 + 1) and plan.output_names == [
        "probs",
        "mask",
    ]
    assert plan.input.nbytes_for(3) == 3 * H * W and plan.outputs[0].shape_for(3) == (3, H, W, 2)


def test_fixed_dims_must_match_the_sidecar_and_dynamic_ones_take_its_sizes() -> None:
    specs = [
        EngineTensor("image", True, U8, (4, -1, -1, 1)),
        EngineTensor("mask", False, U8, (4, -1, -1)),
    ]
    sidecar = dataclasses.replace(make_sidecar("4:4:4"), outputs=("mask",))
    plan = plan_buffers(specs, sidecar, "m.engine")
    assert plan.input.max_shape == (4, H, W, C) and plan.outputs[0].max_shape == (4, H, W)


def _replace(specs: list[EngineTensor], tensor: str, **changes: Any) -> list[EngineTensor]:
    return [dataclasses.replace(s, **changes) if s.name == tensor else s for s in specs]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (fcnx_specs()[1:], r"expected exactly one input tensor, the engine has \[\]"),
        ([*fcnx_specs(), EngineTensor("extra", True, U8, (-1, H, W, C))], "exactly one input tensor"),
        (
            _replace(fcnx_specs(), "image", name="input_1"),
            "input tensor is 'input_1', its sidecar says 'image'",
        ),
        (_replace(fcnx_specs(), "image", dtype=F32), "must be uint8 NHWC images, got float32"),
        (_replace(fcnx_specs(), "image", shape=(-1, H, 16, C)), r"axis 2 is 16, expected 8"),
        (_replace(fcnx_specs(), "image", shape=(-1, C, H, W)), r"axis 1 is 1, expected 8"),
        (_replace(fcnx_specs(), "image", shape=(-1, H, W)), "rank 3 .* expected rank 4"),
        (_replace(fcnx_specs(), "probs", dtype=np.dtype(np.float16)), "'probs' must be float32, got float16"),
        (_replace(fcnx_specs(), "mask", dtype=np.dtype(np.int64)), "'mask' must be uint8, got int64"),
        (
            _replace(fcnx_specs(), "probs", shape=(-1, H, W, 3)),
            r"'probs' \(N, H, W, K\) axis 3 is 3, expected 2",
        ),
        (
            _replace(fcnx_specs(), "mask", name="logits"),
            r"outputs are \['probs', 'logits'\], its sidecar says",
        ),
        (fcnx_specs()[:2], r"outputs are \['probs'\], its sidecar says \['probs', 'mask'\]"),
        (fcnx_specs()[:1], "no output tensors"),
    ],
)
def test_engines_that_are_not_what_fcnx_built_are_refused(specs: list[EngineTensor], message: str) -> None:
    with pytest.raises(BackendError, match=r"^dir/m\.engine: .*" + message):
        plan_buffers(specs, make_sidecar(), "dir/m.engine")


def test_rows_a_batch_runs_as() -> None:
    plan = plan_buffers(fcnx_specs(), make_sidecar("2:2:4"), "m.engine")
    assert [plan.rows_for(n) for n in (1, 2, 3, 4)] == [2, 2, 3, 4]
    with pytest.raises(ValueError, match=r"m\.engine: batch of 5 is over the engine's max batch 4 .*split"):
        plan.rows_for(5)


def test_host_array_is_a_writable_view_of_raw_memory() -> None:
    memory = ctypes.create_string_buffer(2 * 3 * 4)
    view = host_array(ctypes.addressof(memory), F32, (2, 3))
    view[:] = np.arange(6).reshape(2, 3)
    assert np.array_equal(np.frombuffer(memory.raw, np.float32), np.arange(6, dtype=np.float32))


class _Schedule:
    """Records what double_buffered asks for, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.slots = [Slot(i) for i in range(SLOTS)]

    def submit(self, slot: Slot, batch: np.ndarray) -> None:
        if batch.size and batch[0] < 0:
            raise ValueError("bad batch")
        slot.images = int(batch[0])
        self.log.append(f"submit {slot.images} -> slot {slot.index}")

    def collect(self, slot: Slot) -> dict[str, np.ndarray]:
        self.log.append(f"collect {slot.images} <- slot {slot.index}")
        return {"id": np.array([slot.images])}

    def drain(self) -> None:
        self.log.append("drain")

    def run(self, ids: list[int]) -> Generator[dict[str, np.ndarray], None, None]:
        batches = (np.array([i]) for i in ids)
        return double_buffered(batches, self.slots, self.submit, self.collect, self.drain)


def test_double_buffering_enqueues_the_next_batch_before_waiting_for_this_one() -> None:
    s = _Schedule()
    assert [int(r["id"][0]) for r in s.run([0, 1, 2, 3])] == [0, 1, 2, 3]
    assert s.log == [
        "submit 0 -> slot 0",
        "submit 1 -> slot 1",
        "collect 0 <- slot 0",
        "submit 2 -> slot 0",
        "collect 1 <- slot 1",
        "submit 3 -> slot 1",
        "collect 2 <- slot 0",
        "collect 3 <- slot 1",
    ]
    s = _Schedule()
    assert [int(r["id"][0]) for r in s.run([7])] == [7] and "drain" not in s.log
    assert list(_Schedule().run([])) == []


def test_double_buffering_drains_when_stopped_early_or_failing() -> None:
    s = _Schedule()
    stream = s.run([0, 1, 2])
    next(stream)
    stream.close()
    assert s.log[-1] == "drain"
    s = _Schedule()
    with pytest.raises(ValueError, match="bad batch"):
        list(s.run([0, 1, -1]))
    assert s.log[-1] == "drain"


# -- the backend against the stand-ins -------------------------------------------------------


def test_missing_sidecar_is_refused_before_tensorrt_deserializes(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    Path(str(engine_file) + ".json").unlink()
    with pytest.raises(
        EngineMismatch, match=r"model\.engine\.json: missing; every fcnx engine has this sidecar"
    ):
        open_backend(engine_file)
    assert gpu[1].deserialized == [] and gpu[0].log == []


@pytest.mark.parametrize(
    ("trt_version", "capability", "message"),
    [
        ("11.0.0", "8.9", r"built with TensorRT 10\.13\.0, this machine has 11\.0\.0"),
        ("10.13.0", "9.0", r"built for compute capability 8\.9 \(NVIDIA L4\), this GPU is 9\.0"),
    ],
)
def test_mismatched_engine_is_refused_before_tensorrt_deserializes(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path, trt_version: str, capability: str, message: str
) -> None:
    cudart, trt = gpu
    trt.__version__, cudart.capability = trt_version, capability
    with pytest.raises(
        EngineMismatch, match=message + r".*Rebuild with: fcnx export engine model\.onnx -o .*"
    ):
        open_backend(engine_file)
    assert trt.deserialized == [] and cudart.calls("cudaMalloc") == []


def test_same_capability_other_gpu_loads_with_a_warning(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    gpu[0].gpu = "NVIDIA RTX 4090"
    with open_backend(engine_file) as backend:
        assert len(backend.warnings) == 1 and "rebuild for best speed" in backend.warnings[0]


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            "tensorrt",
            'TensorRT is not installed: pip install "fcnx\\[gpu,tensorrt\\]" --extra-index-url https://pypi.nvidia.com',
        ),
        (
            "cuda.bindings",
            'cuda-python is not installed: pip install "fcnx\\[gpu,tensorrt\\]" --extra-index-url',
        ),
    ],
)
def test_missing_libraries_are_one_line_errors(
    gpu: tuple[FakeCudart, FakeTensorRT],
    engine_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    message: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendError, match=f"^{message}"):
        open_backend(engine_file)


def test_an_engine_tensorrt_cannot_deserialize_says_rebuild(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    engine_file.write_bytes(b"corrupt")
    with pytest.raises(
        BackendError, match=r"model\.engine: TensorRT 10\.13\.0 could not deserialize it.*Rebuild"
    ):
        open_backend(engine_file)
    assert gpu[1].deserialized == [b"corrupt"]


def test_unexpected_engine_tensors_are_refused_before_allocating(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, trt = gpu
    trt.tensors[0] = ("image", Mode.INPUT, "float32", (-1, H, W, C))
    with pytest.raises(BackendError, match=r"model\.engine: input 'image' must be uint8"):
        open_backend(engine_file)
    trt.tensors[0] = ("image", Mode.INPUT, "bfloat16", (-1, H, W, C))
    with pytest.raises(
        BackendError, match=r"model\.engine: tensor 'image' has type bfloat16, which has no numpy"
    ):
        open_backend(engine_file)
    assert cudart.calls("cudaMalloc") == [] and cudart.calls("cudaMallocHost") == []


def test_backend_identity_and_buffers(gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    assert isinstance(backend, Backend)
    assert backend.name == "trt" and backend.provider == "TensorRT 10.13.0" and backend.warnings == []
    assert backend.max_batch == 4 and not backend.fixed_batch and backend.input_hw == (H, W)
    assert backend.output_names == ["probs", "mask"]
    assert backend.card.classes == ("background", "foreground")
    per_slot = [4 * H * W, 4 * H * W * 2 * 4, 4 * H * W]  # image, probs, mask at max batch 4
    assert [c[1] for c in cudart.calls("cudaMallocHost")] == per_slot * SLOTS
    assert [c[1] for c in cudart.calls("cudaMalloc")] == per_slot * SLOTS
    assert len(cudart.calls("cudaEventCreate")) == 3 * SLOTS  # uploaded, computed, done
    assert cudart.calls("cudaStreamCreateWithFlags") == [
        ("cudaStreamCreateWithFlags", cudart.cudaStreamNonBlocking)
    ] * len(STREAMS)  # upload, compute, download
    backend.close()


def test_infer_runs_the_actual_batch_and_returns_copies(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    first = images(3, seed=0)
    out = backend.infer(first)
    assert ("set_input_shape", "image", (3, H, W, C)) in cudart.log
    assert [c[2] for c in cudart.calls("H2D")] == [3 * H * W]
    assert sorted(c[2] for c in cudart.calls("D2H")) == [3 * H * W, 3 * H * W * 2 * 4]
    want = expected_outputs(first)
    assert out["mask"].shape == (3, H, W) and out["probs"].shape == (3, H, W, 2)
    assert out["mask"].dtype == np.uint8 and out["probs"].dtype == np.float32
    assert np.array_equal(out["mask"], want["mask"]) and np.allclose(out["probs"], want["probs"])
    kept = {k: v.copy() for k, v in out.items()}
    backend.infer(images(4, seed=1))  # reuses the same pinned buffers
    assert all(np.array_equal(out[k], kept[k]) for k in out), (
        "outputs must be copies, not pinned-memory views"
    )
    assert all(v.flags.owndata for v in out.values())
    backend.close()


def test_a_batch_under_the_profile_minimum_runs_padded_and_comes_back_sliced(
    gpu: tuple[FakeCudart, FakeTensorRT], tmp_path: Path
) -> None:
    cudart, trt = gpu
    trt.profile = (2, 4)
    path = tmp_path / "m.engine"
    path.write_bytes(PLAN_BYTES)
    write_sidecar(path, make_sidecar("2:4:4"))
    with open_backend(path) as backend:
        one = images(1, seed=3)
        out = backend.infer(one)
    assert ("set_input_shape", "image", (2, H, W, C)) in cudart.log
    assert out["mask"].shape == (1, H, W) and np.array_equal(out["mask"], expected_outputs(one)["mask"])


def test_bad_batches_raise_before_any_work(gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    with pytest.raises(ValueError, match=r"batch of 5 is over the engine's max batch 4 .*split it"):
        backend.infer(images(5, seed=0))
    with pytest.raises(ValueError, match=r"model\.engine: input axis 2 must be 8, got 16"):
        backend.infer(np.zeros((1, H, 16, C), np.uint8))
    with pytest.raises(ValueError, match="expected a uint8 batch"):
        backend.infer(np.zeros((1, H, W, C), np.float32))
    assert cudart.calls("H2D") == [] and cudart.calls("execute_async_v3") == []
    empty = backend.infer(np.zeros((0, H, W, C), np.uint8))
    assert empty["mask"].shape == (0, H, W) and empty["probs"].shape == (0, H, W, 2)
    backend.close()


def test_infer_stream_matches_infer_and_overlaps_copies_with_compute(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    batches = [images(n, seed=i) for i, n in enumerate((4, 4, 3, 1))]
    single = [backend.infer(b) for b in batches]
    cudart.log.clear()
    streamed = list(backend.infer_stream(batches))
    assert len(streamed) == len(batches)
    for got, want in zip(streamed, single):
        assert all(np.array_equal(got[k], want[k]) for k in ("probs", "mask"))
    # batch i+1's upload is enqueued before batch i is waited for
    order = [e[0] for e in cudart.log if e[0] in ("H2D", "cudaEventSynchronize")]
    assert order.count("H2D") == 4 and order.count("cudaEventSynchronize") == 4
    assert order.index("cudaEventSynchronize") > 1  # two batches in flight before the first wait
    uploads = [e[1] for e in cudart.calls("H2D")]
    assert uploads[0] == uploads[2] != uploads[1] == uploads[3], "the two slots alternate"
    assert cudart.calls("cudaStreamSynchronize") == []
    backend.close()


def test_infer_stream_stopped_early_waits_and_leaves_the_backend_usable(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    stream = backend.infer_stream(images(2, seed=i) for i in range(5))
    next(stream)
    with pytest.raises(BackendError, match="an infer_stream\\(\\) is running"):
        backend.infer(images(1, seed=0))
    stream.close()
    assert cudart.log[-1][0] == "cudaStreamSynchronize" and all(not w for w in cudart.streams.values())
    again = images(2, seed=9)
    assert np.array_equal(backend.infer(again)["mask"], expected_outputs(again)["mask"])
    backend.close()


def test_close_frees_everything_once(gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    backend.infer(images(2, seed=0))
    host, device = set(cudart.host), set(cudart.device)
    backend.close()
    backend.close()
    assert sorted(c[1] for c in cudart.calls("cudaFreeHost")) == sorted(host)
    assert sorted(c[1] for c in cudart.calls("cudaFree")) == sorted(device)
    assert len(cudart.calls("cudaEventDestroy")) == 3 * SLOTS
    assert len(cudart.calls("cudaStreamDestroy")) == len(STREAMS)
    assert cudart.host == {} and cudart.device == {}
    with pytest.raises(BackendError, match=r"model\.engine: this trt backend is closed"):
        backend.infer(images(1, seed=0))


def test_closing_under_a_running_stream_stops_it_cleanly(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, _ = gpu
    backend = open_backend(engine_file)
    stream = backend.infer_stream(images(2, seed=i) for i in range(5))
    next(stream)
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        next(stream)
    assert cudart.host == {} and cudart.device == {} and cudart.streams == {}


def test_a_failed_allocation_frees_what_was_allocated(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    cudart, _ = gpu
    cudart.fail["cudaMalloc"] = 4  # the second slot's first device buffer
    with pytest.raises(BackendError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        open_backend(engine_file)
    assert cudart.host == {} and cudart.device == {} and cudart.streams == {}
    assert len(cudart.calls("cudaFreeHost")) == 4 and len(cudart.calls("cudaFree")) == 3


# -- the real thing --------------------------------------------------------------------------


@pytest.mark.tensorrt
def test_real_engine_masks_match_onnxruntime(tiny_onnx: Path, tmp_path: Path) -> None:
    """Build an engine from the tiny ONNX, run it natively, compare with onnxruntime."""
    from fcnx.export.engine import EngineBuildConfig, build_engine
    from fcnx.runtime.backends.ort import OrtBackend
    from fcnx.runtime.backends.trt.backend import TrtBackend

    engine = tmp_path / "model.engine"
    build_engine(EngineBuildConfig(onnx=str(tiny_onnx), out=str(engine), batch="1:2:4"))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (n, 64, 64, 1), dtype=np.uint8) for n in (4, 3, 1)]
    reference = OrtBackend(tiny_onnx)
    with TrtBackend(engine) as backend:
        assert backend.provider.startswith("TensorRT ") and backend.max_batch == 4
        streamed = list(backend.infer_stream(batches))
        for batch, got in zip(batches, streamed):
            want = reference.infer(batch)
            assert np.array_equal(backend.infer(batch)["mask"], got["mask"])
            # FP32 engine vs onnxruntime: TensorRT may use TF32 kernels, so probabilities agree
            # closely, and masks agree everywhere except where the two top classes nearly tie
            assert np.max(np.abs(got["probs"] - want["probs"])) <= 5e-3
            top2 = np.sort(want["probs"], axis=-1)[..., -2:]
            margin = top2[..., 1] - top2[..., 0]
            assert np.all(margin[got["mask"] != want["mask"]] < 1e-2)
    reference.close()


def test_a_driver_too_old_for_cuda_python_says_so_and_what_to_do() -> None:
    from fcnx.runtime.backends.trt.cuda import GpuUnavailable, gpu_identity

    class Error:
        def __init__(self, name: str, value: int) -> None:
            self.name, self.value = name, value

    class OldDriver:
        def cudaGetDeviceProperties(self, device: int) -> tuple[Error, None]:
            return Error("cudaErrorInsufficientDriver", 35), None

        def cudaDriverGetVersion(self) -> tuple[Error, int]:
            return Error("cudaSuccess", 0), 12040

        def cudaRuntimeGetVersion(self) -> tuple[Error, int]:
            return Error("cudaSuccess", 0), 13000

    with pytest.raises(
        GpuUnavailable, match=r"driver is too old: it supports CUDA 12\.4, this cuda-python is CUDA 13\.0"
    ):
        gpu_identity(OldDriver())


def test_uploads_compute_and_downloads_run_on_their_own_streams_linked_by_events(
    gpu: tuple[FakeCudart, FakeTensorRT], engine_file: Path
) -> None:
    """As trtexec does: batch i+1's upload never queues behind batch i's compute or
    download; the compute waits for its upload, the download for its compute."""
    cudart, _ = gpu
    backend = open_backend(engine_file)
    upload, compute, download = (int(backend._streams[role]) for role in STREAMS)
    assert len({upload, compute, download}) == 3
    cudart.log.clear()
    list(backend.infer_stream([images(4, seed=0), images(4, seed=1)]))
    ran_on = {entry[2] for entry in cudart.log if entry[0] == "execute_async_v3"}
    waits = [(entry[1]) for entry in cudart.log if entry[0] == "cudaStreamWaitEvent"]
    assert ran_on == {compute} and waits == [compute, download, compute, download]
    backend.close()
