"""A seeded stochastic world of geopolitical actors whose event stream a temporal model can learn.

Why it exists: the embedded default must run offline, and the calibration stage needs data whose
true next-step distribution is known exactly. This module is pure numpy (no I/O); one call to
:meth:`World.step` is one 15-minute GDELT 2.0 slot.

The generative process, in order of what drives an event ``s --r--> o`` at slot ``t+1``:

Actors
    CAMEO actor codes built from a real country code and an optional role type
    (``USA``, ``USAGOV``, ``RUSMIL``, ``GEOOPP``). Each actor has an *activity* weight drawn from a
    Pareto law (heavy tail: a few actors make most of the news), a latent *bloc angle* on a circle
    (actors close on the circle are allies) and a role *hawkishness* (MIL, REB, ... are more
    conflict-prone). New actors are born by a Poisson process (``birth_rate`` per slot) from the
    unused (country, role) codes, so downstream sees out-of-vocabulary entities.

Dyad intensity (discrete-time, Hawkes-like)
    ``lambda[s, o] = mu[s, o] + h[s, o]``. The base rate ``mu`` mixes a dense background
    proportional to ``activity[s] * activity[o]`` (every pair is possible) with a sparse set of
    *recurring dyads*: each actor, at birth, draws ``partners_per_actor`` partners preferentially by
    activity, and those pairs get a persistent affinity. ``mu`` is scaled so that the stationary
    mean number of events per slot is ``events_per_step``. The excitation decays and jumps::

        h[s, o] <- decay * h[s, o] + self_excitation * n[s, o] + reciprocity * n[o, s]

    where ``n`` counts the events of the slot just finished: an event makes its dyad recur
    (self-excitation) and makes the reverse dyad more likely (reciprocity).

Relation (CAMEO root code, a Markov chain conditioned on tension)
    Every dyad has a latent *tension level* in ``0 .. tension_levels-1`` (0 = allied, top = war),
    symmetric in ``(s, o)``, starting from a baseline set by bloc distance and hawkishness. The root
    code of the next event on ``(s, o)`` is drawn from ``T[level, previous_root]`` where::

        T[k, p, r] ∝ popularity[r] * exp(-(g[r] - target[k])**2 / (2 * bandwidth**2))
                     * exp(-|g[r] - g[p]| / ladder_scale) * (1 + stickiness * [r == p])

    ``g`` is the root's Goldstein value and ``target[k]`` slides from cooperation (+6) to conflict
    (-9) with the level; ``p`` is the root of the dyad's last event (either direction, so a reply
    follows the same or a neighbouring relation) or "none". Tension moves by escalation and
    de-escalation: a conflict event (QuadClass 3-4) raises the level with probability
    ``escalation``, a cooperation event (QuadClass 1-2) lowers it with the same probability; on top
    the level drifts at random (``tension_drift``) and reverts to its baseline (``tension_reversion``).
    The leaf EventCode is then drawn inside the root from a fixed per-root Dirichlet mix of the real
    CAMEO codes.

Sampling and exact truth
    Given the state at the end of slot ``t``, the events of slot ``t+1`` are a Poisson process over
    triples with rate ``lambda[s, o] * T[level[s, o], prev[s, o], r]``; they are conditionally
    independent within the slot. Hence, given that an event with subject ``s`` and root ``r``
    happens at ``t+1``, its object has the closed-form law::

        P(o | s, r) = lambda[s, o] T[level[s, o], prev[s, o], r] / sum_o' (same for o')

    :meth:`World.step` returns it for every (subject, root) that occurs in the slot, computed from
    the same arrays the sample was drawn from (never from samples). Births happen after the slot's
    events, so an actor born at the end of ``t`` can appear from ``t+1`` on.

Warm-up
    Before slot 0 the world runs ``warmup_steps`` unrecorded slots without births, so the first
    file already has dyad history and a near-stationary event rate, like a cut from a live feed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

ROOT_CODES: tuple[str, ...] = tuple(f"{i:02d}" for i in range(1, 21))
"""CAMEO root codes; the world's relation index ``r`` is a position in this tuple."""

QUAD_OF_ROOT = np.array([1] * 5 + [2] * 3 + [3] * 6 + [4] * 6, dtype=np.int8)
"""GDELT QuadClass per root: 01-05 verbal coop, 06-08 material coop, 09-14 verbal conflict,
15-20 material conflict."""

# Rough share of each root code in real GDELT (statements, consultations and appeals dominate);
# it shapes the relation mix so that the synthetic stream resembles the real one.
ROOT_POPULARITY = np.array(
    [
        0.20,
        0.05,
        0.07,
        0.20,
        0.05,
        0.02,
        0.03,
        0.02,
        0.02,
        0.03,
        0.05,
        0.03,
        0.02,
        0.03,
        0.01,
        0.02,
        0.05,
        0.04,
        0.06,
        0.005,
    ]
)

ROLE_WEIGHTS: dict[str, float] = {
    "": 0.18,
    "GOV": 0.30,
    "MIL": 0.12,
    "OPP": 0.08,
    "BUS": 0.08,
    "MED": 0.07,
    "REB": 0.05,
    "LEG": 0.04,
    "JUD": 0.03,
    "COP": 0.03,
    "CVL": 0.02,
}
"""Role types an actor code may carry (``""`` = the country itself) and how often they occur."""

ROLE_HAWKISHNESS: dict[str, float] = {
    "MIL": 1.0,
    "REB": 1.5,
    "OPP": 0.5,
    "COP": 0.5,
    "BUS": -0.5,
    "MED": -0.25,
}
"""Shift of a role's baseline tension level: armed actors start closer to conflict."""

NO_PREVIOUS = 0
"""``prev`` value of a dyad that has had no event yet; otherwise ``prev = root index + 1``."""

_INITIAL_CAPACITY_SLACK = 32


@dataclass(frozen=True)
class WorldParams:
    """Everything that, with the seed, fixes the world; saved to ``world.json`` for replay."""

    seed: int = 0
    n_actors: int = 60
    events_per_step: float = 80.0
    birth_rate: float = 0.15
    activity_tail: float = 1.2
    partners_per_actor: int = 3
    affinity_share: float = 0.7
    decay: float = 0.7
    self_excitation: float = 0.1
    reciprocity: float = 0.1
    warmup_steps: int = 32
    tension_levels: int = 9
    tension_drift: float = 0.01
    tension_reversion: float = 0.02
    escalation: float = 0.25
    relation_stickiness: float = 2.0
    goldstein_bandwidth: float = 4.0
    ladder_scale: float = 4.0

    def __post_init__(self) -> None:
        """Reject parameters that would make the process explode or be ill-defined."""
        if self.n_actors < 2:
            raise ValueError("n_actors must be at least 2")
        if self.partners_per_actor < 1:
            raise ValueError(
                "partners_per_actor must be at least 1: recurring dyads carry affinity"
            )
        if self.events_per_step <= 0 or self.birth_rate < 0:
            raise ValueError("events_per_step must be > 0 and birth_rate >= 0")
        if not 0 <= self.decay < 1:
            raise ValueError("decay must be in [0, 1)")
        if self.branching_ratio >= 0.95:
            raise ValueError(
                f"branching ratio {self.branching_ratio:.2f} >= 0.95: the process "
                "would explode; lower self_excitation/reciprocity or decay"
            )
        if not 0 <= self.affinity_share < 1:
            raise ValueError("affinity_share must be in [0, 1): every pair keeps a background rate")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.tension_levels < 2:
            raise ValueError("tension_levels must be at least 2")

    @property
    def branching_ratio(self) -> float:
        """Expected number of events one event triggers (must stay below 1 for stationarity)."""
        return (self.self_excitation + self.reciprocity) / (1.0 - self.decay)

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for ``world.json``."""
        return asdict(self)


@dataclass(frozen=True)
class Codebook:
    """The CAMEO event codes the world can emit and the Goldstein values that steer relations."""

    codes: tuple[str, ...]
    goldstein: tuple[float, ...]
    root_goldstein: np.ndarray

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, float]]) -> Codebook:
        """Build from ``(code, goldstein)`` rows: 2-digit roots steer, 3-4 digit codes are emitted."""
        table = dict(rows)
        missing = [root for root in ROOT_CODES if root not in table]
        if missing:
            raise ValueError(f"CAMEO table lacks root codes {missing}")
        codes = tuple(sorted(c for c in table if len(c) in (3, 4) and c[:2] in ROOT_CODES))
        return cls(
            codes=codes,
            goldstein=tuple(table[c] for c in codes),
            root_goldstein=np.array([table[r] for r in ROOT_CODES], dtype=np.float64),
        )


@dataclass(frozen=True)
class Actor:
    """One CAMEO actor; ``birth_step`` is the first slot it can appear in (0 = from the start)."""

    code: str
    country: str
    role: str
    birth_step: int
    activity: float


@dataclass(frozen=True)
class StepEvents:
    """The events of one slot as parallel arrays of actor, code and root indices."""

    subject: np.ndarray
    object: np.ndarray
    code: np.ndarray
    root: np.ndarray

    def __len__(self) -> int:
        """Number of events in the slot."""
        return int(self.subject.size)


@dataclass(frozen=True)
class StepTruth:
    """Exact ``P(object | subject, root)`` for each query; row ``q`` sums to 1 over actors."""

    subject: np.ndarray
    root: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True)
class Step:
    """What one slot produced: its index, its events and the truth they were drawn from."""

    t: int
    events: StepEvents
    truth: StepTruth


def relation_table(params: WorldParams, root_goldstein: np.ndarray) -> np.ndarray:
    """``T[level, prev, r]``: the root-code Markov chain conditioned on tension (see module doc)."""
    target = np.linspace(6.0, -9.0, params.tension_levels)
    fit = np.exp(
        -((root_goldstein[None, :] - target[:, None]) ** 2) / (2.0 * params.goldstein_bandwidth**2)
    )
    distance = np.abs(root_goldstein[None, :] - root_goldstein[:, None])
    ladder = np.exp(-distance / params.ladder_scale)
    ladder *= 1.0 + params.relation_stickiness * np.eye(len(ROOT_CODES))
    ladder = np.vstack([np.ones(len(ROOT_CODES)), ladder])
    table = ROOT_POPULARITY[None, None, :] * fit[:, None, :] * ladder[None, :, :]
    return table / table.sum(axis=-1, keepdims=True)


def _categorical(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF draw: ``cdf`` is (k, m) cumulative, ``u`` uniform in [0, 1)."""
    picks = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    return np.minimum(picks, cdf.shape[1] - 1)


class World:
    """The evolving state; :meth:`step` samples one slot and returns it with its exact truth."""

    def __init__(self, params: WorldParams, codebook: Codebook, countries: Sequence[str]) -> None:
        """Draw the initial actors, affinities and tensions from ``np.random`` seeded by the params."""
        self.params = params
        self.codebook = codebook
        self.t = 0
        self._rng = np.random.default_rng([params.seed, 0])
        self._relations = relation_table(params, codebook.root_goldstein)
        self._leaf_cdf, self._leaf_code = self._leaf_tables()
        self._free_codes = list(product(sorted(set(countries)), ROLE_WEIGHTS))
        if len(self._free_codes) < params.n_actors:
            raise ValueError(
                f"only {len(self._free_codes)} actor codes for {params.n_actors} actors"
            )
        self.actors: list[Actor] = []
        self._allocate(params.n_actors + _INITIAL_CAPACITY_SLACK)
        for _ in range(params.n_actors):
            self._add_actor(birth_step=0)
        self._refresh_base()
        self._warm_up()

    @property
    def n_actors(self) -> int:
        """Actors alive now (all actors ever born: nobody dies)."""
        return len(self.actors)

    def step(self) -> Step:
        """Sample slot ``t`` from the state after slot ``t-1``, record its truth, then advance."""
        intensity = self._intensity()
        events = self._sample(intensity)
        truth = self._truth(intensity, events)
        self._update(events)
        self.t += 1
        self._births()
        return Step(t=self.t - 1, events=events, truth=truth)

    # -- construction -------------------------------------------------------------------------

    def _leaf_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per root, a fixed random mix over its leaf codes as padded (20, m) CDF/index tables."""
        members = [
            [i for i, c in enumerate(self.codebook.codes) if c[:2] == root] for root in ROOT_CODES
        ]
        width = max(len(m) for m in members)
        cdf = np.ones((len(ROOT_CODES), width))
        index = np.zeros((len(ROOT_CODES), width), dtype=np.int64)
        for r, codes in enumerate(members):
            weights = self._rng.dirichlet(np.full(len(codes), 0.7))
            cdf[r, : len(codes)] = np.cumsum(weights)
            index[r, : len(codes)] = codes
            index[r, len(codes) :] = codes[-1]
        return cdf, index

    def _allocate(self, capacity: int) -> None:
        """Create the per-actor and per-dyad arrays with room for ``capacity`` actors."""
        self._cap = capacity
        self._activity = np.zeros(capacity)
        self._angle = np.zeros(capacity)
        self._hawk = np.zeros(capacity)
        self._affinity = np.zeros((capacity, capacity))
        self._excitation = np.zeros((capacity, capacity))
        self._tension = np.zeros((capacity, capacity), dtype=np.int8)
        self._baseline = np.zeros((capacity, capacity), dtype=np.int8)
        self._prev = np.zeros((capacity, capacity), dtype=np.int8)

    def _grow(self) -> None:
        """Double the capacity, keeping every array's content (amortised O(1) per birth)."""
        old = self._cap
        vectors = {k: getattr(self, k) for k in ("_activity", "_angle", "_hawk")}
        matrices = {
            k: getattr(self, k)
            for k in ("_affinity", "_excitation", "_tension", "_baseline", "_prev")
        }
        self._allocate(2 * old)
        for name, values in vectors.items():
            getattr(self, name)[:old] = values
        for name, values in matrices.items():
            getattr(self, name)[:old, :old] = values

    def _add_actor(self, birth_step: int) -> None:
        """Give birth to one actor from the unused codes: activity, bloc, partners, tensions."""
        if self.n_actors == self._cap:
            self._grow()
        country, role = self._draw_code()
        i = self.n_actors
        self._activity[i] = min(1.0 + self._rng.pareto(self.params.activity_tail), 100.0)
        self._angle[i] = self._rng.uniform(0.0, 2.0 * np.pi)
        self._hawk[i] = ROLE_HAWKISHNESS.get(role, 0.0)
        self.actors.append(
            Actor(
                code=country + role,
                country=country,
                role=role,
                birth_step=birth_step,
                activity=float(self._activity[i]),
            )
        )
        if i > 0:
            self._attach_partners(i)
            self._set_baseline_tension(i)

    def _draw_code(self) -> tuple[str, str]:
        """Pick an unused (country, role) code, weighting roles by how common they are."""
        weights = np.array([ROLE_WEIGHTS[role] for _, role in self._free_codes])
        pick = int(self._rng.choice(len(self._free_codes), p=weights / weights.sum()))
        return self._free_codes.pop(pick)

    def _attach_partners(self, i: int) -> None:
        """Create ``i``'s recurring dyads with active actors (preferential attachment)."""
        weights = self._activity[:i]
        count = min(self.params.partners_per_actor, i)
        partners = self._rng.choice(i, size=count, replace=False, p=weights / weights.sum())
        scale = np.sqrt(self._activity[i] * self._activity[partners])
        self._affinity[i, partners] += self._rng.gamma(2.0, 0.5, count) * scale
        self._affinity[partners, i] += self._rng.gamma(2.0, 0.5, count) * scale

    def _set_baseline_tension(self, i: int) -> None:
        """Tension of ``i`` with every older actor from bloc distance and hawkishness, symmetric."""
        gap = np.abs(np.angle(np.exp(1j * (self._angle[:i] - self._angle[i]))))
        top = self.params.tension_levels - 1
        level = (
            0.8 * top * gap / np.pi
            + self._hawk[i]
            + self._hawk[:i]
            + self._rng.normal(0.0, 0.75, i)
        )
        level = np.clip(np.rint(level), 0, top).astype(np.int8)
        for matrix in (self._baseline, self._tension):
            matrix[i, :i] = level
            matrix[:i, i] = level

    def _refresh_base(self) -> None:
        """Rescale ``mu`` so the stationary mean events per slot stays ``events_per_step``."""
        n = self.n_actors
        activity = self._activity[:n]
        background = np.outer(activity, activity)
        np.fill_diagonal(background, 0.0)
        affinity = self._affinity[:n, :n]
        share = self.params.affinity_share
        mix = (1.0 - share) * background / background.sum() + share * affinity / affinity.sum()
        self._base = self.params.events_per_step * (1.0 - self.params.branching_ratio) * mix

    def _warm_up(self) -> None:
        """Run unrecorded slots (no births) so slot 0 already has history and a stationary rate."""
        for _ in range(self.params.warmup_steps):
            self._update(self._sample(self._intensity()))

    # -- one slot ---------------------------------------------------------------------------

    def _intensity(self) -> np.ndarray:
        """``lambda[s, o]`` for the coming slot: base plus decayed self/reciprocal excitation."""
        n = self.n_actors
        return self._base + self._excitation[:n, :n]

    def _relation_probs(self, subject: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """``T[level, prev, :]`` for each dyad: the root-code law given tension and history."""
        return self._relations[self._tension[subject, obj], self._prev[subject, obj]]

    def _sample(self, intensity: np.ndarray) -> StepEvents:
        """Draw the slot's events: Poisson count, dyad by intensity, root by T, leaf in root."""
        flat = np.cumsum(intensity.ravel())
        count = int(self._rng.poisson(flat[-1]))
        cell = np.searchsorted(flat, self._rng.random(count) * flat[-1], side="right")
        subject, obj = np.divmod(np.minimum(cell, flat.size - 1), self.n_actors)
        root_cdf = np.cumsum(self._relation_probs(subject, obj), axis=1)
        root = _categorical(root_cdf, self._rng.random(count))
        slot = _categorical(self._leaf_cdf[root], self._rng.random(count))
        code = self._leaf_code[root, slot]
        return StepEvents(subject=subject, object=obj, code=code, root=root)

    def _truth(self, intensity: np.ndarray, events: StepEvents) -> StepTruth:
        """Closed-form ``P(o | s, r)`` for every (subject, root) present in ``events``."""
        queries = np.unique(np.stack([events.subject, events.root], axis=1), axis=0)
        subject, root = queries[:, 0], queries[:, 1]
        n = self.n_actors
        levels = self._tension[:n, :n][subject]
        previous = self._prev[:n, :n][subject]
        joint = intensity[subject] * self._relations[levels, previous, root[:, None]]
        return StepTruth(subject=subject, root=root, probs=joint / joint.sum(axis=1, keepdims=True))

    def _update(self, events: StepEvents) -> None:
        """Excite, remember the last relation per dyad, escalate/de-escalate, then drift."""
        n = self.n_actors
        p = self.params
        self._excitation[:n, :n] *= p.decay
        np.add.at(self._excitation, (events.subject, events.object), p.self_excitation)
        np.add.at(self._excitation, (events.object, events.subject), p.reciprocity)
        self._prev[events.object, events.subject] = events.root + 1
        self._prev[events.subject, events.object] = events.root + 1
        self._escalate(events)
        self._drift_tension()

    def _escalate(self, events: StepEvents) -> None:
        """Conflict raises a dyad's tension, cooperation lowers it, each with prob. ``escalation``."""
        moves = self._rng.random(len(events)) < self.params.escalation
        direction = np.where(QUAD_OF_ROOT[events.root] >= 3, 1, -1) * moves
        delta = np.zeros((self.n_actors, self.n_actors), dtype=np.int64)
        np.add.at(delta, (events.subject, events.object), direction)
        np.add.at(delta, (events.object, events.subject), direction)
        self._shift_tension(np.sign(delta))

    def _drift_tension(self) -> None:
        """Random walk plus reversion to the baseline, drawn per unordered pair (symmetric)."""
        n = self.n_actors
        p = self.params
        u = self._rng.random((2, n, n))
        walk = np.where(u[0] < p.tension_drift / 2, 1, np.where(u[0] < p.tension_drift, -1, 0))
        toward = np.sign(self._baseline[:n, :n].astype(np.int64) - self._tension[:n, :n])
        move = np.triu(walk + toward * (u[1] < p.tension_reversion), 1)
        self._shift_tension(np.sign(move + move.T))

    def _shift_tension(self, delta: np.ndarray) -> None:
        """Add a symmetric (n, n) move of -1/0/+1 to the tension levels, kept in range."""
        n = self.n_actors
        shifted = self._tension[:n, :n] + delta
        self._tension[:n, :n] = np.clip(shifted, 0, self.params.tension_levels - 1)

    def _births(self) -> None:
        """Poisson births at the end of a slot; new actors can act from the next slot on."""
        born = int(self._rng.poisson(self.params.birth_rate))
        born = min(born, len(self._free_codes))
        for _ in range(born):
            self._add_actor(birth_step=self.t)
        if born:
            self._refresh_base()
