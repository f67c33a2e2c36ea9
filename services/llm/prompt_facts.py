"""Text evidence for the prompt: the most recent facts about a question's subject (``tgl-llm-facts``).

TGL-LLM gives the model graph tokens but no history in words; the strongest published LLM
forecasters (GenTKG, Chain-of-History) put the retrieved history in the prompt as text. A recipe
with ``facts: N`` lists the subject's N most recent facts strictly before the question's step,
newest first, as dated lines ("2014-03-02 Barack Obama — Make statement — China") before the
options. They are read from an event store through :func:`shared.facts.recent_facts`, the very
retrieval the calibrate stage attaches to forecasts as evidence, so a fact shown to the model and
a fact shown to a reader are chosen the same way. The store is ``llm.facts_store`` (a benchmark
loaded with its own ids, such as ICEWS14), else the pipeline's own store, whose ids the exports
and EMBEDDINGS messages already use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from shared import facts as shared_facts
from shared.config import Config
from shared.event_store import EventStore

FactIds = tuple[int, int, int, int]
"""One fact as ids: ``(t, subject, relation, object)``."""
FactSource = Callable[[int, int], Sequence[FactIds]]
"""``(subject, step) -> facts`` strictly before ``step``, newest first."""
CACHE = 4096


class FactsError(ValueError):
    """A recipe asks for facts no store can give; the message names the recipe and the path."""


def store_source(store_dir: Path, limit: int) -> FactSource:
    """The ``limit`` newest facts of a subject before a step, from an existing event store (its
    step length read from its own store.json), cached per ``(subject, step)``."""
    meta = Path(store_dir) / "store.json"
    if not meta.is_file():
        raise FactsError(f"no event store at {store_dir} (store.json missing) to read facts from")
    step_minutes = int(json.loads(meta.read_text(encoding="utf-8"))["step_minutes"])
    store = EventStore(Path(store_dir), step_minutes=step_minutes)

    @lru_cache(maxsize=CACHE)
    def newest(subject: int, step: int) -> tuple[FactIds, ...]:
        found = shared_facts.recent_facts(store, subject, step, limit)
        return tuple((f.t, f.subject, f.relation, f.object) for f in found)

    return newest


def source_for(config: Config, count: int) -> FactSource | None:
    """Where prompts that show ``count`` facts (a recipe's ``facts``) read them; None for 0."""
    if not count:
        return None
    store_dir = Path(config.llm.facts_store) if config.llm.facts_store else config.store_dir
    try:
        return store_source(store_dir, count)
    except FactsError as exc:
        raise FactsError(
            f"the recipe shows {count} facts per question: {exc} (set llm.facts_store)"
        ) from None
