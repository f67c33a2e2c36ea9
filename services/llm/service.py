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

The process never imports JAX (invariant 3) and caps its GPU memory with
``torch.cuda.set_per_process_memory_fraction`` before the model is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from services.llm import artifact as llm_artifact
from services.llm.backbone import BackboneError, pick_dtype, resolve
from services.llm.prompt import QuestionText
from services.llm.questions import QuestionBatch, Vocabulary, option_positions, stack_batches
from services.llm.scoring import OptionScorer
from services.llm.torch_process import configure_torch
from shared.abstention import pass_on
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.graph_frames import META_FIELDS, candidate_ids, check_frames, recurrency_scores
from shared.log import configure_logging, get_logger
from shared.protocol import Message, MessageType, new_message
from shared.runtime import Route, StageRuntime

log = get_logger(__name__)
OUT = "scores"
ACCEPTS = {"embeddings": frozenset({MessageType.EMBEDDINGS, MessageType.ABSTAIN})}


class LlmStage:
    """State and behaviour of the llm stage, independent of sockets."""

    def __init__(
        self, scorer: OptionScorer, vocab: Vocabulary, artifact: llm_artifact.LlmArtifact
    ) -> None:
        self.scorer = scorer
        self.vocab = vocab
        self.artifact_id = artifact.artifact_id
        self.graph_dim = artifact.graph_dim
        self.steps = artifact.steps
        self.graph_artifact = artifact.manifest["graph"]["artifact"]

    def handle(self, socket: str, message: Message) -> list[Route]:
        return self.handle_batch(socket, [message])

    def handle_batch(self, _socket: str, messages: list[Message]) -> list[Route]:
        """Score every message; raises on any bad one (the runtime then retries them singly).
        An abstention (the graph model has no embedding for the query) is passed on unscored,
        with this stage's lineage and calendar, for the forecast that says so."""
        replies: dict[int, Message] = {
            i: pass_on(m, llm_artifact=self.artifact_id, calendar=self.vocab.calendar)
            for i, m in enumerate(messages)
            if m.type is MessageType.ABSTAIN
        }
        questions = {i: self._question(m) for i, m in enumerate(messages) if i not in replies}
        by_k: dict[int, list[int]] = {}
        for i, (batch, _) in questions.items():
            by_k.setdefault(batch.num_options, []).append(i)
        for indices in by_k.values():
            scores = self.scorer.score(stack_batches([questions[i][0] for i in indices]))
            for row, i in enumerate(indices):
                batch, order = questions[i]
                replies[i] = self._reply(messages[i], scores[row], order, batch.texts[0])
        return [(OUT, replies[i]) for i in range(len(messages))]

    def _question(self, message: Message) -> tuple[QuestionBatch, np.ndarray]:
        """One question in letter order, and the letter order (candidate positions)."""
        frames = check_frames(message.frames, dim=self.graph_dim)
        if frames.steps < self.steps:
            raise ValueError(
                f"the graph sends T={frames.steps} steps, the llm artifact reads {self.steps}"
            )
        if message.meta.get("graph_artifact") != self.graph_artifact:
            raise ValueError(
                f"embeddings of graph artifact {message.meta.get('graph_artifact')!r}, the llm "
                f"artifact was trained on {self.graph_artifact!r}"
            )
        k = frames.num_candidates
        ids = candidate_ids(message.meta, k)
        order, _ = option_positions(-1, k, k, seed=_seed_of(message.id), row=0)
        meta = message.meta
        steps = -self.steps
        batch = QuestionBatch(
            subject=np.asarray(frames.subject[steps:])[None],
            relation=np.asarray(frames.relation)[None],
            candidates=np.asarray(frames.candidates[order][:, steps:])[None],
            scores=np.asarray(frames.scores[order])[None],
            query=np.asarray(frames.query)[None],
            candidate_ids=ids[order][None],
            target=np.array([-1]),
            texts=[
                self.vocab.question(
                    int(meta["subject"]), int(meta["relation"]), int(meta["step"]), ids[order]
                )
            ],
        )
        return batch, order

    def _reply(
        self, message: Message, letter_scores: np.ndarray, order: np.ndarray, text: QuestionText
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
                "llm_artifact": self.artifact_id,
                "frames": ["llm_scores", "graph_scores"]
                + ([] if recurrency is None else ["recurrency_scores"]),
                # the words the LLM read, for the forecast a person reads
                "names": {"subject": text.subject, "relation": text.relation, "candidates": names},
                "date": text.date,
                "calendar": self.vocab.calendar,
            },
        )


def _seed_of(message_id: str) -> int:
    """A stable seed per message id: the same query always gets the same option order."""
    return int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- process


def build_stage(config: Config) -> LlmStage:
    """Check the artifact and the backbone's identity, then load the model."""
    settings = config.llm
    checked = llm_artifact.check(config.llm_artifact)
    source = resolve(settings.backbone, config.backbone_cache)
    llm_artifact.check_fits(checked, source, steps=None)
    if checked.steps > config.graph.steps:
        raise llm_artifact.LlmArtifactError(
            f"LLM artifact {checked.directory}: reads {checked.steps} history steps, "
            f"graph.steps sends {config.graph.steps}"
        )
    configure_torch(settings)
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
    return LlmStage(scorer, checked.vocabulary(), checked)


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
