"""The LLM training loop: LoRA + graph adapters + z_f on multiple-choice questions.

nanoGPT-style: no framework between the loop and the optimiser. Each step draws a batch of
questions (one K per batch, from the recipe's mix or curriculum), scores the K letters at the
answer position only, and takes cross-entropy there (over the K letters, or over the whole
vocabulary for the paper's LM loss). AdamW with linear warm-up and decay, gradient clipping,
accumulation; a NaN/Inf loss stops the run naming the step. Validation accuracy on a fixed
sample is measured at every ``valid_every`` and ``curve_at`` question count (the learning curve);
the best state is kept, and training stops after ``patience`` validations without a better one.
An alignment phase (``align_questions``) first trains the adapters and z_f alone. A checkpoint
after every validation lets a cut run continue exactly where it was (services.llm.checkpoint).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from services.llm import checkpoint as llm_checkpoint
from services.llm.checkpoint import LoopPosition
from services.llm.prompt_facts import FactSource
from services.llm.questions import QuestionBatch, Vocabulary, export_batch
from services.llm.scoring import OptionScorer
from shared.config import LlmTrainConfig, RecipeSettings
from shared.embedding_export import ExportedSplit
from shared.log import get_logger

log = get_logger(__name__)
#: Mean pairwise cosine similarity of projected option tokens above which they have collapsed.
COLLAPSE_COSINE = 0.9


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the step and the value."""


def undersample_relations(
    export: ExportedSplit, rows: np.ndarray, share: float, seed: int
) -> np.ndarray:
    """Cap every relation at ``share`` of the rows (the most frequent ones are thinned)."""
    relations = export.arrays["queries"][rows, 1]
    cap = max(1, int(share * len(rows)))
    rng = np.random.default_rng(seed)
    kept = []
    for rel in np.unique(relations):
        members = rows[relations == rel]
        kept.append(members if len(members) <= cap else rng.choice(members, cap, replace=False))
    return rng.permutation(np.concatenate(kept))


# --------------------------------------------------------------------------- measuring


def choices(
    scorer: OptionScorer,
    export: ExportedSplit,
    vocab: Vocabulary,
    rows: np.ndarray,
    k: int,
    steps: int,
    seed: int,
    batch: int,
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The letter the model picks and the gold letter of each of ``rows`` at ``k`` options
    (a progress bar when ``label`` names the run)."""
    scorer.eval()
    scorer.refresh_prefix_cache()
    picks, gold = [], []
    starts = range(0, len(rows), batch)
    for start in tqdm(
        starts, desc=f"{label} K={k}", unit="batch", leave=False, disable=label is None
    ):
        qb = export_batch(export, vocab, rows[start : start + batch], k, steps, seed)
        picks.append(scorer.score(qb).argmax(1))
        gold.append(qb.target)
    return np.concatenate(picks), np.concatenate(gold)


def accuracy(*args: Any, **kwargs: Any) -> float:
    """Share of questions whose gold letter gets the highest logit (arguments of :func:`choices`)."""
    picks, gold = choices(*args, **kwargs)
    return float((picks == gold).mean()) if len(gold) else 0.0


def mean_pairwise_cosine(tokens: torch.Tensor) -> float:
    """Mean cosine similarity over distinct pairs of ``[n, H]`` tokens."""
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
    sims = unit @ unit.T
    n = len(unit)
    return float((sims.sum() - n) / max(1, n * (n - 1)))


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    """What a run did: the curve (questions seen -> validation Acc), the best point, timings."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_questions: int = 0
    questions_seen: int = 0
    samples_per_s: float = 0.0
    final_loss: float = math.nan
    stopped_early: bool = False
    trainable: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    resumed_from: int = 0


def trainable_report(scorer: OptionScorer) -> dict[str, int]:
    """Trainable and total parameter counts; the backbone's own weights must be frozen."""
    total = sum(p.numel() for p in scorer.parameters())
    trainable = sum(p.numel() for p in scorer.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def question_loss(
    scorer: OptionScorer, batch: QuestionBatch, recipe: RecipeSettings
) -> torch.Tensor:
    """Cross-entropy at the answer position only: over the K letters, or (the paper's LM loss)
    over the whole vocabulary with the gold letter's token as target."""
    states = scorer.answer_states(batch)
    target = torch.as_tensor(batch.target, device=states.device)
    if recipe.loss == "vocab":
        letters = torch.as_tensor(scorer.letter_ids, device=states.device)
        return torch.nn.functional.cross_entropy(scorer.vocab_logits(states), letters[target])
    return torch.nn.functional.cross_entropy(
        scorer.letter_logits(states, batch.num_options), target
    )


def lora_parameters(scorer: OptionScorer) -> list[torch.nn.Parameter]:
    """The LoRA matrices PEFT added (the only backbone-side weights that train)."""
    return [p for n, p in scorer.backbone.model.named_parameters() if "lora_" in n]


def _k_for(questions_done: int, recipe: RecipeSettings, rng: np.random.Generator) -> int:
    if questions_done < recipe.first_k_questions:
        return min(recipe.options)
    return int(rng.choice(recipe.options))


def train(
    scorer: OptionScorer,
    recipe: RecipeSettings,
    settings: LlmTrainConfig,
    train_export: ExportedSplit,
    train_rows: np.ndarray,
    valid_export: ExportedSplit,
    valid_rows: np.ndarray,
    *,
    progress: bool = True,
    checkpoint: llm_checkpoint.Checkpoint | None = None,
    resume: llm_checkpoint.Saved | None = None,
    facts: FactSource | None = None,
) -> TrainResult:
    """Train ``scorer`` in place on ``train_rows``; leaves it holding the best validated state.

    With ``checkpoint``, one is written after each validation; ``resume`` (that checkpoint, as
    the caller loaded and checked it) continues the run from where it was saved. ``facts`` is
    where the prompts' recent facts come from, for a recipe that shows them.
    """
    vocab = Vocabulary.of_export(train_export, facts)
    valid_vocab = Vocabulary.of_export(valid_export, facts)
    lora = lora_parameters(scorer)
    adapters = list(scorer.adapters.parameters()) if scorer.adapters is not None else []
    groups = [
        g
        for g in ({"params": lora, "lr": recipe.lr}, {"params": adapters, "lr": recipe.adapter_lr})
        if g["params"]
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    per_step = settings.batch * settings.accumulation
    total_steps = max(1, math.ceil(len(train_rows) / per_step))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, settings.warmup_steps)) * max(0.0, 1 - s / total_steps),
    )
    result = TrainResult(trainable=trainable_report(scorer))
    share = result.trainable["trainable"] / max(1, result.trainable["total"])
    log.info("llm_trainable", share=round(share, 5), **result.trainable)
    marks = sorted(
        {
            *settings.curve_at,
            *range(settings.valid_every, len(train_rows) + 1, settings.valid_every),
            len(train_rows),
        }
    )
    rng = np.random.default_rng(settings.seed)
    best_state: dict[str, torch.Tensor] | None = None
    at = LoopPosition(marks=[m for m in marks if m <= len(train_rows)])
    if resume is not None:
        at, best_state = resume.position, resume.best or None
        _load_trainable_state(scorer, resume.now)
        optimizer.load_state_dict(resume.optimizer)
        schedule.load_state_dict(resume.schedule)
        torch.set_rng_state(resume.torch_rng)
        rng.bit_generator.state = at.rng_state
        result = TrainResult(**{**at.result, "resumed_from": at.seen})
        log.info("llm_resumed", questions=at.seen, step=at.step, best=result.best_questions)
    start, valid_s = time.perf_counter(), 0.0
    bar = tqdm(
        total=len(train_rows), initial=at.seen, unit="q", desc="train llm", disable=not progress
    )
    optimizer.zero_grad(set_to_none=True)
    while at.seen < len(train_rows):
        aligning = at.seen < recipe.align_questions
        for p in lora:
            p.requires_grad_(not aligning)
        scorer.train()
        k = _k_for(at.seen, recipe, rng)
        rows = train_rows[at.seen : at.seen + settings.batch]
        batch = export_batch(train_export, vocab, rows, k, recipe.steps, settings.seed)
        loss = question_loss(scorer, batch, recipe)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {loss.item()} at step {at.step} "
                f"(questions {at.seen}..{at.seen + len(rows)})"
            )
        (loss / settings.accumulation).backward()
        at.seen += len(rows)
        result.final_loss = loss.item()
        stepped = (at.seen // settings.batch) % settings.accumulation == 0
        if stepped or at.seen >= len(train_rows):
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], settings.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            at.step += 1
        leg_s = time.perf_counter() - start - valid_s  # this process's training time so far
        bar.update(len(rows))
        bar.set_postfix(
            loss=f"{result.final_loss:.3f}",
            K=k,
            qps=f"{(at.seen - result.resumed_from) / max(1e-9, leg_s):.2f}",
            align=aligning,
        )
        if at.step % 20 == 1 and scorer.adapters is not None:
            _warn_collapse(scorer, batch, result)
        validated = False
        while at.marks and at.seen >= at.marks[0]:
            mark, began, validated = at.marks.pop(0), time.perf_counter(), True
            acc = accuracy(
                scorer,
                valid_export,
                valid_vocab,
                valid_rows,
                settings.valid_k,
                recipe.steps,
                settings.seed,
                settings.batch * 2,
            )
            result.curve.append(
                {
                    "train_questions": mark,
                    "acc": acc,
                    "K": settings.valid_k,
                    "loss": result.final_loss,
                }
            )
            log.info(
                "llm_validated",
                questions=mark,
                acc=round(acc, 4),
                k=settings.valid_k,
                loss=round(result.final_loss, 4),
            )
            if acc > result.best_acc:
                result.best_acc, result.best_questions, at.since_best = acc, mark, 0
                best_state = _trainable_state(scorer)
            else:
                at.since_best += 1
            valid_s += time.perf_counter() - began  # validation time is not training time
        if validated and checkpoint is not None and stepped:  # no gradient left half-summed
            at.rng_state, at.result = rng.bit_generator.state, asdict(result)
            llm_checkpoint.save(
                checkpoint, at, _trainable_state(scorer), best_state, optimizer, schedule
            )
        if at.since_best >= settings.patience:
            result.stopped_early = True
            log.info("llm_early_stop", questions=at.seen, best=result.best_questions)
            break
    bar.close()
    result.questions_seen = at.seen
    leg_s = time.perf_counter() - start - valid_s
    result.samples_per_s = (at.seen - result.resumed_from) / max(1e-9, leg_s)  # this leg's
    if best_state is not None:
        _load_trainable_state(scorer, best_state)
    scorer.refresh_prefix_cache()
    scorer.eval()
    return result


def _warn_collapse(scorer: OptionScorer, batch: QuestionBatch, result: TrainResult) -> None:
    """Seed pitfall QP-1: projected graph tokens that all look alike carry nothing."""
    with torch.no_grad():
        cand = torch.as_tensor(
            np.ascontiguousarray(batch.candidates[:, :, -1]), dtype=torch.float32
        )
        tokens = scorer.adapters.entity(cand.reshape(-1, cand.shape[-1]))
    cosine = mean_pairwise_cosine(tokens)
    if cosine > COLLAPSE_COSINE:
        message = f"graph tokens collapsed: mean pairwise cosine {cosine:.3f} > {COLLAPSE_COSINE}"
        if message not in result.warnings:
            result.warnings.append(message)
        log.warning("graph_tokens_collapsed", cosine=round(cosine, 4))


def _trainable_state(scorer: OptionScorer) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone()
        for n, p in scorer.named_parameters()
        if "lora_" in n or n.startswith("adapters.")
    }


def _load_trainable_state(scorer: OptionScorer, state: dict[str, torch.Tensor]) -> None:
    params = dict(scorer.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
