"""RE-GCN model and training configuration (the ``configs/default.py`` of a Flax example).

Two frozen dataclasses: :class:`ModelConfig` fixes every shape and the model's hyper-parameters
and is saved in the artifact manifest; :class:`TrainConfig` holds the optimiser and loop settings.
Defaults are those of the RE-GCN authors' ICEWS14 command (Li et al., SIGIR 2021; README of
Lee-zix/RE-GCN): ``--train-history-len 3 --n-layers 2 --n-hidden 200 --self-loop --layer-norm
--weight 0.5 --entity-prediction --relation-prediction --add-static-graph --angle 10
--discount 1 --task-weight 0.7 --lr 0.001``, plus the argparse defaults of their ``main.py``
(dropouts 0.2, ``--n-bases 100``, ``--grad-norm 1.0``; Adam ``weight_decay=1e-5``).

No JAX here: the CLI builds these before the memory budget is set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyper-parameters of one RE-GCN model.

    ``num_relations`` counts the dataset's relations *without* inverses; the model holds ``2R``
    relation embeddings (inverse of ``r`` is ``r + R``). ``layer_norm`` is RE-GCN's flag of that
    name, which in the original code means row-wise L2 normalisation (``F.normalize``), not
    ``nn.LayerNorm``. ``num_blocks`` is ``--n-bases``: the static R-GCN layer's weights are block
    diagonal with that many blocks. ``num_words`` and ``num_static_relations`` describe the
    entity-word graph and are 0 when ``use_static`` is off.
    """

    num_entities: int
    num_relations: int
    dim: int = 200
    num_layers: int = 2
    history: int = 3
    dropout: float = 0.2
    input_dropout: float = 0.2
    hidden_dropout: float = 0.2
    feat_dropout: float = 0.2
    channels: int = 50
    kernel_size: int = 3
    layer_norm: bool = True
    task_weight: float = 0.7
    use_static: bool = True
    num_words: int = 0
    num_static_relations: int = 0
    num_blocks: int = 100
    angle_degrees: float = 10.0
    static_weight: float = 0.5
    angle_grows: bool = True
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        positive = ("num_entities", "num_relations", "dim", "num_layers", "history", "channels")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {self.kernel_size}")
        if not 0.0 <= self.task_weight <= 1.0:
            raise ValueError(f"task_weight must be in [0, 1], got {self.task_weight}")
        if self.use_static:
            if self.num_words < 1 or self.num_static_relations < 1:
                raise ValueError("use_static needs num_words and num_static_relations >= 1")
            if self.dim % self.num_blocks:
                raise ValueError(
                    f"dim {self.dim} is not divisible by num_blocks {self.num_blocks} "
                    "(block-diagonal static R-GCN weights)"
                )

    @property
    def num_relations_total(self) -> int:
        """Relations with their inverses: ``2R``."""
        return 2 * self.num_relations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings.

    ``buckets`` lists the padded sizes a time step may take (edges incl. inverses = queries incl.
    inverses); empty means half-octave sizes from ``min_bucket`` (``snapshots.default_buckets``).
    ``patience`` is the number of epochs without a better validation filtered MRR before stopping.
    ``init_from`` names the artifact a warm-started run took its first parameters from ("" when
    they were random), so the manifest tells how the model came to be; ``init_vocabulary`` gives
    its ``[old, new]`` entity and relation counts when the vocabulary grew in between (or stayed).
    """

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_norm: float = 1.0
    patience: int = 5
    seed: int = 0
    buckets: tuple[int, ...] = field(default_factory=tuple)
    min_bucket: int = 64
    init_from: str = ""
    init_vocabulary: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError("epochs and patience must be >= 1")
        if list(self.buckets) != sorted(set(self.buckets)) or any(b < 1 for b in self.buckets):
            raise ValueError(f"buckets must be increasing positive sizes, got {self.buckets}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "buckets": list(self.buckets)}
