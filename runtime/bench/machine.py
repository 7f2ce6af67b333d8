"""What a benchmark ran on: CPU, cores, memory, GPU, OS and library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from ..backends.ort import usable_cores
from ..card import library_versions

VERSIONED = ("fcnx", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "tensorflow", "keras")  # fmt: skip


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def gpu_names() -> list[str]:
    """NVIDIA GPUs as nvidia-smi names them; [] without one (or without the driver tools)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def describe_machine(*extra_versions: str) -> dict[str, object]:
    return {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "versions": library_versions(*VERSIONED, *extra_versions),
    }
