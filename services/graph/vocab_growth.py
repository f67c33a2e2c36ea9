"""Warm-starting RE-GCN on a grown vocabulary (pure numpy; no JAX).

A live store only ever appends ids (shared.store_vocab never reuses one), so a dataset exported
from it later has the earlier dataset's entities and relations as a prefix of its own. Retraining
from scratch every time would throw away what the model knows about every old actor; instead the
trained parameters are carried over and only the rows of the new ids are fresh:

- ``entity`` ``[N, d]``: rows ``0..N_old-1`` copied, the rest from a fresh initialisation;
- ``relation`` ``[2R, d]`` holds the relations, then their inverses (``r + R``), so growing R
  moves every inverse: forward rows ``0..R_old-1`` go to the same place, inverse row
  ``R_old + r`` goes to ``R + r``;
- every other parameter and batch statistic has no vocabulary dimension and is copied as is.

A new entity has no edges in the old snapshots and RE-GCN's messages only run along edges, so the
grown model gives every old query the same scores over the old candidates as the model it came
from (tests/graph/test_vocab_growth.py checks it).

The prefix is proved with the manifest's vocabulary hashes: the first ``N_old`` names of the new
dataset must hash to the old artifact's ``entities_sha256`` (likewise for relations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.manifest import vocab_sha256


class VocabularyGrowthError(ValueError):
    """The new vocabulary does not extend the old one; the message says which and where."""


@dataclass(frozen=True)
class Growth:
    """Vocabulary sizes before (the artifact warm-started from) and after (this dataset)."""

    entities: tuple[int, int]
    relations: tuple[int, int]

    @property
    def grown(self) -> bool:
        return self.entities[1] > self.entities[0] or self.relations[1] > self.relations[0]

    def to_dict(self) -> dict[str, list[int]]:
        """For the manifest's ``train_config.init_vocabulary``: ``[old, new]`` per kind."""
        return {"entities": list(self.entities), "relations": list(self.relations)}


def check_extends(
    data: dict[str, Any], entity_names: Sequence[str], relation_names: Sequence[str]
) -> Growth:
    """The growth from the vocabulary an artifact's ``data`` section describes to these names.

    Raises :class:`VocabularyGrowthError` if either new list is shorter than the old or does not
    start with the old names (the hash of its first ``n_old`` names differs).
    """
    sizes = {}
    for kind, names in (("entities", entity_names), ("relations", relation_names)):
        old = int(data[f"num_{kind}"])
        if len(names) < old:
            raise VocabularyGrowthError(
                f"{kind}: the artifact knows {old}, this dataset has {len(names)}; a vocabulary "
                "may only grow"
            )
        if vocab_sha256(list(names[:old])) != data[f"{kind}_sha256"]:
            raise VocabularyGrowthError(
                f"{kind}: the first {old} names of this dataset are not the artifact's "
                f"({kind}_sha256 differs), so its ids do not extend the artifact's"
            )
        sizes[kind] = (old, len(names))
    return Growth(sizes["entities"], sizes["relations"])


def grow(old: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """``old`` parameters with the vocabulary rows they lack taken from ``fresh`` (a new model's
    initialisation, whose shapes give the grown sizes); with no growth, ``old`` as it is."""
    entity, relation = np.asarray(old["entity"]), np.asarray(old["relation"])
    for name, array in (("entity", entity), ("relation", relation)):
        target = np.shape(fresh[name])
        if array.shape[0] > target[0] or array.shape[1:] != target[1:]:
            raise VocabularyGrowthError(
                f"{name} of the artifact is {list(array.shape)}, which does not fit in the "
                f"{list(target)} of this model"
            )
    n_old, r_old, r_new = (
        entity.shape[0],
        relation.shape[0] // 2,
        np.shape(fresh["relation"])[0] // 2,
    )
    grown_entity = np.array(fresh["entity"], dtype=np.float32)
    grown_entity[:n_old] = entity
    grown_relation = np.array(fresh["relation"], dtype=np.float32)
    grown_relation[:r_old] = relation[:r_old]
    grown_relation[r_new : r_new + r_old] = relation[r_old:]
    return {**old, "entity": grown_entity, "relation": grown_relation}
