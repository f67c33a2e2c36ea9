"""What every torch process of the llm stage sets before it loads a model (DESIGN invariant 3).

The server, the trainer, the scorer, the evaluator and the benchmark each own a torch process
that may share a GPU with the graph stage's JAX process; each must take at most its configured
share of the GPU's memory and the configured CPU threads, or the two frameworks fight over the
device. One function, so no entry point can forget one of the two.
"""

from __future__ import annotations

import torch

from shared.config import LlmConfig


def configure_torch(settings: LlmConfig) -> None:
    """CPU threads (when set) and the GPU memory cap (a no-op without a GPU)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(settings.mem_fraction)
