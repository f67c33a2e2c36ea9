"""A small real pipeline for the operation tests: the embedded default shrunk to run in a minute.

The config is configs/default.yaml with every port moved to a free one, a run dir of its own, a
small simulated world, one graph epoch and the tiny random Llama of tests/llm/tiny_llm.py as the
LLM backbone. The world is simulated once into a staging folder; the first ``built_slots``
exports go to ``ingest.source`` before the bootstrap, and the rest are there for a test to drop
into the watched folder later, as a live feed would deliver them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "llm"))  # tiny_llm, the LLM tests' random backbone

from tiny_llm import write_tiny_backbone  # noqa: E402

GEOPOL = [sys.executable, "-m", "shared.cli"]
STAGES = ("ingest", "graph", "llm", "calibrate")
RESEND_TIMEOUT_S = 5.0
WORLD = {"steps": 40, "actors": 30, "events_per_step": 40.0, "birth_rate": 0.0, "seed": 3}
"""No actor is born after the graph model is trained: one it has no embedding for cannot be
forecast yet (issue 12), and these tests count every query's forecast."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the run-dir and data-dir overrides a developer may have set."""
    keep = {k: v for k, v in os.environ.items() if k not in {"GEOPOL_RUN_DIR", "GEOPOL_DATA_DIR"}}
    return keep | {"OMP_NUM_THREADS": "1"} | extra


@dataclass
class TinyPipeline:
    root: Path
    config: Path
    run_dir: Path
    source: Path
    staging: Path
    metrics_ports: dict[str, int]
    publish: str
    snapshot: str

    def geopol(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``geopol ARGS --config CONFIG`` as a process, from the repository."""
        return subprocess.run(
            [*GEOPOL, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=clean_env(),
        )

    @classmethod
    def load(cls, root: Path) -> TinyPipeline:
        """The pipeline :func:`write_tiny_pipeline` wrote under ``root``, read back from its
        config (so ``make chaos --pipeline ROOT`` can run on one a test already built)."""
        path = root / "tiny.yaml"
        config = yaml.safe_load(path.read_text())
        run_dir = Path(config["paths"]["run_dir"])
        return cls(
            root,
            path,
            run_dir,
            run_dir / "simulate",
            root / "staging",
            {stage: config["stages"][stage]["metrics_port"] for stage in STAGES},
            config["calibrate"]["publish"]["endpoint"],
            config["calibrate"]["snapshot"]["endpoint"],
        )

    def later_exports(self) -> list[Path]:
        """The simulated exports not yet in the watched folder, oldest first."""
        there = {p.name for p in self.source.glob("*.export.CSV")}
        return [p for p in sorted(self.staging.glob("*.export.CSV")) if p.name not in there]

    def deliver(self, export: Path) -> None:
        """Put one export into the watched folder whole (copy, then rename), as a feed would."""
        part = self.source / f".{export.name}.part"
        shutil.copyfile(export, part)
        part.rename(self.source / export.name)


def tiny_settings(
    root: Path, run_dir: Path, queries_per_step: int
) -> tuple[dict, dict[str, int], str, str]:
    """configs/default.yaml shrunk: free ports, a run dir of its own, one small graph epoch and
    the tiny random Llama; with its metrics ports and its publish and snapshot endpoints."""
    text = (REPO / "configs" / "default.yaml").read_text()
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text))):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    config = yaml.safe_load(text)
    metrics = {stage: free_port() for stage in STAGES}
    for stage in STAGES:
        config["stages"][stage]["metrics_port"] = metrics[stage]
        config["stages"][stage]["heartbeat_s"] = 0.5
    config["name"] = "tiny"
    config["paths"]["run_dir"] = str(run_dir)
    config["logging"]["format"] = "json"
    config["ingest"]["resend_timeout_s"] = RESEND_TIMEOUT_S
    config["ingest"]["queries_per_step"] = queries_per_step
    config["graph"]["train"].update(epochs=1, dim=32, blocks=8, patience=1)
    config["llm"]["backbone"] = str(write_tiny_backbone(root / "tiny-llama"))
    config["llm"]["batch"] = 8
    config["llm"]["train"].update(
        questions=16, batch=8, valid_questions=8, valid_every=8, curve_at=[8, 16]
    )
    publish, snapshot = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    config.setdefault("calibrate", {})["publish"] = {
        "pattern": "pub",
        "endpoint": publish,
        "bind": True,
    }
    config["calibrate"]["snapshot"] = {"pattern": "rep", "endpoint": snapshot, "bind": True}
    return config, metrics, publish, snapshot


def write_tiny_pipeline(
    root: Path, built_slots: int = 28, queries_per_step: int = 8
) -> TinyPipeline:
    """Simulate the world, seed ``ingest.source`` with its first slots and write the config."""
    run_dir, staging, source = root / "run", root / "staging", root / "run" / "simulate"
    simulate = [*GEOPOL, "simulate", "--out", str(staging), "--no-progress"]
    for key, value in WORLD.items():
        simulate += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(simulate, check=True, capture_output=True, cwd=REPO, env=clean_env())
    source.mkdir(parents=True)
    for export in sorted(staging.glob("*.export.CSV"))[:built_slots]:
        shutil.copyfile(export, source / export.name)
    config, metrics, publish, snapshot = tiny_settings(root, run_dir, queries_per_step)
    config["bootstrap"] = {"simulate": WORLD, "calibrate_questions": 48}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return TinyPipeline(root, path, run_dir, source, staging, metrics, publish, snapshot)


EVENT_ID, ACTOR1, DATEADDED = 0, 5, 59  # GDELT 2.0 export columns


def next_slot(last: Path, out_dir: Path, minutes: int, id_offset: int, actor1: str | None) -> Path:
    """A copy of export ``last`` ``minutes`` later, every event id moved by ``id_offset`` and,
    given ``actor1``, every first actor replaced by it."""
    when = datetime.strptime(last.name[:14], "%Y%m%d%H%M%S") + timedelta(minutes=minutes)
    stamp = when.strftime("%Y%m%d%H%M%S")
    rows = []
    for line in last.read_text().splitlines():
        cols = line.split("\t")
        cols[EVENT_ID] = str(int(cols[EVENT_ID]) + id_offset)
        cols[DATEADDED] = stamp
        if actor1 is not None:
            cols[ACTOR1] = actor1
        rows.append("\t".join(cols))
    path = out_dir / f"{stamp}.export.CSV"
    path.write_text("\n".join(rows) + "\n")
    return path
