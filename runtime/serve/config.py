"""``fcnx serve``'s configuration, one field per flag."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..flags import opt

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ServeConfig:
    model: str = opt("", "model.onnx / .xml / .engine, a .keras run, or a DEPLOY/ folder", cli=False)
    name: str = opt("", "the model's name in the protocol (default: the artifact's file stem)")
    http_port: int = opt(8080, "REST port (0: none)")
    grpc_port: int = opt(8081, "gRPC port (0: none)")
    backend: str = opt("auto", "engine to run on (a DEPLOY/ folder: its winner)")
    max_batch: int = opt(8, "most images of concurrent requests batched into one Segmenter call")
    batch: int | None = opt(
        None, "images per engine call within it (default: the deploy's tuned batch, else 8)"
    )
    max_queue_delay_ms: float = opt(2.0, "how long a request waits for others to share its batch")
    max_pixels: int = opt(1 << 28, "refuse images with more pixels than this (400)")
    tile: str = opt("auto", "as fcnx predict --tile: auto, off or HxW")
    grace_seconds: float = opt(30.0, "SIGTERM: how long in-flight requests get to finish")

    def __post_init__(self) -> None:
        for port in (self.http_port, self.grpc_port):
            if not 0 <= port < 65536:
                raise ValueError(f"ports are 0..65535, got {port}")
        if not self.http_port and not self.grpc_port:
            raise ValueError("--http-port and --grpc-port are both 0: nothing would listen")
        if self.max_batch < 1 or (self.batch is not None and self.batch < 1):
            raise ValueError(
                f"--max-batch and --batch must be at least 1, got {self.max_batch} and {self.batch}"
            )
        if self.max_queue_delay_ms < 0 or self.max_pixels < 1 or self.grace_seconds < 0:
            raise ValueError("--max-queue-delay-ms and --grace-seconds must be >= 0, --max-pixels >= 1")
        if self.name and not _NAME.fullmatch(self.name):
            raise ValueError(f"--name {self.name!r}: use letters, digits, '_', '-' and '.'")

    def model_name(self) -> str:
        """``--name``, else the artifact's file stem (a DEPLOY/ folder: the folder's name)."""
        if self.name:
            return self.name
        path = Path(self.model.rstrip("/"))
        stem = path.name if path.is_dir() else path.name.split(".")[0]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"
