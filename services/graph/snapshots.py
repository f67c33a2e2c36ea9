"""Input pipeline: one padded snapshot graph per time step, as RE-GCN builds them.

RE-GCN (Li et al., SIGIR 2021) sees the history as a sequence of KGs ``G_t``, one per distinct
timestamp (``split_by_time`` in the authors' code). Every snapshot graph holds all ``N`` entities
as nodes and, for each fact ``(s, r, o)``, an edge ``s -> o`` of type ``r`` and the inverse edge
``o -> s`` of type ``r + R``. Self-loops are not edges: the R-GCN layer adds ``W_2 h_o`` to every
node itself (Eq. 1; ``model.rgcn_layer``), choosing between two loop weights by whether the node
has an incoming edge at ``t``, as the original ``UnionRGCNLayer`` does. The relation evolution
(Eq. 4) needs, per relation, the set of entities it touches at ``t``: the deduplicated
``(relation, entity)`` pairs below (a relation and its inverse touch the same set).

Padding follows the jraph convention: a snapshot padded to ``size`` edges is a ``GraphsTuple``
of two graphs, the real one (``N`` nodes) and a padding graph whose single node has index ``N``;
padding edges go ``N -> N`` with relation id ``2R``. Index ``N`` (and ``2R``) is out of range for
the embedding tables, so the model reads zeros there and its segment sums over ``N`` (``2R``)
segments drop whatever lands on it. Sizes come from a short list of buckets (by default powers
of two and the midpoints 1.5x between them), so ``jit`` compiles once per bucket, not once per
snapshot, and at most a third of a padded step is padding.

The static entity-word graph of the ICEWS datasets (``e-w-graph.txt``: ``entity k word`` lines)
is built the same way with words as nodes ``N .. N + W - 1``, edge types ``k`` and ``k + K``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jraph
import numpy as np

from services.graph.queries import with_inverse


class SnapshotArrays(NamedTuple):
    """One time step, unpadded: its edges (inverses included) and (relation, entity) pairs."""

    t: int
    senders: np.ndarray
    receivers: np.ndarray
    relations: np.ndarray
    pair_relation: np.ndarray
    pair_entity: np.ndarray

    @property
    def num_edges(self) -> int:
        return len(self.senders)


class History(NamedTuple):
    """The last ``k`` snapshots before a target step, padded to one size and stacked.

    Every leaf of ``graph`` and the pair arrays have a leading axis of length ``k``, oldest first.
    ``present[i]`` is False for leading slots with no snapshot (the first steps of the data,
    where RE-GCN uses a shorter history); the model leaves its state unchanged there.
    """

    graph: jraph.GraphsTuple
    pair_relation: np.ndarray
    pair_entity: np.ndarray
    present: np.ndarray


class Queries(NamedTuple):
    """Object queries ``(subject, relation, ?)`` with their answers, padded; ``mask`` marks real."""

    subject: np.ndarray
    relation: np.ndarray
    target: np.ndarray
    mask: np.ndarray


class Example(NamedTuple):
    """What one train or predict step consumes: a history and the next step's queries."""

    history: History
    queries: Queries


def split_by_time(facts: np.ndarray) -> list[np.ndarray]:
    """``(n, 4)`` facts ``s r o t`` -> one ``(n_t, 4)`` array per distinct ``t``, in time order."""
    facts = np.asarray(facts, dtype=np.int64).reshape(-1, 4)
    facts = facts[np.argsort(facts[:, 3], kind="stable")]
    bounds = np.flatnonzero(np.diff(facts[:, 3])) + 1
    return [chunk for chunk in np.split(facts, bounds) if len(chunk)]


def snapshot_arrays(facts: np.ndarray, num_relations: int) -> SnapshotArrays:
    """Edges ``s -r-> o`` and ``o -(r+R)-> s`` of one step, and the entities each relation touches.

    The pairs are deduplicated per relation: Eq. (4) mean-pools over the *set* ``V_{r,t}``.
    """
    times = np.unique(facts[:, 3])
    if len(times) != 1:
        raise ValueError(f"one snapshot holds one time step, got times {times[:5]}")
    s, r, o = facts[:, 0], facts[:, 1], facts[:, 2]
    touched = np.unique(
        np.stack(
            [
                np.concatenate([r, r, r + num_relations, r + num_relations]),
                np.concatenate([s, o, s, o]),
            ],
            axis=1,
        ),
        axis=0,
    )
    return SnapshotArrays(
        t=int(times[0]),
        senders=np.concatenate([s, o]).astype(np.int32),
        receivers=np.concatenate([o, s]).astype(np.int32),
        relations=np.concatenate([r, r + num_relations]).astype(np.int32),
        pair_relation=touched[:, 0].astype(np.int32),
        pair_entity=touched[:, 1].astype(np.int32),
    )


def default_buckets(largest: int, min_bucket: int = 64) -> tuple[int, ...]:
    """Half-octave sizes ``b, 1.5b, 2b, 3b, 4b, ...`` from ``min_bucket`` until ``largest`` fits.

    With powers of two alone every ICEWS14 step of more than 512 queries (the mean is about 490)
    would be padded to 1024, doubling the decoder's work; the midpoints keep padding under a
    third of the bucket for twice as many buckets (compilations).
    """
    sizes: list[int] = []
    octave = max(2, min_bucket)
    while True:
        for size in (octave, octave * 3 // 2):
            sizes.append(size)
            if size >= largest:
                return tuple(sizes)
        octave *= 2


def bucket_size(needed: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``needed`` elements."""
    for size in buckets:
        if size >= needed:
            return size
    raise ValueError(f"{needed} edges/queries exceed the largest bucket {buckets[-1]}")


def pad_snapshot(
    snap: SnapshotArrays | None, size: int, num_entities: int, num_relations: int
) -> tuple[jraph.GraphsTuple, np.ndarray, np.ndarray]:
    """A snapshot (or an empty slot when ``None``) as a padded graph and padded pairs.

    Edges are padded to ``size``, pairs to ``2 * size`` (a step with ``n`` facts has ``2n``
    edges and at most ``4n`` distinct pairs).
    """
    pad_node, pad_relation = num_entities, 2 * num_relations
    if snap is None:
        empty = np.zeros(0, dtype=np.int32)
        snap = SnapshotArrays(-1, empty, empty, empty, empty, empty)
    if snap.num_edges > size:
        raise ValueError(f"snapshot t={snap.t} has {snap.num_edges} edges, bucket is {size}")
    graph = jraph.GraphsTuple(
        nodes=None,
        edges=_pad(snap.relations, size, pad_relation),
        senders=_pad(snap.senders, size, pad_node),
        receivers=_pad(snap.receivers, size, pad_node),
        globals=None,
        n_node=np.array([num_entities, 1], dtype=np.int32),
        n_edge=np.array([snap.num_edges, size - snap.num_edges], dtype=np.int32),
    )
    pair_relation = _pad(snap.pair_relation, 2 * size, pad_relation)
    pair_entity = _pad(snap.pair_entity, 2 * size, pad_node)
    return graph, pair_relation, pair_entity


def make_history(
    snaps: list[SnapshotArrays], length: int, size: int, num_entities: int, num_relations: int
) -> History:
    """Stack the last ``length`` snapshots (fewer at the start: empty leading slots)."""
    recent = snaps[-length:]
    slots: list[SnapshotArrays | None] = [None] * (length - len(recent)) + list(recent)
    padded = [pad_snapshot(snap, size, num_entities, num_relations) for snap in slots]
    return History(
        graph=jax.tree.map(lambda *leaves: np.stack(leaves), *(g for g, _, _ in padded)),
        pair_relation=np.stack([pairs for _, pairs, _ in padded]),
        pair_entity=np.stack([ents for _, _, ents in padded]),
        present=np.array([snap is not None for snap in slots]),
    )


def make_queries(
    subject: np.ndarray, relation: np.ndarray, target: np.ndarray, size: int
) -> Queries:
    """Pad queries to ``size`` with index 0 and ``mask`` 0 (masked out of loss and batch norm)."""
    if len(subject) > size:
        raise ValueError(f"{len(subject)} queries exceed the bucket {size}")
    return Queries(
        subject=_pad(subject.astype(np.int32), size, 0),
        relation=_pad(relation.astype(np.int32), size, 0),
        target=_pad(target.astype(np.int32), size, 0),
        mask=_pad(np.ones(len(subject), dtype=np.float32), size, 0),
    )


def make_example(
    history: list[SnapshotArrays],
    queries: tuple[np.ndarray, np.ndarray, np.ndarray],
    length: int,
    num_entities: int,
    num_relations: int,
    buckets: tuple[int, ...],
) -> Example:
    """History and queries padded to one shared bucket, so a step compiles once per bucket."""
    needed = max([len(queries[0])] + [snap.num_edges for snap in history[-length:]])
    size = bucket_size(needed, buckets)
    return Example(
        history=make_history(history, length, size, num_entities, num_relations),
        queries=make_queries(*queries, size),
    )


def training_queries(facts: np.ndarray, num_relations: int) -> tuple[np.ndarray, ...]:
    """(subject, relation, target) of a step's facts and their inverses, as RE-GCN trains on."""
    quads = with_inverse(facts, num_relations)
    return quads[:, 0], quads[:, 1], quads[:, 2]


def load_static_triples(path: Path) -> np.ndarray:
    """``e-w-graph.txt``: ``entity<TAB>k<TAB>word`` lines -> ``(m, 3)`` int64."""
    triples = np.loadtxt(path, dtype=np.int64, ndmin=2)
    if triples.shape[1] != 3 or (triples < 0).any():
        raise ValueError(
            f"{path}: expected non-negative 'entity k word' lines, got {triples.shape}"
        )
    return triples


def static_counts(triples: np.ndarray) -> tuple[int, int]:
    """Words and edge types ``K`` of an entity-word graph: 0-based ids, so ``max + 1`` of each.

    The original counts distinct values, which is the same for the released files.
    """
    return int(triples[:, 2].max()) + 1, int(triples[:, 1].max()) + 1


def static_graph(triples: np.ndarray, num_entities: int) -> tuple[jraph.GraphsTuple, int, int]:
    """The entity-word graph with inverse edges; returns it, the word count and ``K``.

    Words are nodes ``N .. N + W - 1``; an edge ``entity -> word`` has type ``k``, its inverse
    ``k + K``. Entities absent from the file get no message (Eq. 6 sums over nothing), hence a
    zero static embedding, as in RE-GCN.
    """
    entity, kind, word = triples[:, 0], triples[:, 1], triples[:, 2]
    if entity.max(initial=-1) >= num_entities:
        raise ValueError(f"static graph names entity {entity.max()} >= {num_entities} entities")
    num_words, num_kinds = static_counts(triples)
    word_node = word + num_entities
    graph = jraph.GraphsTuple(
        nodes=None,
        edges=np.concatenate([kind, kind + num_kinds]).astype(np.int32),
        senders=np.concatenate([entity, word_node]).astype(np.int32),
        receivers=np.concatenate([word_node, entity]).astype(np.int32),
        globals=None,
        n_node=np.array([num_entities + num_words], dtype=np.int32),
        n_edge=np.array([2 * len(triples)], dtype=np.int32),
    )
    return graph, num_words, num_kinds


def _pad(values: np.ndarray, size: int, fill: int | float) -> np.ndarray:
    out = np.full(size, fill, dtype=values.dtype)
    out[: len(values)] = values
    return out
