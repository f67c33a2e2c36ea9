"""The simulated world's exact answer to each question of a score table (``eval calibrate --truth``).

A score table holds rows of an embedding export (shared.score_table). The export gives each row's
query (``queries``: subject id, relation id, step) and the calendar of its steps; the dataset
folder the export was made from (``geopol dataset from-store``: entity2id.txt and relation2id.txt
list the event store's keys in id order) turns ids into the keys the simulator's truth files are
written in (shared.sim_truth). The result is, for every row, the world's probability of each of
its K candidates — what :func:`services.calibrate.resolution.against_truth` compares a forecast
with — and whether the row has a truth at all, with the reason when it has none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import score_table, sim_truth
from shared.calendar import step_date
from shared.embedding_export import ExportedSplit, load_export
from shared.tkg_dataset import display_names, load_tkg

#: why a row has no truth
NO_FILE = "no truth file for its slot"
NOT_ASKED = "its (subject, relation) not in the slot's truth"
INVERSE = "inverse relation"


class TruthError(ValueError):
    """The truth cannot be looked up; the message names the folder or file and what is wrong."""


@dataclass(frozen=True)
class RowTruth:
    """``true [n, K]``: the world's probability of each candidate (0 where ``known`` is False);
    ``known [n]``: the row has a truth; ``missing``: rows without one, by reason."""

    true: np.ndarray
    known: np.ndarray
    missing: dict[str, int]


def table_export(table: score_table.ScoreTable, source: str, export: Path | None) -> ExportedSplit:
    """The export ``table`` was scored from (``export``, else the folder its meta names), checked
    to hold its rows."""
    folder = export if export is not None else table.meta.get("export")
    if folder is None:
        raise TruthError(
            f"{source}: the table does not name the embedding export it was scored from "
            "(written before tables recorded it): pass --export DIR"
        )
    found = load_export(Path(folder))
    score_table.check_of_export(table, found, source)
    return found


def store_keys(dataset: Path, export: ExportedSplit) -> tuple[list[str], list[str]]:
    """Entity and relation keys in id order from the dataset folder, checked to be the ids the
    export was made with (its display names are the folder's, in the same order)."""
    data = load_tkg(dataset)
    names = display_names(data)
    if (names["entities"], names["relations"]) != (
        export.manifest.get("entity_names"),
        export.manifest.get("relation_names"),
    ):
        raise TruthError(
            f"dataset {dataset}: its entity/relation names are not those of embedding export "
            f"{export.directory} (pass the --data folder the export was made from)"
        )
    return data.entity_names, data.relation_names


def row_truth(
    table: score_table.ScoreTable,
    export: ExportedSplit,
    keys: tuple[list[str], list[str]],
    truth: Path,
) -> RowTruth:
    """Every row's true candidate probabilities, from the simulator's output folder ``truth``.

    Raises :class:`TruthError` naming ``truth`` when no row has a truth there."""
    entities, relations = keys
    calendar = export.manifest.get("calendar")
    if calendar is None or calendar.get("step_seconds") != sim_truth.SLOT_MINUTES * 60:
        raise TruthError(
            f"embedding export {export.directory}: steps {calendar} are not the simulator's "
            f"{sim_truth.SLOT_MINUTES}-minute slots, so {truth} cannot answer its questions"
        )
    queries = np.asarray(export.arrays["queries"])[np.asarray(table.rows)]
    true = np.zeros(table.candidate_ids.shape, dtype=np.float64)
    known = np.zeros(len(table), dtype=bool)
    missing: Counter[str] = Counter()
    for i, (subject, relation, _, t) in enumerate(queries.tolist()):
        if relation >= len(relations):
            missing[INVERSE] += 1
            continue
        by_key = sim_truth.slot_distribution(
            truth, step_date(calendar, t), entities[subject], relations[relation]
        )
        if not by_key:
            missing[NO_FILE if by_key is None else NOT_ASKED] += 1
            continue
        true[i] = [by_key.get(entities[c], 0.0) for c in table.candidate_ids[i].tolist()]
        known[i] = True
    if len(table) and not known.any():
        raise TruthError(
            f"{truth}: no {sim_truth.TRUTH_DIR}/ file answers any of the {len(table)} questions "
            f"({', '.join(f'{n} {why}' for why, n in missing.items())}); is it the simulator "
            "output folder of this run?"
        )
    return RowTruth(true=true, known=known, missing=dict(missing))
