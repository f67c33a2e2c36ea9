"""What machine a benchmark ran on, and how fast it multiplies matrices.

The matmul rates are the yardstick for ``fraction_of_matmul`` in the llm section, and let a
reader compare figures taken on different machines. They are measured with torch in a child
process, so a benchmark process that runs JAX never imports torch too (DESIGN.md invariant 3).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from shared.bench import report

_PROBE = """
import json, time, torch
device = "cuda" if torch.cuda.is_available() else "cpu"
def rate(dtype, n=1024, seconds=1.0):
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    (a @ b).sum().item()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        c = a @ b
        reps += 1
    c.sum().item()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
print(json.dumps({
    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    "fp32": rate(torch.float32),
    "bf16": rate(torch.bfloat16),
}))
"""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, object]:
    """The ``machine`` section of bench.json."""
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    return {
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "gpu": found["gpu"],
        "matmul_gflops_fp32": round(found["fp32"], 2),
        "matmul_gflops_bf16": round(found["bf16"], 2),
    }


def record(reports_dir: Path) -> dict[str, object]:
    """Describe this machine and store it as the ``machine`` section beside the benchmarks."""
    host = describe()
    report.write_section("machine", host, f"## machine\n\n`{host}`", reports_dir)
    return host
