"""The LLM artifact: everything a trained TGL-LLM is, checked before the backbone is loaded.

A directory (DESIGN.md invariant 4)::

    manifest.json                what it is: backbone (name, path, weights sha256, hidden size),
                                 graph artifact and dims (d, T), vocabulary hashes, recipe, LoRA
                                 settings, prompt template version, K trained, data cut-off,
                                 training summary and learning curve, every file's sha256
    lora/adapter_config.json     the PEFT adapter in its standard format
    lora/adapter_model.safetensors
    graph_adapters.safetensors   entity/relation(/query/score) adapters and z_f (absent for llm-raw)
    names.json                   entity and relation display names and the calendar (prompt words)

:func:`check` reads the manifest and hashes every file; :func:`load` then checks the backbone's
identity and the graph dims it is asked to serve, and only after that loads the backbone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from services.llm.backbone import Backbone, BackboneSource, load_backbone
from services.llm.model import build_adapters, prompt_style, with_saved_lora
from services.llm.prompt import TEMPLATE_VERSION
from services.llm.questions import Vocabulary
from services.llm.scoring import OptionScorer
from shared.atomic import atomic_write_text
from shared.config import LoraSettings, RecipeSettings
from shared.manifest import file_sha256, manifest_id, member, read_json

KIND = "tgl-llm"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LORA_DIR = "lora"
ADAPTERS = "graph_adapters.safetensors"
NAMES = "names.json"


class LlmArtifactError(ValueError):
    """An LLM artifact is incomplete, altered, or does not fit what it is loaded with."""


@dataclass(frozen=True)
class LlmArtifact:
    """A checked artifact folder: its manifest and the recipe it was trained with."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def recipe(self) -> RecipeSettings:
        return RecipeSettings.model_validate(self.manifest["recipe"])

    @property
    def artifact_id(self) -> str:
        return manifest_id(self.manifest)

    @property
    def graph_dim(self) -> int:
        return int(self.manifest["graph"]["dim"])

    @property
    def steps(self) -> int:
        return int(self.manifest["graph"]["steps"])

    def vocabulary(self) -> Vocabulary:
        names = json.loads((self.directory / NAMES).read_text(encoding="utf-8"))
        return Vocabulary(names["entities"], names["relations"], names["calendar"])


def save(
    directory: Path,
    scorer: OptionScorer,
    recipe: RecipeSettings,
    lora: LoraSettings,
    vocab: Vocabulary,
    info: dict[str, Any],
) -> LlmArtifact:
    """Write the artifact to a temp folder, then rename it into place (readers never see half).

    ``info`` holds the lineage the caller knows: graph (artifact id, dim, steps), data (dataset,
    split, cut-off step, vocabulary hashes), options trained, and the training summary.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scorer.model.save_pretrained(tmp / LORA_DIR, safe_serialization=True)
    if scorer.adapters is not None:
        state = {
            k: v.detach().float().contiguous() for k, v in scorer.adapters.state_dict().items()
        }
        save_file(state, tmp / ADAPTERS)
    names = {
        "entities": list(vocab.entities),
        "relations": list(vocab.relations),
        "calendar": vocab.calendar,
    }
    atomic_write_text(tmp / NAMES, json.dumps(names, ensure_ascii=False))
    files = {
        str(path.relative_to(tmp)): {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        for path in sorted(tmp.rglob("*"))
        if path.is_file()
    }
    source = scorer.backbone.source
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": {
            "name": source.name,
            "path": str(source.directory),
            "weights_sha256": source.weights_sha256,
            "hidden_size": scorer.backbone.hidden_size,
            "vocab_size": scorer.backbone.vocab_size,
            "dtype": str(scorer.backbone.dtype).removeprefix("torch."),
        },
        "prompt_template_version": TEMPLATE_VERSION,
        "recipe": recipe.model_dump(),
        "lora": lora.model_dump(),
        **info,
        "files": files,
    }
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return LlmArtifact(directory, manifest)


def check(directory: Path) -> LlmArtifact:
    """The manifest and every file it lists (present, sha256), without loading any model."""
    directory = Path(directory)
    what = f"LLM artifact {directory}"
    manifest = read_json(directory / MANIFEST, what, LlmArtifactError)
    found = (manifest.get("kind"), manifest.get("format_version"))
    if found != (KIND, FORMAT_VERSION):
        raise LlmArtifactError(f"{what}: {MANIFEST} is {found}, expected {(KIND, FORMAT_VERSION)}")
    if manifest.get("prompt_template_version") != TEMPLATE_VERSION:
        raise LlmArtifactError(
            f"{what}: prompt_template_version is {manifest.get('prompt_template_version')}, "
            f"this code renders version {TEMPLATE_VERSION}: retrain it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()
    ):
        raise LlmArtifactError(f"{what}: {MANIFEST} field files must map names to {{sha256}}")
    for name, entry in files.items():
        path = directory
        for part in str(name).split("/"):  # lora/ is the one subfolder; each part stays plain
            path = member(path, part, MANIFEST, f"files.{name}", what, LlmArtifactError)
        if not path.is_file():
            raise LlmArtifactError(f"{what}: missing {name} listed in {MANIFEST}")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise LlmArtifactError(
                f"{what}: sha256 of {name} is {digest} but {MANIFEST} says {entry['sha256']} "
                "(file changed after saving)"
            )
    return LlmArtifact(directory, manifest)


def check_fits(
    artifact: LlmArtifact,
    source: BackboneSource,
    *,
    graph_dim: int | None = None,
    steps: int | None = None,
    graph_artifact: str | None = None,
) -> None:
    """Refuse, naming the field and both values, a backbone or graph the artifact was not
    trained with. Called before the backbone is loaded."""
    expected = artifact.manifest
    pairs = [
        ("backbone.weights_sha256", expected["backbone"]["weights_sha256"], source.weights_sha256),
        ("graph.dim", expected["graph"]["dim"], graph_dim),
        ("graph.steps", expected["graph"]["steps"], steps),
        ("graph.artifact", expected["graph"]["artifact"], graph_artifact),
    ]
    for field, wanted, found in pairs:
        if found is not None and wanted != found:
            raise LlmArtifactError(
                f"LLM artifact {artifact.directory}: {field} is {wanted!r} in its manifest, "
                f"but {found!r} here"
            )


def load(
    artifact: LlmArtifact, source: BackboneSource, dtype: Any, **backbone_kwargs: Any
) -> OptionScorer:
    """The scorer of a checked artifact, on ``source`` (already checked with :func:`check_fits`)."""
    backbone: Backbone = load_backbone(source, dtype, **backbone_kwargs)
    if backbone.hidden_size != artifact.manifest["backbone"]["hidden_size"]:
        raise LlmArtifactError(
            f"LLM artifact {artifact.directory}: backbone.hidden_size is "
            f"{artifact.manifest['backbone']['hidden_size']}, the backbone has {backbone.hidden_size}"
        )
    with_saved_lora(backbone, str(artifact.directory / LORA_DIR))
    recipe = artifact.recipe
    adapters = build_adapters(recipe, backbone, artifact.graph_dim)
    if adapters is not None:
        adapters.load_state_dict(load_file(artifact.directory / ADAPTERS))
    scorer = OptionScorer(backbone, adapters, prompt_style(recipe))
    scorer.eval()
    return scorer
