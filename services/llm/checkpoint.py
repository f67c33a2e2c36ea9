"""Resumable LLM training: the trainable weights, AdamW moments and loop position at every
validation mark, so ``geopol train llm`` continues a cut run instead of starting it again.

Why: one ICEWS14 recipe trains for about half an hour on 2 CPU cores, and a process (or a
working session) may end sooner. A resumed run continues *exactly*: same LoRA and adapter
weights, same Adam moments and step counter, same learning-rate schedule position, same K
draws (the numpy generator's state) and dropout masks (torch's CPU generator state), same
best-so-far state and patience count. A run cut at a mark and resumed equals one run.

Layout, beside the artifact folder ``OUT`` (the artifact is written only when training ends)::

    .OUT.checkpoint/state-NNNNNN.safetensors  trainable weights (``now.``), the best validated
                                              ones (``best.``), AdamW state (``adam.``) and
                                              torch's generator state, after NNNNNN questions
    .OUT.checkpoint/progress.json             the run it belongs to, the loop's position, the
                                              curve so far, the optimiser's and schedule's
                                              settings, which state file and its sha256

A save writes the new state file, then replaces progress.json atomically, then removes the
older state file, so a process killed at any point leaves a checkpoint that loads. No pickle:
tensors go to safetensors, everything else to JSON. A checkpoint of another run (other data,
rows, recipe or settings) is refused with the fields that differ and both values.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from shared.atomic import atomic_write_bytes
from shared.manifest import Fields, differences, read_versioned_json, read_with_sha256

PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 1
_RNG = "torch_rng"


class LlmCheckpointError(ValueError):
    """A checkpoint that cannot continue this run; the message names the field at fault."""


@dataclass
class LoopPosition:
    """Where the training loop stands: what JSON holds of it (tensors live in the state file)."""

    seen: int = 0
    step: int = 0
    since_best: int = 0
    marks: list[int] = field(default_factory=list)
    rng_state: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    has_best: bool = False


@dataclass
class Saved:
    """A loaded checkpoint: the loop position, the tensors, and the optimiser's and schedule's
    state dicts ready for ``load_state_dict``."""

    position: LoopPosition
    now: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    torch_rng: torch.Tensor


@dataclass(frozen=True)
class Checkpoint:
    """Where a run keeps its checkpoint, and what identifies the run (JSON: the data, rows,
    backbone, recipe and settings); a checkpoint of any other run is refused."""

    folder: Path
    run: dict[str, Any]

    @classmethod
    def beside(cls, out: Path, run: dict[str, Any]) -> Checkpoint:
        """The checkpoint of the artifact ``out``: a hidden sibling folder, never inside it."""
        out = Path(out)
        return cls(out.with_name(f".{out.name}.checkpoint"), run)


def rows_sha256(rows: Any) -> str:
    """A short fingerprint of the training rows in their training order."""
    return hashlib.sha256(json.dumps([int(r) for r in rows]).encode()).hexdigest()


def save(
    checkpoint: Checkpoint,
    position: LoopPosition,
    now: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Write one checkpoint; ``best`` is the best validated state so far (None before any)."""
    folder = checkpoint.folder
    folder.mkdir(parents=True, exist_ok=True)
    optim = optimizer.state_dict()
    tensors = {f"now.{k}": v for k, v in now.items()}
    tensors |= {f"best.{k}": v for k, v in (best or {}).items()}
    moments: dict[str, dict[str, bool]] = {}
    for index, slots in optim["state"].items():
        moments[str(index)] = {}
        for slot, value in slots.items():
            tensors[f"adam.{index}.{slot}"] = torch.as_tensor(value)
            moments[str(index)][slot] = torch.is_tensor(value)
    tensors[_RNG] = torch.get_rng_state()
    payload = save_tensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    state_file = f"state-{position.seen:06d}.safetensors"
    atomic_write_bytes(folder / state_file, payload)
    document = {
        "format_version": FORMAT_VERSION,
        "run": checkpoint.run,
        "position": {**asdict(position), "has_best": best is not None},
        "param_groups": optim["param_groups"],
        "moments": moments,
        "schedule": schedule.state_dict(),
        "state_file": state_file,
        "state_sha256": hashlib.sha256(payload).hexdigest(),
    }
    atomic_write_bytes(folder / PROGRESS_FILE, json.dumps(document, indent=1).encode("utf-8"))
    for old in folder.glob("state-*.safetensors"):
        if old.name != state_file:
            old.unlink()


def load(checkpoint: Checkpoint) -> Saved | None:
    """The saved checkpoint when there is one, after checking it is of this run."""
    folder = checkpoint.folder
    if not (folder / PROGRESS_FILE).is_file():
        return None
    what = f"llm checkpoint {folder} (train with --fresh to start again)"
    document = read_versioned_json(folder / PROGRESS_FILE, FORMAT_VERSION, what, LlmCheckpointError)
    fields = Fields(document, PROGRESS_FILE, what, LlmCheckpointError)
    for name, kind in (("run", dict), ("position", dict), ("moments", dict), ("schedule", dict)):
        fields.get(name, kind)
    fields.get("param_groups", list)
    fields.file(folder, "state_file")
    differing = differences(
        document["run"], json.loads(json.dumps(checkpoint.run)), ("saved", "now")
    )
    if differing:
        raise LlmCheckpointError(
            f"llm checkpoint {folder} is of another run ({'; '.join(d[:200] for d in differing[:3])}); "
            "train with --fresh to start again"
        )
    payload = read_with_sha256(
        folder / fields.get("state_file", str),
        fields.get("state_sha256", str),
        PROGRESS_FILE,
        what,
        LlmCheckpointError,
    )
    tensors = load_tensors(payload)
    try:
        position = LoopPosition(**document["position"])
    except TypeError as exc:
        raise LlmCheckpointError(f"{what}: {PROGRESS_FILE} position: {exc}") from None
    state: dict[int, dict[str, Any]] = {}
    for index, slots in document["moments"].items():
        state[int(index)] = {}
        for slot, is_tensor in slots.items():
            value = _tensor(tensors, f"adam.{index}.{slot}", what)
            state[int(index)][slot] = value if is_tensor else value.item()
    return Saved(
        position=position,
        now=_prefixed(tensors, "now."),
        best=_prefixed(tensors, "best.") if position.has_best else {},
        optimizer={"state": state, "param_groups": document["param_groups"]},
        schedule=document["schedule"],
        torch_rng=_tensor(tensors, _RNG, what),
    )


def discard(checkpoint: Checkpoint) -> None:
    """Remove the checkpoint (the run ended and its artifact is saved, or --fresh was asked)."""
    shutil.rmtree(checkpoint.folder, ignore_errors=True)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _tensor(tensors: dict[str, torch.Tensor], name: str, what: str) -> torch.Tensor:
    if name not in tensors:
        raise LlmCheckpointError(f"{what}: the state file has no tensor {name!r}")
    return tensors[name]
