"""What machine a benchmark record was measured on: figures from different sessions only compare beside a
baseline of the same run, and a record that names its CPU says which machine that was."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()


def machine_info() -> dict:
    """CPU model, core count, AVX-512 BF16 and torch's CPU capability, the commit measured."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx512_bf16": has_avx512_bf16(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "commit": commit(),
    }


def load() -> float:
    """The one-minute load average: a leg started on a busy machine is not a fair leg."""
    return round(os.getloadavg()[0], 2)
