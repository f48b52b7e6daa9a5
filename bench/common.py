"""What every benchmark script shares: print the report and keep it under bench/results/."""

from __future__ import annotations

import os
import platform
from pathlib import Path

SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine() -> str:
    """CPU model, cores, the vector extensions that decide kernel speed, Python and torch."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown CPU", "", platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    simd = " ".join(f for f in SIMD_FLAGS if f in flags) or "no AVX2"
    return (f"{model}, {os.cpu_count()} cores, {platform.machine()} ({simd}), Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def publish(lines: list[str], path: Path) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"written to {path}")
