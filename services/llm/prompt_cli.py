"""``geopol llm prompt``: print one question exactly as the model sees it, graph slots marked.

Reads only the export and the backbone's tokenizer (no weights), so it is instant and shows the
chat template, the names, the date and where every graph token goes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from services.llm import prompt_facts
from services.llm.backbone import BackboneError, resolve
from services.llm.model import prompt_style
from services.llm.prompt import LETTERS, ChatTemplate, render
from services.llm.questions import Vocabulary, export_batch
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.embedding_export import ExportError, load_export


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol llm prompt",
        description="Print the rendered prompt of one exported question, with each graph-token "
        "slot shown as a bracketed label ([f] is the feature token z_f, [s1].. the subject's "
        "steps, [A1].. option A's steps), and the answer the model is trained to give.",
    )
    parser.add_argument("--data", type=Path, required=True, help="embedding export folder")
    parser.add_argument("--index", type=int, default=0, help="row of the export (default 0)")
    parser.add_argument(
        "--k", type=int, default=None, help="options shown (default: the export's K)"
    )
    parser.add_argument(
        "--recipe", help="recipe name in the config's llm.recipes (default llm.train.recipe)"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--seed", type=int, default=0, help="seed of the option order")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        recipe_name = args.recipe or config.llm.train.recipe
        if recipe_name not in config.llm.recipes:
            raise ConfigError(
                f"--recipe {recipe_name!r} is not one of {sorted(config.llm.recipes)}"
            )
        recipe = config.llm.recipes[recipe_name]
        export = load_export(args.data)
        if not 0 <= args.index < len(export):
            raise ExportError(f"--index {args.index}: the export has rows 0..{len(export) - 1}")
        k = args.k or export.num_candidates
        steps = min(recipe.steps, export.steps)
        facts = prompt_facts.source_for(config, recipe.facts)
        batch = export_batch(
            export, Vocabulary.of_export(export, facts), np.array([args.index]), k, steps, args.seed
        )
        source = resolve(config.llm.backbone, config.backbone_cache)
        template = ChatTemplate(AutoTokenizer.from_pretrained(source.directory))
    except (ConfigError, ExportError, BackboneError, ValueError, OSError) as exc:
        print(f"geopol llm prompt: {exc}", file=sys.stderr)
        return 2
    style = prompt_style(recipe.model_copy(update={"steps": steps}))
    print(render(batch.texts[0], style, template).text(), end="")
    target = int(batch.target[0])
    answer = f" {LETTERS[target]}" if target >= 0 else " (gold not among the candidates)"
    print(f"{answer}   <- trained answer (recipe {recipe_name!r}, row {args.index}, K={k})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
