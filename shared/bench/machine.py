"""What machine a benchmark ran on, and how fast it multiplies matrices.

The matmul rates are the yardstick for ``fraction_of_matmul`` in the llm section, and let a
reader compare figures taken on different machines.
"""

from __future__ import annotations

import os
import platform
import time


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _matmul_gflops(dtype_name: str, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained n×n matmul rate with torch on the best device available, in GFLOP/s."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    (a @ b).sum().item()  # warm up (and sync)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        c = a @ b
        reps += 1
    c.sum().item()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe() -> dict[str, object]:
    """The ``machine`` section of bench.json."""
    return {
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "gpu": _gpu_name(),
        "matmul_gflops_fp32": round(_matmul_gflops("float32"), 2),
        "matmul_gflops_bf16": round(_matmul_gflops("bfloat16"), 2),
    }
