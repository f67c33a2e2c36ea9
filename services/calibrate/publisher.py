"""The publishing side of the calibrate stage: the PUB socket and the snapshot server.

Wire format on PUB: ``[topic, header, frames...]`` — a topic frame ZeroMQ filters on, then an
ordinary checked message (shared.protocol). Topics: ``forecast/<subject>/<relation>/``,
``scorecard/`` and ``hugz/`` (the publisher's heartbeat, carrying the last sequence number, so
a subscriber that missed something — a restart, a slow join — notices and asks for it).

The snapshot server (REP, in its own thread with its own sqlite connection) answers
``{"prefix": str, "after": int, "limit": int}`` with ``{"seq": last, "forecasts": [[seq, topic,
parts], ...]}``: the latest forecasts under the prefix with a sequence above ``after``
(zguide Clone pattern: subscribe first, then fetch the snapshot, then drop updates at or below
its sequence).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgpack
import zmq

from services.calibrate.ledger import Ledger
from shared.config import SocketConfig
from shared.curve import Curve
from shared.log import get_logger
from shared.protocol import Limits, Message, encode
from shared.sockets import open_socket

log = get_logger(__name__)
HUGZ = "hugz/"
SCORECARD = "scorecard/"
MAX_REQUEST_BYTES = 4096


def wire_parts(topic: str, message: Message, limits: Limits) -> list[bytes]:
    """``[topic, header, frames...]`` as bytes (what the ledger stores and PUB sends)."""
    return [topic.encode(), *(bytes(memoryview(p)) for p in encode(message, limits))]


class Publisher:
    """Sends recorded parts on the PUB socket (never blocks: PUB drops at its high-water mark,
    and the ledger plus snapshots make a dropped update recoverable)."""

    def __init__(
        self, ctx: zmq.Context, cfg: SocketConfig, heartbeat_s: float, curve: Curve | None = None
    ) -> None:
        self.socket = open_socket(ctx, cfg, heartbeat_s, curve=curve)

    def send(self, parts: list[bytes]) -> None:
        self.socket.send_multipart(parts, flags=zmq.NOBLOCK)

    def close(self) -> None:
        self.socket.close()


class SnapshotServer(threading.Thread):
    """Answers snapshot requests from the ledger file until :meth:`stop`."""

    def __init__(
        self,
        ctx: zmq.Context,
        cfg: SocketConfig,
        ledger_path: Path,
        max_items: int,
        curve: Curve | None = None,
    ) -> None:
        super().__init__(name="snapshot-server", daemon=True)
        self._ctx, self._cfg, self._path, self._max = ctx, cfg, ledger_path, max_items
        self._curve = curve
        self._stopping = threading.Event()  # not _stop: Thread.join calls a method of that name
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        ledger = Ledger(self._path)
        # a request is a few bytes: cap what a peer can make this socket buffer
        sock = open_socket(
            self._ctx,
            self._cfg,
            limits=Limits(max_header_bytes=MAX_REQUEST_BYTES, max_message_bytes=MAX_REQUEST_BYTES),
            curve=self._curve,
        )
        self.ready.set()
        try:
            while not self._stopping.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                request = sock.recv()
                sock.send(msgpack.packb(self.answer(ledger, request), use_bin_type=True))
        finally:
            sock.close(linger=0)
            ledger.close()

    def answer(self, ledger: Ledger, request: bytes) -> dict[str, Any]:
        """The reply to one request; a malformed one gets ``{"error": reason}``, never a crash."""
        if len(request) > MAX_REQUEST_BYTES:
            return {"error": f"request of {len(request)} bytes, limit {MAX_REQUEST_BYTES}"}
        try:
            asked = msgpack.unpackb(request, raw=False, strict_map_key=True)
            prefix, after = str(asked.get("prefix", "forecast/")), int(asked.get("after", 0))
            limit = min(int(asked.get("limit", self._max)), self._max)
        except (ValueError, TypeError, AttributeError, msgpack.ExtraData) as exc:
            log.warning("snapshot_request_refused", reason=str(exc))
            return {"error": f"malformed snapshot request ({type(exc).__name__})"}
        rows = ledger.latest(prefix, limit, after=after)
        return {
            "seq": ledger.last_seq(),
            "forecasts": [[r.seq, r.topic, r.parts] for r in rows],
        }
