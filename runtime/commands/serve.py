"""fcnx serve MODEL|DEPLOY/: the model behind the Open Inference Protocol (KServe v2, what
Triton speaks) on REST and gRPC, so Triton's tritonclient, KServe clients and
``fcnx bench --url`` work against it unchanged. Concurrent requests are batched
(--max-batch, --max-queue-delay-ms); /v2/health/ready turns true once the model is loaded
and warmed; Prometheus metrics on /metrics; SIGTERM lets requests in flight finish.

  fcnx serve DEPLOY/ --http-port 8080 --grpc-port 8081
  curl localhost:8080/v2/models/DEPLOY            # metadata, with the model card
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fcnx.runtime.flags import add_dataclass_flags, dataclass_from_args
from fcnx.runtime.serve.config import ServeConfig


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="model.onnx / .xml / .engine, a .keras run folder, or a DEPLOY/ folder")
    add_dataclass_flags(parser, ServeConfig)
    parser.add_argument("--log-level", default="WARNING", help="the server's log level (default: WARNING)")
    return parser


def run(args: argparse.Namespace) -> int:
    config = dataclass_from_args(ServeConfig, args, model=args.model)
    # gRPC's own INFO lines (its fork handlers when a library starts a subprocess beside the
    # server) stay off stderr, read by gRPC when it loads; FCNX_DEBUG=1 or a user's level keeps them
    if not os.environ.get("FCNX_DEBUG"):
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    argv, sys.argv = sys.argv, sys.argv[:1]  # KServe parses sys.argv when imported: none of fcnx's flags
    try:
        from fcnx.runtime.serve.server import serve
    finally:
        sys.argv = argv
    return serve(config, args.log_level)
