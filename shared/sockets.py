"""ZeroMQ sockets built from config, and the send side of the wire protocol.

Kept apart from the stage loop (zguide style) so socket options, framing and the loop's
retry/heartbeat logic can each be read on their own.
"""

from __future__ import annotations

import zmq

from shared.config import SocketConfig
from shared.protocol import Limits, Message, encode
from shared.protocol.codec import DEFAULT_LIMITS

_PATTERNS = {
    "push": zmq.PUSH,
    "pull": zmq.PULL,
    "pub": zmq.PUB,
    "sub": zmq.SUB,
    "req": zmq.REQ,
    "rep": zmq.REP,
}
INPUT_PATTERNS = frozenset({"pull", "sub"})


def open_socket(ctx: zmq.Context, cfg: SocketConfig, heartbeat_s: float = 1.0) -> zmq.Socket:
    """Create, tune, and bind or connect one socket as its config says.

    ZMTP heartbeats let a stage notice a peer that vanished without closing its TCP
    connection; the high-water mark bounds memory when a downstream stage is slow.
    """
    sock = ctx.socket(_PATTERNS[cfg.pattern])
    ivl_ms = max(1, int(heartbeat_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * ivl_ms)
    sock.setsockopt(zmq.SNDHWM, cfg.hwm)
    sock.setsockopt(zmq.RCVHWM, cfg.hwm)
    sock.setsockopt(zmq.LINGER, 2000)
    if cfg.pattern == "push":
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to connected peers: no peer, no send
    if cfg.pattern == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if cfg.bind:
        sock.bind(cfg.endpoint)
    else:
        sock.connect(cfg.endpoint)
    return sock


def send_message(
    sock: zmq.Socket, message: Message, limits: Limits = DEFAULT_LIMITS, flags: int = 0
) -> None:
    """Encode and send; frames above pyzmq's copy threshold leave without being copied.

    With ``zmq.NOBLOCK`` in ``flags`` a socket without a ready peer raises ``zmq.Again``.
    """
    sock.send_multipart(encode(message, limits), flags=flags, copy=False)
