"""What a stage cannot start without: the one check ``geopol pipeline up`` (which starts only
built stages) and ``geopol status`` (which judges only them) share."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config

ARTIFACT_MANIFEST = "manifest.json"  # what every artifact folder holds (shared/manifest.py)


def missing_input(config: Config, stage: str) -> Path | None:
    """What the stage cannot start without and is not there: its artifact's manifest (graph,
    llm, calibrate) or its source of exports (ingest), or None."""
    if stage == "ingest":
        source = config.ingest.source if config.ingest.live is None else None
        return source if source is not None and not source.exists() else None
    artifact = {
        "graph": lambda: config.graph_artifact,
        "llm": lambda: config.llm_artifact,
        "calibrate": lambda: config.calibrator_artifact,
    }.get(stage)
    if artifact is None:
        return None
    manifest = artifact() / ARTIFACT_MANIFEST
    return None if manifest.is_file() else manifest
