"""The one ``fcnx`` command.

Subcommands are named here by module path and imported only when called, so the
runtime never loads TensorFlow for ``fcnx --help``, and a deploy box without the
``train`` extra gets the pip line to run instead of a traceback. Each command module
exposes ``build_parser(prog) -> ArgumentParser`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
import time

# OpenCV refuses images over 2^30 pixels unless this is set before it is loaded (it reads
# it once, when the library loads); fcnx's own --max-pixels guard, checked on the header,
# is the limit that applies. The command sets it; library use leaves the environment alone.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))

from .backends.base import BackendError, MissingExtra  # after the environment: loads no OpenCV

# name -> (module, extra that provides its libraries, one-line help)
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "demo": (
        "fcnx.export.commands.demo",
        "demo",
        "the whole product on synthetic data: train, export + parity, predict, bench, report.html",
    ),
    "synth": ("fcnx.train.commands.synth", None, "write a synthetic EM-like image/label dataset"),
    "train": ("fcnx.train.commands.train", "train", "train an FCN on an image/label folder"),
    "evaluate": ("fcnx.train.commands.evaluate", "train", "mIoU, per-class IoU, accuracy, Dice of a model"),
    "export": (
        "fcnx.export.commands.export",
        "export",
        "Keras -> ONNX (FP32/FP16/INT8, parity-checked) -> TensorRT engine -> Triton repository",
    ),
    "parity": ("fcnx.export.commands.parity", "export", "compare exported artifacts with the Keras model"),
    "deploy": (
        "fcnx.export.commands.deploy",
        "export",
        "the fastest engine this machine runs within a quality budget, proven on your images: DEPLOY/",
    ),
    "predict": (
        "fcnx.runtime.commands.predict",
        None,
        "segment folders of images: masks, overlays, resumable",
    ),
    "info": ("fcnx.runtime.commands.info", None, "a model's card, inputs/outputs, and where it can run here"),
    "bench": (
        "fcnx.runtime.commands.bench",
        None,
        "latency/throughput of models x backends x batches, side by side",
    ),
    "serve": (
        "fcnx.runtime.commands.serve",
        "serve",
        "the model on the Open Inference Protocol (REST + gRPC, what Triton speaks), batched",
    ),
    "report": ("fcnx.runtime.commands.report", "report", "one self-contained HTML page from what fcnx wrote"),
}

OPTIONAL_LIBRARIES = {
    "tensorflow",
    "keras",
    "tensorboard",
    "tf2onnx",
    "onnx",
    "onnxconverter_common",
    "jinja2",
    "matplotlib",
    "onnxruntime",
    "kserve",
    "tritonclient",
    "mlperf_loadgen",
    "prometheus_client",
}

# the extra that brings a library, for commands that need no extra of their own (fcnx bench --url)
LIBRARY_EXTRAS = {"tritonclient": "serve", "mlperf_loadgen": "serve", "matplotlib": "bench"}

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class CommandError(Exception):
    """An expected failure: printed as one message, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnx",
        description="Keras FCN semantic segmentation, from training to a fast deployed engine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<10} {text}" for name, (_, _, text) in COMMANDS.items())
        + "\n\nRun 'fcnx COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def _version() -> str:
    from . import __version__

    return f"fcnx {__version__}"


def _missing_extra(exc: ModuleNotFoundError, command: str, extra: str | None) -> CommandError | None:
    root = (exc.name or "").split(".")[0]
    if root not in OPTIONAL_LIBRARIES:
        return None
    need = extra or LIBRARY_EXTRAS.get(root, "all")
    return CommandError(f'fcnx {command} needs {root}, which is not installed: pip install "fcnx[{need}]"', 2)


def _quiet_process() -> None:
    """What the ``fcnx`` command (not the library) sets for its own process: OpenCV's
    warnings ("[ WARN ] ... PNG input buffer is incomplete") stay out of stderr, since fcnx
    records every bad file itself, with its name and the reason; so do Pillow's about the
    corrupt headers it reads for fcnx's size check. And a SIGTERM cleans up like Ctrl-C."""
    import warnings

    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # "Corrupt EXIF data" etc.
    for stream in (sys.stdout, sys.stderr):  # a name of any bytes never stops a print
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    if threading.current_thread() is threading.main_thread():
        # `kill PID` (SIGTERM) unwinds like Ctrl-C, so temp files are removed and the summary
        # written on the way out; only SIGKILL skips that, and the next run cleans up after it
        signal.signal(signal.SIGTERM, _terminate)


class Terminated(KeyboardInterrupt):
    """A SIGTERM: handled like Ctrl-C, with the exit status 128 + 15."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


# After an interrupt, how long threads still working (a reader inside a slow decode, a
# writer finishing its file) get before the process leaves without them: every file is
# written atomically, so what one leaves is a temp the next run removes.
THREAD_GRACE_SECONDS = 2.0


def _leave_promptly(code: int) -> None:
    """Exit now when threads of an interrupted run would hold the exit up (Python joins
    every worker thread at exit, however long its task takes)."""
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(
        t.is_alive() and not t.daemon and t is not threading.current_thread() for t in threading.enumerate()
    ):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# TensorFlow's C++ logging (absl): INFO and WARNING lines around every graph conversion and
# input pipeline (grappler's "Starting new session", devices.cc's "Number of eligible GPUs",
# tf.data's "Memory patch applied"). TensorFlow reads this level from the environment, so the
# command sets it before any subcommand is imported (the processes it starts inherit it);
# ERROR and FATAL lines still print. FCNX_DEBUG=1 leaves it unset; a level the user set is kept.
TF_LOG_LEVEL = ("TF_CPP_MIN_LOG_LEVEL", "2")

# What the level cannot stop, dropped line by line by the filter below: what TensorFlow prints
# while its libraries load, before absl::InitializeLog() (oneDNN, the CUDA probes, the CPU
# instructions), whatever the level says, and absl lines of anything that ignores or resets
# it. Matched by their shape (an absl INFO/WARNING line), not one pattern per message, plus the
# ERROR lines every start prints on a machine without a usable GPU. Anything else passes:
# errors, tracebacks, fcnx's own output. FCNX_DEBUG=1 turns the filter off.
TF_NOISE = re.compile(
    r"^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] "  # I0000 00:00:1796598063.08 16331 port.cc:153]
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^To enable the following instructions: "  # the second line of cpu_feature_guard.cc's INFO
    r"|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)

# The commands that can load TensorFlow: a training or export extra, or a .keras model opened
# through the keras backend (info, bench). Their stderr goes through the filter. fcnx predict
# opens .keras models too, but its progress bar needs stderr to be the terminal (behind the
# filter's pipe it would turn itself off), so it has the level alone: what TensorFlow prints
# while it loads still shows there.
TF_COMMANDS = frozenset({"demo", "train", "evaluate", "export", "parity", "deploy", "info", "bench"})


class NoiseFilter:
    """While open, fd 2 is a pipe; a thread copies each line to the real stderr unless it
    matches ``pattern``. Line-buffered, so only for commands without \\r progress bars."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        sys.stderr.flush()
        self.stderr = os.dup(2)
        reader, writer = os.pipe()
        os.dup2(writer, 2)
        os.close(writer)
        self.thread = threading.Thread(target=self._pump, args=(reader,), name="fcnx-stderr", daemon=True)
        self.thread.start()

    def _pump(self, reader: int) -> None:
        with os.fdopen(reader, "rb") as pipe:
            for line in pipe:
                if not self.pattern.search(line.decode("utf-8", errors="replace")):
                    os.write(self.stderr, line)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.stderr, 2)  # the pipe's last writer goes: the thread sees its end
        self.thread.join(timeout=5)
        os.close(self.stderr)


def main(argv: list[str] | None = None) -> int:
    _quiet_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = not os.environ.get("FCNX_DEBUG")
    if quiet:
        os.environ.setdefault(*TF_LOG_LEVEL)  # before any subcommand (and TensorFlow) is imported
        # TensorFlow's Python logger (tf.function retracing advice when Keras predicts batches
        # of several sizes): errors only; its level is kept when TensorFlow configures it
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    noisy = quiet and bool(argv) and argv[0] in TF_COMMANDS
    noise = NoiseFilter(TF_NOISE) if noisy and threading.current_thread() is threading.main_thread() else None
    try:
        code = _main(argv)
        if (
            code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
            and threading.current_thread() is threading.main_thread()
        ):
            if noise is not None:
                noise.close()
                noise = None
            _leave_promptly(code)
        return code
    except BrokenPipeError:  # `fcnx ... | head`: the reader left; exit quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if noise is not None:
            noise.close()


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.parse_args([name])  # argparse prints the choices and exits 2
    module_path, extra, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_path)
        args = module.build_parser(f"fcnx {name}").parse_args(rest)
        return int(module.run(args) or 0)
    except ModuleNotFoundError as exc:
        error = _missing_extra(exc, name, extra)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except (CommandError, MissingExtra) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CommandError) else exc.exit_code
    except BrokenPipeError:
        raise  # main() ends quietly
    except (ValueError, OSError, BackendError) as exc:
        if os.environ.get("FCNX_DEBUG"):
            raise
        # Our own errors (bad data, bad model files, bad flag values) are ValueErrors that
        # name the file and the problem; OSErrors carry the path. One message, no traceback.
        print(f"error: {exc}\n(set FCNX_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("terminated" if isinstance(exc, Terminated) else "interrupted", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
