"""KServe's ModelServer (REST on uvicorn/FastAPI, gRPC on grpcio, Prometheus ``/metrics``)
serving one SegmentationModel, with what fcnx adds:

- readiness: the server listens at once, but ``/v2/health/ready`` and the model's ready
  stay false until the model is loaded and warmed (a load balancer sends nothing before);
- REST binary tensors decoded straight into NumPy: KServe 0.21 turns a binary input into a
  Python list and back (145 ms for one 512x512 image), so the infer route is served here,
  through KServe's own dataplane, errors and encoders, for binary and JSON bodies alike;
- the model metadata on REST carries the model card (``parameters.card``), and Triton's
  model-configuration extension (``/v2/models/NAME/config``) is answered too;
- SIGTERM: readiness goes false, new infer requests are refused (503), the requests
  already in flight finish (up to ``--grace-seconds``), then both servers stop: exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import kserve.model_server as ks
import orjson
from fastapi import Request, Response
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from ..card_json import one_line
from .config import ServeConfig
from .model import SegmentationModel

logger = logging.getLogger("fcnx.serve")
JSON_LENGTH = "inference-header-content-length"


class _OneLineClientErrors(logging.Filter):
    """KServe logs every 400, 404 and 503 with its traceback; a bad request, an unknown model or
    a readiness probe before warm-up is expected, not a server fault: one INFO line does."""

    def __init__(self, *expected: type[Exception]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.expected):
            record.msg, record.args, record.exc_info = f"{type(error).__name__}: {error}", (), None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def serve(config: ServeConfig, log_level: str = "WARNING") -> int:
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, not ours to fix
    model = SegmentationModel(
        config.model_name(),
        Path(config.model),
        backend=config.backend,
        max_batch=config.max_batch,
        batch=config.batch,
        max_queue_delay=config.max_queue_delay_ms / 1000,
        max_pixels=config.max_pixels,
        tile=config.tile,
    )
    stopping = threading.Event()

    class ReadyDataPlane(DataPlane):
        async def ready(self) -> bool:  # the server is ready when its model is (KServe says always)
            return model.ready  # stop() sets it false first

    class Server(ks.ModelServer):
        def stop(self, sig: int) -> None:
            if stopping.is_set():
                return
            stopping.set()
            model.ready = False  # readiness false; new infer requests: 503
            pending = model.batcher.pending if model.batcher else 0
            print(
                f"fcnx serve: stopping: {pending} image(s) in flight finish first",
                file=sys.stderr,
                flush=True,
            )

            async def finish() -> None:
                if model.batcher is not None:
                    await model.batcher.drain(config.grace_seconds)
                await asyncio.sleep(0.05)  # the last responses leave
                if self._rest_server is not None:
                    self._rest_server._server.should_exit = True
                super(Server, self).stop(sig)

            asyncio.get_running_loop().create_task(finish())

    ks.args.grpc_max_receive_message_length = ks.args.grpc_max_send_message_length = max(
        1 << 23, 6 * config.max_pixels + (1 << 20)
    )  # a whole image (uint8 in) and its mask + probs (fp32, 2 classes) out, in one message
    server = Server(
        http_port=config.http_port or 0,
        grpc_port=config.grpc_port or 0,
        enable_grpc=bool(config.grpc_port),
        enable_docs_url=False,
        enable_latency_logging=False,
        grace_period=int(config.grace_seconds) + 1,
    )
    # after the ModelServer: it configures KServe's loggers (handlers, INFO) when it is created
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access", "fcnx.serve"):
        logging.getLogger(name).setLevel(log_level.upper())
    logging.getLogger("kserve").addFilter(
        _OneLineClientErrors(InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady)
    )
    server.dataplane = ReadyDataPlane(model_registry=server.registered_models)
    server.register_model(model)  # registered not ready: readiness false until warm
    dataplane = server.dataplane

    async def metadata(model_name: str) -> dict[str, Any]:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return model.describe()

    async def triton_config(model_name: str) -> dict[str, Any]:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        if not model.ready:
            raise ModelNotReady(model_name)
        return model.triton_config()

    async def infer(model_name: str, request: Request) -> Response:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        if not model.ready:
            raise ModelNotReady(model_name)
        body = await request.body()
        infer_request = _decode(body, request.headers.get(JSON_LENGTH), model_name)
        headers = dict(request.headers)
        response, response_headers = await dataplane.infer(model_name, infer_request, headers)
        encoded, encoded_headers = dataplane.encode(model_name, response, headers, {})
        response_headers.update(encoded_headers)
        for key in ("content-length", "content-type"):
            response_headers.pop(key, None)
        if isinstance(encoded, bytes):
            return Response(encoded, media_type="application/octet-stream", headers=response_headers)
        return Response(orjson.dumps(encoded), media_type="application/json", headers=response_headers)

    # before KServe registers its own routes at start: these are matched first
    ks.app.add_api_route("/v2/models/{model_name}", metadata, methods=["GET"])
    ks.app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])
    ks.app.add_api_route("/v2/models/{model_name}/config", triton_config, methods=["GET"])

    def load() -> None:
        try:
            model.load_and_warm()
            logger.info(
                "fcnx serve: %s ready (%s)",
                model.name,
                model.segmenter.backend.provider if model.segmenter else "",
            )
            print(f"fcnx serve: {model.name} ready: {_urls(config)}", file=sys.stderr, flush=True)
        except Exception as exc:
            print(f"error: {config.model}: {one_line(exc)}", file=sys.stderr, flush=True)
            model.error = one_line(exc)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=load, name="fcnx-load", daemon=True).start()
    server.start([])
    model.close()
    if not model.error:
        print("fcnx serve: stopped", file=sys.stderr, flush=True)
    return 1 if model.error else 0


def _urls(config: ServeConfig) -> str:
    urls = []
    if config.http_port:
        urls.append(f"http://0.0.0.0:{config.http_port}/v2/models/{config.model_name()}")
    if config.grpc_port:
        urls.append(f"grpc://0.0.0.0:{config.grpc_port}")
    return ", ".join(urls)


def _decode(body: bytes, json_length: str | None, model_name: str) -> InferRequest:
    """An Open Inference Protocol REST body (JSON, or JSON + binary tensors) as KServe's
    InferRequest, the binary inputs kept as bytes (NumPy reads them without a copy)."""
    try:
        size = len(body) if json_length is None else int(json_length)
        if not 0 < size <= len(body):
            raise ValueError(f"the {JSON_LENGTH} header says {size} bytes, the body has {len(body)}")
        request = orjson.loads(body[:size])
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise ValueError("the JSON has no 'inputs' list")
        inputs: list[InferInput] = []
        raws: list[bytes | None] = []  # each input's binary bytes, or None for JSON data
        offset = size
        for spec in request["inputs"]:
            params = spec.get("parameters") or {}
            tensor = InferInput(spec["name"], list(spec["shape"]), spec["datatype"], parameters=params)
            if "binary_data_size" in params:
                n = int(params["binary_data_size"])
                if n < 0 or offset + n > len(body):
                    raise ValueError(f"input {spec['name']!r}: binary_data_size {n} runs past the body's end")
                raws.append(body[offset : offset + n])
                offset += n
            elif "data" in spec:
                tensor.data = spec["data"]
                raws.append(None)
            else:
                raise ValueError(f"input {spec['name']!r} has neither 'data' nor binary_data_size")
            inputs.append(tensor)
        if offset != len(body):
            raise ValueError(f"{len(body) - offset} bytes after the last binary tensor")
        outputs = None
        if request.get("outputs") is not None:
            outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in request["outputs"]]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidInput(f"request body: {one_line(exc)}") from None
    for tensor, raw in zip(inputs, raws):
        if raw is not None:
            tensor._raw_data = raw  # what KServe's own decoders set: as_numpy reads it by np.frombuffer
    return InferRequest(model_name, inputs, request_id=request.get("id"), parameters=request.get("parameters"),
                        request_outputs=outputs)  # fmt: skip
