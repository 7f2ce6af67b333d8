"""The served model: KServe's ``Model`` over fcnx's Segmenter, so a served mask is
``fcnx predict``'s mask (same backend, same tiling, same argmax), batched across requests."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ..backends.registry import load
from ..predict.plans import Output
from ..predict.segmenter import DYNAMIC_TILE, Segmenter
from . import metrics
from .batcher import Batcher, warm_batches
from .tensors import MASK, OUTPUT_TYPES, PROBS, BadRequest, Signature

# Fault injection for the tests, like FCNX_KILL_AT: the load waits until this file exists, so a
# test sees the server listening and not ready for as long as it needs
LOAD_GATE = "FCNX_SERVE_LOAD_GATE"


class SegmentationModel(Model):
    def __init__(
        self,
        name: str,
        path: Path,
        backend: str = "auto",
        max_batch: int = 8,
        batch: int | None = None,
        max_queue_delay: float = 0.002,
        max_pixels: int = 1 << 28,
        tile: str = "auto",
    ) -> None:
        super().__init__(name)
        self.path = path
        self.backend_name = backend
        self.max_batch = max_batch  # images the batcher gathers into one Segmenter call
        self.batch = batch  # images per backend call within it (None: the backend's preferred)
        self.max_queue_delay = max_queue_delay
        self.max_pixels = max_pixels
        self.tile = tile
        self.ready = False  # True once loaded and warmed (readiness)
        self.error: str | None = None  # why loading failed
        self.segmenter: Segmenter | None = None
        self.batcher: Batcher | None = None
        self.signature: Signature | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> bool:
        """KServe calls this for a model that is not ready; loading runs once, in
        ``load_and_warm`` (started by the server), so here it only reports."""
        return self.ready

    def load_and_warm(self) -> None:
        """Load the backend, build the Segmenter and run each engine batch size once (engines
        compile and allocate on first use; OpenVINO compiles one static shape per batch size
        and pads a batch to the next compiled one) and one full stream, then report ready.
        The batcher gathers up to ``max_batch`` images per Segmenter call, which streams them
        through the engine ``batch`` at a time with its requests in flight (OpenVINO's
        streams each take a share of the cores: one call at a time would leave the rest idle)."""
        gate = os.environ.get(LOAD_GATE)
        while gate and not os.path.exists(gate):
            time.sleep(0.05)
        backend = load(self.path, self.backend_name)
        segmenter = Segmenter(backend, batch_size=self.batch, tile=self.tile)
        self.signature = Signature.of(backend.card, backend.output_names, self.max_pixels)
        h, w = segmenter.input_hw or (backend.card.input_height or DYNAMIC_TILE[0],
                                      backend.card.input_width or DYNAMIC_TILE[1])  # fmt: skip
        image = np.zeros((h, w, backend.card.input_channels), np.uint8)
        for count in [*warm_batches(segmenter.batch_size), self.max_batch]:  # the engine's shapes, a stream
            segmenter.segment([image] * count, probs=PROBS in self.signature.outputs)
        self.segmenter = segmenter
        self.batcher = Batcher(self._run, self.max_batch, self.max_queue_delay, self._observe)
        self.ready = True

    def _run(self, images: Any, probs: bool) -> list[Output]:
        assert self.segmenter is not None
        return self.segmenter.segment(images, probs=probs)

    def _observe(self, queued: list[float], compute: float, size: int) -> None:
        for seconds in queued:
            metrics.QUEUE_SECONDS.labels(self.name).observe(seconds)
        metrics.COMPUTE_SECONDS.labels(self.name).observe(compute)
        metrics.BATCH_SIZE.labels(self.name).observe(size)
        metrics.IMAGES.labels(self.name).inc(size)

    def stop(self) -> None:
        self.ready = False

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.segmenter is not None:
            self.segmenter.backend.close()

    # -- metadata ------------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict]:
        return self.signature.metadata()[0] if self.signature else []

    def get_output_types(self) -> list[dict]:
        return self.signature.metadata()[1] if self.signature else []

    def describe(self) -> dict[str, Any]:
        """The model metadata with what the protocol leaves open: the platform (the engine that
        runs it) and, under ``parameters``, the model card and the batching settings."""
        inputs, outputs = self.get_input_types(), self.get_output_types()
        described: dict[str, Any] = {"name": self.name, "versions": ["1"], "platform": "", "inputs": inputs,
                                     "outputs": outputs}  # fmt: skip
        if self.segmenter is not None:
            backend = self.segmenter.backend
            described["platform"] = f"fcnx_{backend.name}"
            described["parameters"] = {
                "card": backend.card.to_dict(),
                "provider": backend.provider,
                "max_batch": self.max_batch,
                "batch": self.segmenter.batch_size,
                "max_queue_delay_ms": self.max_queue_delay * 1000,
                "fit": self.segmenter.describe(),
            }
        return described

    def triton_config(self) -> dict[str, Any]:
        """The model as Triton's model-configuration extension shows it (``GET
        /v2/models/NAME/config``, tritonclient's ``get_model_config``): tensors without the
        batch axis, the batcher's settings, the card as a string parameter."""
        assert self.signature is not None and self.segmenter is not None
        kinds = {"UINT8": "TYPE_UINT8", "FP32": "TYPE_FP32"}
        inputs, outputs = self.signature.metadata()
        return {
            "name": self.name,
            "platform": f"fcnx_{self.segmenter.backend.name}",
            "max_batch_size": self.max_batch,
            "input": [
                {"name": t["name"], "data_type": kinds[t["datatype"]], "dims": t["shape"][1:]} for t in inputs
            ],
            "output": [
                {"name": t["name"], "data_type": kinds[t["datatype"]], "dims": t["shape"][1:]}
                for t in outputs
            ],
            "dynamic_batching": {"max_queue_delay_microseconds": int(self.max_queue_delay * 1e6)},
            "parameters": {"fcnx_card": {"string_value": self.segmenter.backend.card.to_json()}},
        }

    # -- inference -----------------------------------------------------------------------------------

    def _parse(self, request: InferRequest) -> tuple[np.ndarray, tuple[str, ...]]:
        assert self.signature is not None
        inputs = request.inputs or []
        names = [i.name for i in inputs]
        first = inputs[0] if inputs else None
        self.signature.check_input(names, first.datatype if first else "", list(first.shape) if first else [])
        assert first is not None
        images = self.signature.decode(list(first.shape), first.as_numpy)
        wanted = [o.name for o in request.request_outputs] if request.request_outputs else None
        return images, self.signature.requested(wanted)

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            metrics.REQUESTS.labels(self.name, "bad_request").inc()
            raise InvalidInput("expected an Open Inference Protocol (v2) infer request")
        started = time.perf_counter()
        try:
            images, outputs = self._parse(payload)
        except BadRequest as exc:
            metrics.REQUESTS.labels(self.name, "bad_request").inc()
            raise InvalidInput(str(exc)) from None
        assert self.batcher is not None
        probs = PROBS in outputs
        try:
            results = await asyncio.gather(*(self.batcher.submit(image, probs) for image in images))
        except Exception as exc:
            metrics.REQUESTS.labels(self.name, "error").inc()
            raise InferenceError(f"{type(exc).__name__}: {exc}") from None
        arrays = {MASK: lambda: np.stack([r.mask for r in results]),
                  PROBS: lambda: np.stack([_probs(r) for r in results]).astype(np.float32, copy=False)}  # fmt: skip
        infer_outputs = []
        for name in outputs:
            array = arrays[name]()
            output = InferOutput(name, list(array.shape), OUTPUT_TYPES[name][0])
            output.set_data_from_numpy(array, binary_data=True)  # bytes; KServe makes JSON lists if asked
            infer_outputs.append(output)
        metrics.REQUESTS.labels(self.name, "ok").inc()
        metrics.REQUEST_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=infer_outputs,
            from_grpc=payload.from_grpc,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def _probs(output: Output) -> np.ndarray:
    assert output.probs is not None  # asked for, so computed
    return output.probs
