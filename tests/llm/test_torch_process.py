"""Every llm-stage torch process takes its configured threads and GPU share (invariant 3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from services.llm.torch_process import configure_torch
from shared.config import LlmConfig

LLM = Path(__file__).resolve().parents[2] / "services" / "llm"


def test_the_gpu_cap_and_threads_come_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    caps: list[float] = []
    threads: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", caps.append)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    configure_torch(LlmConfig(mem_fraction=0.3, threads=2))
    assert caps == [0.3] and threads == [2]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    configure_torch(LlmConfig(mem_fraction=0.3))  # no GPU, no thread setting: nothing changes
    assert caps == [0.3] and threads == [2]


@pytest.mark.parametrize(
    "module", ["service.py", "train_cli.py", "score_cli.py", "evaluate.py", "bench.py"]
)
def test_every_entry_point_that_loads_a_model_configures_torch_first(module: str) -> None:
    tree = ast.parse((LLM / module).read_text(encoding="utf-8"))
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert "configure_torch" in called
