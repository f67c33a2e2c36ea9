"""Recent facts in the prompt (``tgl-llm-facts``): read strictly before the question's step, from
the event store through the same retrieval as the forecasts' evidence, shown before the options."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from test_llm_commands import write_config
from tiny_llm import ENTITIES, RELATIONS

from services.llm.prompt import PromptStyle, QuestionText, pieces
from services.llm.prompt_facts import store_source
from services.llm.questions import Vocabulary, export_batch
from shared.embedding_export import load_export
from shared.event_store import QUAD_SCHEMA, EventStore, KeyLabels

REPO_ROOT = Path(__file__).resolve().parents[2]


def _store(root: Path, facts: list[tuple[int, int, int, int]]) -> Path:
    """A store whose ids are the tiny export's (entity i, relation i), one ingest per fact."""
    store = EventStore(root, step_minutes=1440, min_free_bytes=0)
    labels = KeyLabels(
        entities=dict.fromkeys(f"entity {i}" for i in range(ENTITIES)),
        relations=dict.fromkeys(f"relation {i}" for i in range(RELATIONS)),
    )
    for s, r, o, t in facts:
        frame = pl.DataFrame(
            {"event_id": [None], "subject": [f"entity {s}"], "relation": [f"relation {r}"],
             "object": [f"entity {o}"], "t": [t], "goldstein": [None], "num_mentions": [None],
             "quad_class": [None]},
            schema=QUAD_SCHEMA,
        )  # fmt: skip
        source = f"hand/{s}-{r}-{o}-{t}"
        store.append(frame, source=source, source_sha256=hashlib.sha256(source.encode()).hexdigest(),
                     labels=labels)  # fmt: skip
    return root


def test_the_facts_of_a_question_are_all_strictly_before_its_step(tmp_path: Path) -> None:
    root = _store(tmp_path / "store", [(1, 0, 2, 18), (1, 1, 3, 19), (1, 2, 4, 20), (2, 0, 1, 19),
                                       (1, 0, 5, 17), (1, 1, 6, 21)])  # fmt: skip
    newest = store_source(root, limit=2)
    assert newest(1, 20) == ((19, 1, 1, 3), (18, 1, 0, 2))  # t < 20, newest first, two of three
    assert all(t < 19 for t, *_ in store_source(root, limit=9)(1, 19))
    assert newest(2, 19) == ()  # entity 2's only fact is at 19 itself


def test_the_prompt_lists_the_facts_before_the_options() -> None:
    question = QuestionText("entity 1", "relation 0", "2014-01-21", ["entity 2", "entity 3"],
                            facts=["2014-01-20 entity 1 — relation 1 — entity 3"])  # fmt: skip
    text = "".join(p for p in pieces(question, PromptStyle(graph_tokens=False, facts=5))
                   if isinstance(p, str))  # fmt: skip
    lines = text.splitlines()
    at = lines.index("Recent facts about entity 1:")
    assert lines[at + 1] == "2014-01-20 entity 1 — relation 1 — entity 3"
    assert lines[at + 2].startswith("Options: A. entity 2")
    plain = "".join(p for p in pieces(question, PromptStyle(graph_tokens=False))
                    if isinstance(p, str))  # fmt: skip
    assert "Recent facts" not in plain  # a recipe without facts shows none


def test_llm_prompt_shows_the_facts_of_a_facts_recipe(
    tmp_path: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    export = load_export(tiny_export)
    s, _, _, t = (int(x) for x in export.arrays["queries"][0])
    root = _store(tmp_path / "icews-store", [(s, 1, (s + 1) % ENTITIES, t - 1),
                                             (s, 2, (s + 2) % ENTITIES, t)])  # fmt: skip
    config_path = write_config(tmp_path, tiny_backbone, tmp_path / "artifact")
    config = yaml.safe_load(config_path.read_text())
    config["llm"]["recipes"]["facts"] = {"steps": 2, "facts": 3, "query_token": True}
    config["llm"]["facts_store"] = str(root)
    config_path.write_text(yaml.safe_dump(config))

    def prompt(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", "llm", "prompt", "--config", str(config_path),
             "--data", str(tiny_export), "--index", "0", *extra],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = prompt("--recipe", "facts")
    assert done.returncode == 0, done.stderr
    vocab = Vocabulary.of_export(export)
    line = f"{vocab.date(t - 1)} entity {s} — relation 1 — entity {(s + 1) % ENTITIES}"
    assert f"Recent facts about entity {s}:\n{line}\n" in done.stdout
    assert "relation 2" not in done.stdout.split("Recent facts")[1].split("Options")[0]  # at t
    assert "Recent facts" not in prompt().stdout  # the default recipe shows none

    config["llm"]["facts_store"] = str(tmp_path / "nowhere")
    config_path.write_text(yaml.safe_dump(config))
    missing = prompt("--recipe", "facts")
    assert missing.returncode == 2 and "llm.facts_store" in missing.stderr
    batch = export_batch(export, vocab.with_facts(store_source(root, 3)), np.array([0]), 4, 2, 0)
    assert batch.texts[0].facts == [line]
