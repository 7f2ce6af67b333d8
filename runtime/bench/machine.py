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
             "tensorflow", "keras", "openvino")  # fmt: skip
# The CPU features that decide which precision runs fast: /proc/cpuinfo flag -> what the report says
SPEED_FLAGS = {"avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
               "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}  # fmt: skip


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """Which of SPEED_FLAGS this CPU has (all False where /proc/cpuinfo is not readable)."""
    cpuinfo = Path("/proc/cpuinfo")
    present: set[str] = set()
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                break
    return {name: flag in present for flag, name in SPEED_FLAGS.items()}


def describe_flags(flags: dict[str, bool]) -> str:
    """ "AVX-512, AVX512-VNNI, AVX512-BF16; no AMX-BF16, AMX-INT8" """
    have = [name for name, on in flags.items() if on]
    lack = [name for name, on in flags.items() if not on]
    return ", ".join(have) + (f"; no {', '.join(lack)}" if lack else "")


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
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "versions": library_versions(*VERSIONED, *extra_versions),
    }
