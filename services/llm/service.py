"""The llm stage process: EMBEDDINGS in, SCORES out, one forward pass per batch.

A thin loop (shared.runtime) around :class:`LlmStage`. Each EMBEDDINGS message is checked
against the per-query layout (shared.graph_frames) and the artifact's dims, turned into a
question whose options are shown in an order seeded by the message id (so a re-sent query gets
the same answer: invariant 1), and scored with whatever else has arrived. The SCORES reply holds
float32 frames ``[K]`` **in the candidates' order** (not letter order): the letter logits, the
graph's own scores and, when the graph stage sent them, the recurrency baseline's (the calibrator
stacks them), and keeps the query's meta (candidate ids,
graph artifact, data cut-off) with the llm artifact id added: the forecast's lineage. The names
and date the LLM read, and the calendar of the steps, go along for the forecast's text.

Each message names the graph artifact that made it, and is scored by the llm artifact trained on
that graph artifact's answers: the served one, or one of another finished generation
(shared/generations.py), loaded when its first message arrives. So across a retrain's switch the
old generation's queries still in flight are scored by the old chain and the new ones by the
new, none refused; a graph artifact no finished generation was trained on is refused by name.

The process never imports JAX (invariant 3) and caps its GPU memory with
``torch.cuda.set_per_process_memory_fraction`` before the model is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.llm import artifact as llm_artifact
from services.llm import prompt_facts
from services.llm.backbone import BackboneError, pick_dtype, resolve
from services.llm.prompt import QuestionText
from services.llm.questions import QuestionBatch, Vocabulary, option_positions, stack_batches
from services.llm.scoring import OptionScorer
from services.llm.torch_process import configure_torch
from shared import generations
from shared.abstention import pass_on
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.graph_frames import META_FIELDS, candidate_ids, check_frames, recurrency_scores
from shared.log import configure_logging, get_logger
from shared.protocol import Message, MessageType, new_message
from shared.runtime import Route, StageRuntime

log = get_logger(__name__)
OUT = "scores"
ACCEPTS = {"embeddings": frozenset({MessageType.EMBEDDINGS, MessageType.ABSTAIN})}


@dataclass(frozen=True)
class ServedLlm:
    """One llm artifact ready to score: the model, its prompt words and its manifest."""

    scorer: OptionScorer
    vocab: Vocabulary
    artifact: llm_artifact.LlmArtifact

    @property
    def graph_artifact(self) -> str:
        """The graph artifact whose answers it was trained on (and the only one it reads)."""
        return str(self.artifact.manifest["graph"]["artifact"])


class LlmStage:
    """State and behaviour of the llm stage, independent of sockets.

    ``find`` returns the llm artifact trained on a given graph artifact, loaded, or None; the
    default finds none but the one given."""

    def __init__(
        self,
        scorer: OptionScorer,
        vocab: Vocabulary,
        artifact: llm_artifact.LlmArtifact,
        find: Callable[[str], ServedLlm | None] | None = None,
    ) -> None:
        first = ServedLlm(scorer, vocab, artifact)
        self.served = generations.ByUpstream(first.graph_artifact, first, find or _none)

    def handle(self, socket: str, message: Message) -> list[Route]:
        return self.handle_batch(socket, [message])

    def handle_batch(self, _socket: str, messages: list[Message]) -> list[Route]:
        """Score every message; raises on any bad one (the runtime then retries them singly).
        An abstention (the graph model has no embedding for the query) is passed on unscored,
        with the lineage and calendar of the llm artifact its graph artifact goes with."""
        replies: dict[int, Message] = {}
        groups: dict[tuple[int, int], list[int]] = {}
        questions: dict[int, tuple[QuestionBatch, np.ndarray, ServedLlm]] = {}
        for i, m in enumerate(messages):
            if m.type is MessageType.ABSTAIN:
                served = self.served.named_in(m.meta, "graph_artifact") or self.served.newest
                replies[i] = pass_on(
                    m, llm_artifact=served.artifact.artifact_id, calendar=served.vocab.calendar
                )
                continue
            served = self._served_for(m)
            batch, order = self._question(m, served)
            questions[i] = (batch, order, served)
            groups.setdefault((id(served), batch.num_options), []).append(i)
        for indices in groups.values():
            served = questions[indices[0]][2]
            scores = served.scorer.score(stack_batches([questions[i][0] for i in indices]))
            for row, i in enumerate(indices):
                batch, order, _ = questions[i]
                replies[i] = self._reply(messages[i], scores[row], order, batch.texts[0], served)
        return [(OUT, replies[i]) for i in range(len(messages))]

    def _served_for(self, message: Message) -> ServedLlm:
        served = self.served.named_in(message.meta, "graph_artifact")
        if served is None:
            raise ValueError(
                f"embeddings of graph artifact {message.meta.get('graph_artifact')!r}: no llm artifact of a finished "
                f"generation was trained on it (the newest one reads {self.served.latest!r})"
            )
        return served

    def _question(self, message: Message, served: ServedLlm) -> tuple[QuestionBatch, np.ndarray]:
        """One question in letter order, and the letter order (candidate positions)."""
        frames = check_frames(message.frames, dim=served.artifact.graph_dim)
        steps = served.artifact.steps
        if frames.steps < steps:
            raise ValueError(
                f"the graph sends T={frames.steps} steps, the llm artifact reads {steps}"
            )
        k = frames.num_candidates
        ids = candidate_ids(message.meta, k)
        order, _ = option_positions(-1, k, k, seed=_seed_of(message.id), row=0)
        meta = message.meta
        batch = QuestionBatch(
            subject=np.asarray(frames.subject[-steps:])[None],
            relation=np.asarray(frames.relation)[None],
            candidates=np.asarray(frames.candidates[order][:, -steps:])[None],
            scores=np.asarray(frames.scores[order])[None],
            query=np.asarray(frames.query)[None],
            candidate_ids=ids[order][None],
            target=np.array([-1]),
            texts=[
                served.vocab.question(
                    int(meta["subject"]), int(meta["relation"]), int(meta["step"]), ids[order]
                )
            ],
        )
        return batch, order

    def _reply(
        self,
        message: Message,
        letter_scores: np.ndarray,
        order: np.ndarray,
        text: QuestionText,
        served: ServedLlm,
    ) -> Message:
        in_candidate_order = np.empty_like(letter_scores)
        in_candidate_order[order] = letter_scores
        names = [""] * len(order)
        for letter, position in enumerate(order):
            names[position] = text.options[letter]
        recurrency = recurrency_scores(message.frames)
        return new_message(
            MessageType.SCORES,
            message.id,
            [
                np.ascontiguousarray(in_candidate_order, dtype=np.float32),
                np.ascontiguousarray(message.frames[3], dtype=np.float32),
                *([] if recurrency is None else [np.ascontiguousarray(recurrency, np.float32)]),
            ],
            trace_id=message.trace_id,
            meta={
                **{k: message.meta[k] for k in META_FIELDS if k in message.meta},
                "llm_artifact": served.artifact.artifact_id,
                "frames": ["llm_scores", "graph_scores"]
                + ([] if recurrency is None else ["recurrency_scores"]),
                # the words the LLM read, for the forecast a person reads
                "names": {"subject": text.subject, "relation": text.relation, "candidates": names},
                "date": text.date,
                "calendar": served.vocab.calendar,
            },
        )


def _none(_graph_artifact: str) -> None:
    """The default lookup: no llm artifact but the one the stage was built with."""


def _seed_of(message_id: str) -> int:
    """A stable seed per message id: the same query always gets the same option order."""
    return int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- process


def build_stage(config: Config) -> LlmStage:
    """Check the served generation's artifact and the backbone's identity, then load the model;
    the stage loads another generation's artifact when a message of its graph arrives."""
    configure_torch(config.llm)
    first = load_served(config, generations.current(config).llm)

    def find(graph_artifact: str) -> ServedLlm | None:
        for generation in generations.finished(config):
            manifest = generation.llm / llm_artifact.MANIFEST
            if not manifest.is_file():
                continue
            trained_on = llm_artifact.check(generation.llm).manifest["graph"]["artifact"]
            if trained_on == graph_artifact:
                return load_served(config, generation.llm)
        return None

    return LlmStage(first.scorer, first.vocab, first.artifact, find)


def load_served(config: Config, directory: Path) -> ServedLlm:
    """One llm artifact, checked against the backbone and the graph stage's history length."""
    settings = config.llm
    checked = llm_artifact.check(directory)
    source = resolve(settings.backbone, config.backbone_cache)
    llm_artifact.check_fits(checked, source, steps=None)
    if checked.steps > config.graph.steps:
        raise llm_artifact.LlmArtifactError(
            f"LLM artifact {checked.directory}: reads {checked.steps} history steps, "
            f"graph.steps sends {config.graph.steps}"
        )
    device = "cuda" if torch.cuda.is_available() else None
    scorer = llm_artifact.load(
        checked,
        source,
        pick_dtype(settings.dtype),
        load_in_4bit=settings.load_in_4bit,
        device=device,
    )
    log.info(
        "llm_model_loaded", artifact=checked.artifact_id, recipe=checked.manifest.get("recipe_name")
    )
    facts = prompt_facts.source_for(config, scorer.style.facts)  # the pipeline's own store
    return ServedLlm(scorer, checked.vocabulary().with_facts(facts), checked)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geopol serve llm", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging("llm", config.logging.level, config.logging.format)
        stage = build_stage(config)
    except (OSError, ConfigError, BackboneError, llm_artifact.LlmArtifactError, ValueError) as exc:
        print(f"geopol serve llm: {exc}", file=sys.stderr)
        return 2
    return StageRuntime(
        "llm",
        config,
        stage.handle,
        accepts=ACCEPTS,
        batch_handler=stage.handle_batch,
        batch_size=config.llm.batch,
    ).run()


if __name__ == "__main__":
    sys.exit(main())
