"""``geopol bench llm``: option-scoring and training throughput of the LLM stage, side by side
with a plain transformers / peft baseline on the same prompts, model and dtype.

- **ours** is :meth:`OptionScorer.score`, the served path: the shared prompt prefix's keys/values
  are cached once, the decoder runs over the question-specific suffix only (right-padded), and the
  LM head runs at the answer position over the K letter rows only.
- **plain** is what a user of transformers writes: the whole prompt (prefix included) as
  ``inputs_embeds`` with the same graph-token rows spliced in, a padded batch with an attention
  mask, ``model(inputs_embeds=..., attention_mask=...)`` computing the LM head over every position.

Both count the same tokens per question (prefix + suffix: the full prompt each question
represents), so ``ratio`` is the speed-up of the served path. Training compares our step
(``train.question_loss``, backward, AdamW on LoRA + adapters) with a plain peft step (full-sequence
forward with labels masked to the answer letter, ``model(..., labels=...)``, AdamW on LoRA).

Questions come from an embedding export (``--data``) or, by default, from a synthetic one with
K=10, T=3, d=200 and realistic actor names, so no graph stage has to run first.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from services.llm.adapters import bank_index
from services.llm.backbone import BackboneError, load_backbone, pick_dtype, resolve
from services.llm.model import build_scorer, with_lora
from services.llm.prompt import render
from services.llm.questions import QuestionBatch, Vocabulary, export_batch
from services.llm.scoring import OptionScorer
from services.llm.torch_process import configure_torch
from services.llm.train import lora_parameters, question_loss
from shared.bench import machine, report
from shared.config import DEFAULT_CONFIG, ConfigError, RecipeSettings, load_config
from shared.embedding_export import (
    QUERY_COLUMNS,
    ExportedSplit,
    ExportError,
    gold_rows,
    load_export,
    write_small_export,
)
from shared.log import configure_logging, get_logger

log = get_logger(__name__)

COMMAND = "geopol bench llm"
SYNTHETIC_K, SYNTHETIC_T, SYNTHETIC_D = 10, 3, 200
SECTORS = (
    "Citizen",
    "Government",
    "Police",
    "Military",
    "Head of Government",
    "Foreign Affairs",
    "Opposition Activist",
    "Protester",
    "Business",
    "Media",
    "Judiciary",
    "Armed Rebel",
)
COUNTRIES = (
    "India",
    "Pakistan",
    "Nigeria",
    "Russian Federation",
    "Ukraine",
    "United States",
    "China",
    "Iran",
    "Israel",
    "Afghanistan",
    "South Korea",
    "Japan",
    "Brazil",
    "Egypt",
    "Georgia",
)
RELATIONS = (
    "Make statement",
    "Consult",
    "Express intent to meet or negotiate",
    "Make an appeal or request",
    "Criticize or denounce",
    "Use conventional military force",
    "Host a visit",
    "Make a visit",
    "Praise or endorse",
    "Arrest, detain, or charge with legal action",
    "Engage in negotiation",
    "Make pessimistic comment",
    "Threaten",
    "Provide economic aid",
    "Sign formal agreement",
    "Accuse",
    "Demand",
    "Reject",
    "Express intent to cooperate",
    "Engage in diplomatic cooperation",
)


# --------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn`` (GPU work included)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def per_second(count: float, seconds: float) -> float:
    return count / max(seconds, 1e-12)


def matmul_gflops(host: dict[str, object], dtype: torch.dtype) -> float:
    """The machine's measured matmul rate in ``dtype``'s family (half precision: bf16's)."""
    key = "matmul_gflops_fp32" if dtype == torch.float32 else "matmul_gflops_bf16"
    return float(host[key])  # type: ignore[arg-type]


def backbone_parameters(model: torch.nn.Module) -> int:
    """Parameters of the backbone itself (LoRA's are left out; tied embeddings count once)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


# --------------------------------------------------------------------------- questions


def write_synthetic_export(directory: Path, n: int, seed: int = 0) -> Path:
    """An export of ``n`` random questions (K=10, T=3, d=200) with ICEWS-like names, in the
    shared layout (as tests/llm/tiny_llm.py writes one)."""
    k, t, d = SYNTHETIC_K, SYNTHETIC_T, SYNTHETIC_D
    rng = np.random.default_rng(seed)
    entities = [f"{sector} ({country})" for country in COUNTRIES for sector in SECTORS]
    ids = np.stack([rng.choice(len(entities), size=k, replace=False) for _ in range(n)])
    gold = rng.integers(k, size=n)
    queries = np.stack(
        [
            rng.integers(len(entities), size=n),
            rng.integers(2 * len(RELATIONS), size=n),
            ids[np.arange(n), gold],
            np.sort(rng.integers(300, 365, size=n)),
        ],
        axis=1,
    )
    arrays = {
        "subject": rng.normal(size=(n, t, d)).astype(np.float32),
        "relation": rng.normal(size=(n, d)).astype(np.float32),
        "candidates": (rng.normal(size=(n, k, t, d)) * 0.3).astype(np.float32),
        "scores": rng.normal(size=(n, k)).astype(np.float32),
        "query": rng.normal(size=(n, d)).astype(np.float32),
        "recurrency": rng.random(size=(n, k)).astype(np.float32),
        "candidate_ids": ids.astype(np.int64),
        "gold_index": gold.astype(np.int64),
        "queries": queries.astype(np.int64),
    }
    fields = {
        "protocol": "tgl-mcq",
        "num_candidates": k,
        "steps": t,
        "dim": d,
        "graph_artifact": "0" * 64,
        "dataset": "SYNTHETIC",
        "split": "test",
        "query_columns": list(QUERY_COLUMNS),
        "entity_names": entities,
        "relation_names": list(RELATIONS),
        "calendar": {"origin_utc": "2014-01-01T00:00:00+00:00", "step_seconds": 86400},
        "counts": {"exported": n},
    }
    write_small_export(directory, arrays, fields)
    return directory


def question_batches(
    export: ExportedSplit, count: int, batch: int, k: int, steps: int
) -> list[QuestionBatch]:
    """The first ``count`` answerable questions of the export, ``batch`` at a time."""
    rows = gold_rows(export)[:count]
    if len(rows) < count:
        raise ExportError(f"{count} questions asked, the export offers {len(rows)} with a gold")
    vocab = Vocabulary.of_export(export)
    return [
        export_batch(export, vocab, rows[i : i + batch], k, steps, seed=0)
        for i in range(0, count, batch)
    ]


# --------------------------------------------------------------------------- the plain baseline


def _graph_bank(scorer: OptionScorer, batch: QuestionBatch, device: torch.device) -> torch.Tensor:
    tensors = [
        torch.as_tensor(np.ascontiguousarray(a), device=device, dtype=torch.float32)
        for a in (batch.subject, batch.relation, batch.candidates, batch.scores, batch.query)
    ]
    return scorer.adapters.bank(*tensors)


def plain_inputs(
    scorer: OptionScorer, batch: QuestionBatch, append: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole prompt of every question as a naive user builds it: each rendered prompt
    tokenized in full (prefix included, no cache), the graph-token rows spliced into
    ``inputs_embeds``, right-padded with an attention mask. ``append`` adds one token per
    question after the answer lead (the gold letter, for training).

    Returns ``inputs_embeds [B, L, H]``, ``attention_mask [B, L]`` and the answer positions."""
    tokenizer = scorer.backbone.tokenizer
    rows, slot_pos, slots = [], [], None
    for i, text in enumerate(batch.texts):
        rendered = render(text, scorer.style, scorer.template)
        ids = tokenizer.encode(rendered.prefix, add_special_tokens=False)
        positions = []
        for piece in rendered.body:
            if isinstance(piece, str):
                ids.extend(tokenizer.encode(piece, add_special_tokens=False))
            else:
                positions.append(len(ids))
                ids.append(scorer.pad_id)
        if append is not None:
            ids.append(int(append[i]))
        rows.append(ids)
        slot_pos.append(positions)
        slots = slots or rendered.slots()
    device = scorer.backbone.model.device
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), scorer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    answer = torch.tensor([len(r) - 1 - (append is not None) for r in rows], device=device)
    x = scorer.model.get_input_embeddings()(input_ids.to(device))
    if scorer.adapters is not None:
        bank = _graph_bank(scorer, batch, device).to(x.dtype)
        rows_index = torch.tensor(bank_index(slots or [], scorer.style.steps, batch.num_options))
        positions = torch.tensor(slot_pos, dtype=torch.long, device=device)
        who = torch.arange(len(rows), device=device)[:, None].expand_as(positions)
        x = x.index_put((who, positions), bank[:, rows_index.to(device)])
    return x.to(scorer.backbone.dtype), mask.to(device), answer


@torch.no_grad()
def prompt_tokens(scorer: OptionScorer, batch: QuestionBatch) -> list[int]:
    """Tokens each question's full prompt holds (prefix + suffix), checked against ours."""
    _, mask, _ = plain_inputs(scorer, batch)
    counts = mask.sum(1).tolist()
    encoded = scorer.encode(batch)
    prefix = len(
        scorer.backbone.tokenizer.encode(
            render(batch.texts[0], scorer.style, scorer.template).prefix, add_special_tokens=False
        )
    )
    ours = (encoded.answer_positions + 1 + prefix).tolist()
    if ours != counts:
        raise RuntimeError(f"our prompts hold {ours} tokens, the plain ones {counts}")
    return counts


@torch.no_grad()
def plain_score(scorer: OptionScorer, batch: QuestionBatch) -> np.ndarray:
    """``[B, K]`` letter logits from a full forward with the LM head over every position."""
    x, mask, answer = plain_inputs(scorer, batch)
    logits = scorer.model(inputs_embeds=x, attention_mask=mask).logits
    rows = logits[torch.arange(len(batch), device=logits.device), answer]
    return rows[:, scorer.letter_ids[: batch.num_options]].float().cpu().numpy()


def plain_train_step(
    scorer: OptionScorer, batch: QuestionBatch, optimizer: torch.optim.Optimizer
) -> float:
    """One plain peft step: labels masked to the answer letter, loss from ``model(labels=)``."""
    letters = [scorer.letter_ids[t] for t in batch.target]
    with torch.no_grad():  # the plain baseline trains LoRA only; graph tokens are fixed inputs
        x, mask, answer = plain_inputs(scorer, batch, append=letters)
    labels = torch.full(mask.shape, -100, dtype=torch.long, device=mask.device)
    rows = torch.arange(len(batch), device=mask.device)
    labels[rows, answer + 1] = torch.tensor(letters, device=mask.device)
    loss = scorer.model(inputs_embeds=x, attention_mask=mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def our_train_step(
    scorer: OptionScorer,
    batch: QuestionBatch,
    recipe: RecipeSettings,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One step as services/llm/train.py takes it (without clipping and the schedule)."""
    loss = question_loss(scorer, batch, recipe)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# --------------------------------------------------------------------------- the run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--backbone", type=Path, help="HF model directory (default: llm.backbone)")
    parser.add_argument("--data", type=Path, help="embedding export (default: a synthetic one)")
    parser.add_argument("--questions", type=int, default=32, help="questions (default 32)")
    parser.add_argument("--batch", type=int, default=8, help="questions per pass (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats, best kept")
    parser.add_argument("--reports", type=Path, default=report.REPORTS_DIR, help="reports folder")
    return parser


def _best(
    repeats: int, device: torch.device, fns: dict[str, Callable[[], object]]
) -> dict[str, float]:
    """Best seconds of each callable over ``repeats`` rounds, the callables taking turns."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], seconds_of(fn, device))
    return best


def measure(
    scorer: OptionScorer,
    recipe: RecipeSettings,
    batches: list[QuestionBatch],
    repeats: int,
) -> dict[str, float]:
    """Scoring and training throughput of ours and the plain baseline (mutates the LoRA)."""
    device = scorer.backbone.model.device
    tokens = sum(sum(prompt_tokens(scorer, b)) for b in batches)
    questions = sum(len(b) for b in batches)
    scorer.eval()
    scorer.refresh_prefix_cache()
    ours0, plain0 = scorer.score(batches[0]), plain_score(scorer, batches[0])  # warm-up
    agreement = float(np.abs(ours0 - plain0).max())
    scoring = _best(
        repeats,
        device,
        {
            "ours": lambda: [scorer.score(b) for b in batches],
            "plain": lambda: [plain_score(scorer, b) for b in batches],
        },
    )
    lora = lora_parameters(scorer)
    adapters = list(scorer.adapters.parameters()) if scorer.adapters is not None else []
    ours_opt = torch.optim.AdamW(
        [{"params": lora, "lr": recipe.lr}, {"params": adapters, "lr": recipe.adapter_lr}]
    )
    plain_opt = torch.optim.AdamW(lora, lr=recipe.lr)
    scorer.train()
    our_train_step(scorer, batches[0], recipe, ours_opt)  # warm-up (optimiser state)
    plain_train_step(scorer, batches[0], plain_opt)
    training = _best(
        repeats,
        device,
        {
            "ours": lambda: [our_train_step(scorer, b, recipe, ours_opt) for b in batches],
            "plain": lambda: [plain_train_step(scorer, b, plain_opt) for b in batches],
        },
    )
    scorer.refresh_prefix_cache()
    scorer.eval()
    return {
        "tokens": tokens,
        "questions": questions,
        "tokens_per_s": per_second(tokens, scoring["ours"]),
        "hf_forward_tokens_per_s": per_second(tokens, scoring["plain"]),
        "train_samples_per_s": per_second(questions, training["ours"]),
        "hf_train_samples_per_s": per_second(questions, training["plain"]),
        "max_abs_logit_diff": agreement,
    }


def run(args: argparse.Namespace, data_dir: Path) -> tuple[dict[str, object], str]:
    config = load_config(args.config)
    configure_logging("llm", config.logging.level, config.logging.format)
    configure_torch(config.llm)
    export = load_export(args.data or write_synthetic_export(data_dir, args.questions))
    base = config.llm.recipes[config.llm.train.recipe]
    recipe = base.model_copy(
        update={
            "graph_tokens": True,
            "query_token": True,
            "letter_tags": True,
            "steps": min(base.steps, export.steps),
        }
    )
    k = min(10, export.num_candidates)
    batches = question_batches(export, args.questions, args.batch, k, recipe.steps)
    dtype = pick_dtype(config.llm.dtype)
    device = "cuda" if torch.cuda.is_available() else None
    source = resolve(args.backbone or config.llm.backbone, config.backbone_cache)
    backbone = load_backbone(source, dtype, device=device)
    params = backbone_parameters(backbone.model)
    with_lora(backbone, config.llm.lora, seed=0)
    scorer = build_scorer(recipe, backbone, export.dim, seed=0)
    if scorer.adapters is not None:
        scorer.adapters.to(backbone.model.device)
    found = measure(scorer, recipe, batches, args.repeats)
    log.info("llm_bench_measured", **{k: round(v, 6) for k, v in found.items()})
    host = machine.record(args.reports)
    gflops = matmul_gflops(host, dtype)
    achieved = 2 * params * found["tokens_per_s"]
    tps, hf = round(found["tokens_per_s"], 1), round(found["hf_forward_tokens_per_s"], 1)
    section: dict[str, object] = {
        "backbone": source.name,
        "dtype": str(dtype).removeprefix("torch."),
        "questions": int(found["questions"]),
        "prompt_tokens": round(found["tokens"] / found["questions"], 1),
        "tokens_per_s": tps,
        "hf_forward_tokens_per_s": hf,
        "ratio": round(tps / hf, 3),
        "fraction_of_matmul": round(achieved / (gflops * 1e9), 4),
        "train_samples_per_s": round(found["train_samples_per_s"], 3),
        "hf_train_samples_per_s": round(found["hf_train_samples_per_s"], 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    where = host["gpu"] or f"CPU: {host['cpu']}, {host['cores']} cores"
    reproduce = f"{COMMAND} --questions {args.questions} --batch {args.batch}"
    reproduce += f" --repeats {args.repeats}"
    if args.data:
        reproduce += f" --data {args.data}"
    if args.backbone:
        reproduce += f" --backbone {args.backbone}"
    markdown = (
        "## llm\n\n"
        f"Reproduce: `{reproduce}` (`make bench`). {source.name} ({params / 1e6:.3g}M parameters, "
        f"{section['dtype']}, LoRA rank {config.llm.lora.rank}) scoring {section['questions']} "
        f"K={k} questions of {section['prompt_tokens']} prompt tokens on average, "
        f"{args.batch} per pass, best of {args.repeats}; {where}. *ours*: cached prefix, suffix "
        "only, letter rows of the LM head at the answer; *plain*: a transformers forward over "
        "the whole prompt with the full LM head (training: peft with masked labels). Letter "
        f"logits of the two agree to {found['max_abs_logit_diff']:.2g}.\n\n"
        "| tokens/s ours | tokens/s plain | ratio | fraction of matmul | "
        "train samples/s ours | train samples/s plain | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {section['tokens_per_s']} | {section['hf_forward_tokens_per_s']} | "
        f"{section['ratio']} | {section['fraction_of_matmul']} | "
        f"{section['train_samples_per_s']} | {section['hf_train_samples_per_s']} | "
        f"{section['peak_rss_mb']} |"
    )
    return section, markdown


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.questions < 1 or args.batch < 1 or args.repeats < 1:
        print(f"{COMMAND}: --questions, --batch and --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="geopol-bench-llm-") as tmp:
            section, markdown = run(args, Path(tmp) / "export")
    except (ConfigError, ExportError, BackboneError, OSError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    path = report.write_section("llm", section, markdown, args.reports)
    print(f"llm: {section} -> {path}")
    return 0
