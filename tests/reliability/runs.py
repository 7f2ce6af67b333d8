"""Real ``fcnx predict`` processes for the reliability tests: start, kill, rerun, compare."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..fakes import THRESHOLD_ONNX

CLI = [sys.executable, "-m", "fcnx.runtime.cli"]


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = (64, 64) if i % 3 else (45 + i % 7, 90)
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, shape, np.uint8))
    return folder


def predict_command(inputs: Path, out: Path, *extra: str, model: Path = THRESHOLD_ONNX) -> list[str]:
    return [*CLI, "predict", str(model), str(inputs), "-o", str(out), "--no-progress", "--batch", "4", *extra]


def run(
    command: list[str], env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OPENCV_LOG_LEVEL": "ERROR", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)


def _default_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM at their defaults and unblocked. An ignored
    or blocked signal is inherited across exec, and the libraries a long pytest process has
    loaded may have left either; a run under test must get the signals a shell gives it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            preexec_fn=_default_signals)  # fmt: skip


def kill_after(process: subprocess.Popen[str], seconds: float) -> bool:
    """SIGKILL ``process`` after ``seconds``; False when it had already finished."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return True


def outputs(out: Path) -> dict[str, bytes]:
    """Every mask and overlay under OUT (not fcnx's own bookkeeping), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.suffix in (".png", ".npy", ".jpg")
    }


def temp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*.tmp"))
