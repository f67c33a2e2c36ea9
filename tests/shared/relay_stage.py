"""A minimal real stage for the multi-process tests: embeddings in, per-row sums out.

Run as ``python relay_stage.py CONFIG.yaml``; it uses the same config loading, logging and
stage runtime as the real services, so the tests exercise them across process boundaries.
"""

from __future__ import annotations

import sys

import numpy as np

from shared.config import load_config
from shared.log import configure_logging, get_logger
from shared.protocol import Message, MessageType, new_message
from shared.runtime import StageRuntime

log = get_logger("relay")


def relay(_socket: str, msg: Message) -> list[tuple[str, Message]]:
    """Reply with the sum over the last axis of every frame, under the same id and trace.

    The reply copies the request's meta and adds to it, as the graph stage once did: a request
    header near the size limit makes a reply that cannot be sent, which the runtime must drop
    and dead-letter without stopping.
    """
    sums = [np.asarray(f, dtype=np.float64).sum(axis=-1).astype(np.float32) for f in msg.frames]
    log.info("relayed", frames=len(sums))
    meta = {**msg.meta, "relayed_by": "relay"}
    return [
        ("out", new_message(MessageType.SCORES, msg.id, sums, trace_id=msg.trace_id, meta=meta))
    ]


def main(path: str, stage: str = "relay") -> int:
    """Serve the relay as ``stage`` of the config at ``path`` (``geopol pipeline`` runs a module
    per stage, so tests/shared/test_pipeline.py writes one that names its stage and calls this)."""
    config = load_config(path)
    configure_logging(stage, config.logging.level, config.logging.format)
    accepts = {"in": frozenset({MessageType.EMBEDDINGS})}
    return StageRuntime(stage, config, relay, accepts=accepts).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
