"""The hybrid prompt (TGL-LLM §4.2): question text with graph-token slots, in the backbone's chat
template, and the same prompt as text a person can read.

Layout (``paper``, as the authors' code orders it; the paper's Fig. 2 shows the same groups)::

    system:    what to do, and to answer with the option's letter
    user:      Query: (Subject, Relation, Date)
               Subject feature: [f][s1]..[sT]
               Relation feature: [f][r]
               [Query feature: [f][q]]                        variant (b), decoder-query token
               Option features: [f][A1]..[AT][A score] [f][B1].. variant (d) adds the score slot
               [Recent facts about Subject:                  tgl-llm-facts (recipe facts: N)
                2014-03-02 Subject — Relation — Object ...]  newest first, before the date
               Options: A. name, B. name, ...
    assistant: The answer is| <letter>

``interleaved`` (ours) puts each option's graph tokens right after its name ("A. name [f][A1]..")
so the letter and the tokens it stands for are neighbours. Without graph tokens (``llm-raw``) the
feature lines are left out. ``[f]`` is the one learned feature vector z_f shared by every slot.

A prompt is a list of :class:`Piece`: text, or a :class:`Slot` that scoring fills with a graph
token. The text before the first question-specific character is the same for every question
(:attr:`Rendered.prefix`), so its key/value cache is computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

LETTERS = "ABCDEFGHIJ"
TEMPLATE_VERSION = 1
ANSWER_LEAD = "The answer is"
SYSTEM = (
    "You forecast events between political actors. Given a query (Subject, Relation, Date) "
    "whose object is missing, choose the most likely object among the options. Each feature "
    "line carries graph embeddings of the subject, the relation and every option, in order. "
    "Answer with the letter of one option."
)
LAYOUTS = ("paper", "interleaved")
_SENTINEL = "\x1f"  # a control character no name or template contains


@dataclass(frozen=True)
class Slot:
    """One graph token: ``kind`` is feature, subject, relation, query, option or score; ``option``
    the option's position (letter order) and ``step`` the history step, where they apply."""

    kind: str
    option: int = -1
    step: int = -1

    def label(self) -> str:
        if self.kind == "feature":
            return "[f]"
        if self.kind in {"relation", "query"}:
            return f"[{self.kind}]"
        if self.kind == "subject":
            return f"[s{self.step + 1}]"
        letter = LETTERS[self.option]
        return f"[{letter} score]" if self.kind == "score" else f"[{letter}{self.step + 1}]"


Piece = str | Slot


@dataclass(frozen=True)
class PromptStyle:
    """What a recipe puts in the prompt; the same style must serve training and scoring."""

    layout: str = "paper"
    graph_tokens: bool = True
    query_token: bool = False
    score_tokens: bool = False
    steps: int = 3
    facts: int = 0
    """Recent facts about the subject listed before the options (``tgl-llm-facts``)."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"prompt layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.steps < 1:
            raise ValueError(f"prompt steps must be >= 1, got {self.steps}")
        if not self.graph_tokens and (self.query_token or self.score_tokens):
            raise ValueError("query or score tokens need graph_tokens on")


@dataclass(frozen=True)
class QuestionText:
    """The words of one question: names come from the dataset, the date from its calendar."""

    subject: str
    relation: str
    date: str
    options: Sequence[str]
    facts: Sequence[str] = ()
    """Dated lines of the subject's latest facts before the date, newest first."""


def format_date(when: datetime | None, step: int, step_seconds: int | None) -> str:
    """A calendar date (with the time when steps are shorter than a day), or ``step N``."""
    if when is None:
        return f"step {step}"
    if step_seconds is not None and step_seconds < 86400:
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.strftime("%Y-%m-%d")


def pieces(question: QuestionText, style: PromptStyle) -> list[Piece]:
    """The user turn of one question as text and slots, in reading order."""
    k, steps = len(question.options), style.steps
    out: list[Piece] = [f"Query: ({question.subject}, {question.relation}, {question.date})\n"]

    def option_group(j: int) -> list[Piece]:
        group: list[Piece] = [Slot("feature")]
        group += [Slot("option", j, i) for i in range(steps)]
        if style.score_tokens:
            group.append(Slot("score", j))
        return group

    if style.graph_tokens:
        out += [
            "Subject feature: ",
            Slot("feature"),
            *(Slot("subject", -1, i) for i in range(steps)),
        ]
        out += ["\nRelation feature: ", Slot("feature"), Slot("relation")]
        if style.query_token:
            out += ["\nQuery feature: ", Slot("feature"), Slot("query")]
        out.append("\n")
        if style.layout == "paper":
            out.append("Option features:")
            for j in range(k):
                out += [" ", *option_group(j)]
            out.append("\n")
    if style.facts and question.facts:
        out.append(f"Recent facts about {question.subject}:\n")
        out += [f"{line}\n" for line in question.facts[: style.facts]]
    if style.layout == "interleaved" and style.graph_tokens:
        out.append("Options:")
        for j, name in enumerate(question.options):
            out += [f"\n{LETTERS[j]}. {name} ", *option_group(j)]
    else:
        listed = ", ".join(f"{LETTERS[j]}. {name}" for j, name in enumerate(question.options))
        out.append(f"Options: {listed}")
    return out


@dataclass(frozen=True)
class Rendered:
    """A prompt in the chat template: ``prefix`` (the same for every question), then ``body``
    pieces ending with the answer lead; the letter's token follows the last piece."""

    prefix: str
    body: list[Piece]

    def text(self) -> str:
        """What the model sees, with each graph-token slot shown as a bracketed label."""
        return self.prefix + "".join(p if isinstance(p, str) else p.label() for p in self.body)

    def slots(self) -> list[Slot]:
        return [p for p in self.body if isinstance(p, Slot)]


def render(question: QuestionText, style: PromptStyle, chat_template: ChatTemplate) -> Rendered:
    """Apply the backbone's chat template around the question's pieces."""
    body = pieces(question, style)
    slots = [p for p in body if isinstance(p, Slot)]
    user = _SENTINEL + "".join(p if isinstance(p, str) else _SENTINEL for p in body)
    full = chat_template(SYSTEM, user) + ANSWER_LEAD
    prefix, _, rest = full.partition(_SENTINEL)
    texts = rest.split(_SENTINEL)
    if len(texts) != len(slots) + 1:
        raise ValueError("a question name contains the slot sentinel character")
    merged: list[Piece] = []
    for text, slot in zip(texts, [*slots, None], strict=True):
        if text:
            merged.append(text)
        if slot is not None:
            merged.append(slot)
    return Rendered(prefix, merged)


class ChatTemplate:
    """The backbone's chat template as ``(system, user) -> text`` with the assistant turn open."""

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer

    def __call__(self, system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return self._tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            messages, tokenize=False, add_generation_prompt=True
        )
