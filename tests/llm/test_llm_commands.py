"""The LLM stage's entry points run as a user runs them: as processes, on the tiny backbone."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
from test_artifact_and_service import embeddings_message
from tiny_llm import K, T

from shared import score_table
from shared.embedding_export import load_export
from shared.protocol import MessageType, decode, new_message
from shared.sockets import send_message

REPO_ROOT = Path(__file__).resolve().parents[2]
GEOPOL = [sys.executable, "-m", "shared.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    tmp_path: Path, backbone: Path, artifact: Path, sockets: dict | None = None
) -> Path:
    config = {
        "name": "llm-test",
        "paths": {"run_dir": str(tmp_path / "run")},
        "logging": {"level": "info", "format": "json"},
        "graph": {"steps": T},
        "llm": {
            "backbone": str(backbone),
            "artifact": str(artifact),
            "dtype": "float32",
            "batch": 4,
            "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0},
            "recipes": {"default": {"steps": T, "options": [4, K], "query_token": True}},
            "train": {
                "batch": 4,
                "valid_questions": 8,
                "valid_every": 16,
                "curve_at": [16],
                "valid_k": 4,
                "questions": 32,
            },
        },
        "stages": {"llm": {"metrics_port": None, "heartbeat_s": 0.2, "sockets": sockets or {}}},
    }
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def geopol(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GEOPOL, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path, tiny_export: Path
) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    artifact = tmp / "artifact"
    config = write_config(tmp, tiny_backbone, artifact)
    done = geopol(
        "train", "llm", "--config", str(config), "--data", str(tiny_export), "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["questions_seen"] == 32 and summary["curve"][0]["train_questions"] == 16
    assert 0 < summary["trainable"]["trainable"] < summary["trainable"]["total"]
    return config, artifact


def test_train_llm_writes_a_checked_artifact(trained: tuple[Path, Path]) -> None:
    _, artifact = trained
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["kind"] == "tgl-llm" and manifest["graph"]["steps"] == T
    assert manifest["data"]["questions"] == 32 and manifest["options"] == [4, K]
    assert manifest["backbone"]["name"] == "tiny-llama"


def test_train_llm_refuses_a_plan_that_does_not_fit_before_loading_weights(
    trained: tuple[Path, Path], tiny_export: Path
) -> None:
    config, _ = trained
    done = geopol(
        "train", "llm", "--config", str(config), "--data", str(tiny_export), "--questions", "100000"
    )
    assert done.returncode == 2
    assert "--questions 100000" in done.stderr and "offers" in done.stderr
    assert "backbone_loaded" not in done.stdout + done.stderr


def test_llm_prompt_prints_the_rendered_question(
    trained: tuple[Path, Path], tiny_export: Path
) -> None:
    config, _ = trained
    done = geopol(
        "llm",
        "prompt",
        "--config",
        str(config),
        "--data",
        str(tiny_export),
        "--index",
        "3",
        "--k",
        "4",
    )
    assert done.returncode == 0, done.stderr
    assert "Query: (entity" in done.stdout and "Query feature: [f][query]" in done.stdout
    assert "<- trained answer" in done.stdout and "Options: A." in done.stdout


def test_eval_llm_writes_tgl_mcq_rows_for_every_method(
    trained: tuple[Path, Path], tiny_export: Path, tmp_path: Path
) -> None:
    config, artifact = trained
    report = tmp_path / "eval.json"
    done = geopol(
        "eval",
        "llm",
        "--config",
        str(config),
        "--data",
        str(tiny_export),
        "--method",
        f"tgl-llm-random={artifact}",
        "--ablation",
        f"variant={artifact}",
        "--n",
        "20",
        "--ablation-n",
        "8",
        "--ks",
        "4",
        "6",
        "--reports",
        str(report),
        "--scores",
        str(tmp_path / "scores"),
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(report.read_text())["TINY"]
    table = score_table.load(tmp_path / "scores" / "valid-tgl-mcq-K4-tgl-llm-random.safetensors")
    assert len(table) == 20 and table.k == 4 and (table.gold >= 0).all()
    table_acc = float((table.llm.argmax(1) == table.gold).mean())
    assert table_acc == pytest.approx(rows["tgl-mcq"]["K4"]["tgl-llm-random"]["acc"])
    for k in ("K4", "K6"):
        assert set(rows["tgl-mcq"][k]) == {"recurrency", "regcn", "tgl-llm-random"}
        assert all(
            entry["n"] == 20 and 0 <= entry["acc"] <= 1 for entry in rows["tgl-mcq"][k].values()
        )
    assert rows["learning_curve"]["tgl-llm-random"][0]["train_questions"] == 16
    # an ablation: the largest K only, on the first 8 questions of the same sample, with its curve
    assert rows["ablations"]["variant"]["K"] == 6 and rows["ablations"]["variant"]["n"] == 8
    variant = score_table.load(tmp_path / "scores" / "valid-tgl-mcq-K6-variant.safetensors")
    first = score_table.load(tmp_path / "scores" / "valid-tgl-mcq-K6-tgl-llm-random.safetensors")
    assert set(variant.rows) < set(first.rows)
    assert rows["learning_curve"]["variant"] == rows["learning_curve"]["tgl-llm-random"]
    assert "tgl-mcq" in (tmp_path / "eval.md").read_text()
    assert (tmp_path / "learning-curve-TINY.png").stat().st_size > 0


def test_llm_score_saves_the_tail_in_candidate_order(
    trained: tuple[Path, Path], tiny_export: Path, tmp_path: Path
) -> None:
    config, artifact = trained
    out = tmp_path / "valid.safetensors"
    args = ["--config", str(config), "--artifact", str(artifact), "--data", str(tiny_export)]
    done = geopol("llm", "score", *args, "--tail", "12", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    table = score_table.load(out)
    export = load_export(tiny_export)
    rows = np.arange(len(export) - 12, len(export))
    assert (table.rows == rows).all() and table.k == K
    # candidate order: the export's own columns, whatever order the letters were shown in
    assert (table.candidate_ids == np.asarray(export.arrays["candidate_ids"])[rows]).all()
    assert (table.graph == np.asarray(export.arrays["scores"])[rows]).all()
    assert (table.gold == np.asarray(export.arrays["gold_index"])[rows]).all()
    assert table.meta["llm_artifact"] and "LLM top-1" in done.stdout
    missing = geopol("llm", "score", *args, "--sample", "0", "--out", str(out))
    assert missing.returncode == 2 and "must be positive" in missing.stderr


def test_serve_llm_turns_embeddings_into_scores_and_survives_a_bad_frame(
    trained: tuple[Path, Path], tiny_backbone: Path, tiny_export: Path, tmp_path: Path
) -> None:
    _, artifact = trained
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVTIMEO, 60_000)
    in_port = push.bind_to_random_port("tcp://127.0.0.1")
    out_port = _free_port()
    sockets = {
        "embeddings": {"pattern": "pull", "endpoint": f"tcp://127.0.0.1:{in_port}"},
        "scores": {"pattern": "push", "endpoint": f"tcp://127.0.0.1:{out_port}", "bind": True},
    }
    config = write_config(tmp_path, tiny_backbone, artifact, sockets)
    proc = subprocess.Popen(
        [*GEOPOL, "serve", "llm", "--config", str(config)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pull.connect(f"tcp://127.0.0.1:{out_port}")
        bad = new_message(
            MessageType.EMBEDDINGS, "TINY/bad", [np.zeros((T, 3), np.float32)], meta={}
        )
        send_message(push, bad)
        for row in range(2):
            send_message(push, embeddings_message(tiny_export, row, f"TINY/q{row}"))
        replies = [decode(pull.recv_multipart()) for _ in range(2)]
        assert sorted(r.id for r in replies) == ["TINY/q0", "TINY/q1"]
        assert all(r.type is MessageType.SCORES and r.frames[0].shape == (K,) for r in replies)
        dead = tmp_path / "run" / "deadletter" / "llm.jsonl"
        deadline = time.monotonic() + 10
        while not dead.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "TINY/bad" in dead.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        push.close()
        pull.close()
        ctx.term()
    assert proc.returncode == 0, out


def test_the_llm_modules_never_import_jax() -> None:
    code = (
        "import json, sys\n"
        "import services.llm.service, services.llm.train_cli, services.llm.evaluate, services.llm.prompt_cli\n"
        "print(json.dumps({m: m in sys.modules for m in ('jax', 'jaxlib', 'services.graph')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "jax": False,
        "jaxlib": False,
        "services.graph": False,
    }


def test_train_llm_killed_mid_run_resumes_from_its_checkpoint_when_rerun(
    tmp_path: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    """SIGKILL after the first validation's checkpoint; the same command then continues from
    it (another plan is refused by name), and the finished artifact leaves no checkpoint."""
    artifact = tmp_path / "artifact"
    config = write_config(tmp_path, tiny_backbone, artifact)
    command = [*GEOPOL, "train", "llm", "--config", str(config), "--data", str(tiny_export)]
    command += ["--no-progress", "--questions", "64"]
    progress = tmp_path / ".artifact.checkpoint" / "progress.json"
    first = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not progress.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert progress.exists() and not (artifact / "manifest.json").exists()
    cut_at = json.loads(progress.read_text())["position"]["seen"]

    other = geopol(*command[len(GEOPOL) : -1], "48")
    assert other.returncode == 2
    assert "is of another run" in other.stderr and "settings" in other.stderr
    assert "--fresh" in other.stderr

    done = geopol(*command[len(GEOPOL) :])
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert 16 <= summary["resumed_from"] == cut_at < 64
    assert summary["questions_seen"] == 64
    assert [p["train_questions"] for p in summary["curve"]] == [16, 32, 48, 64]
    assert (artifact / "manifest.json").is_file() and not progress.parent.exists()
