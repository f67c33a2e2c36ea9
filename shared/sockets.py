"""ZeroMQ sockets built from config, and the send side of the wire protocol.

Kept apart from the stage loop (zguide style) so socket options, framing and the loop's
retry/heartbeat logic can each be read on their own.
"""

from __future__ import annotations

import os

import zmq

from shared.config import SocketConfig
from shared.curve import Curve, secure
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
# Patterns whose sockets receive messages from a peer (PUB only receives subscriptions).
RECEIVING_PATTERNS = INPUT_PATTERNS | {"req", "rep"}


def open_socket(
    ctx: zmq.Context,
    cfg: SocketConfig,
    heartbeat_s: float = 1.0,
    limits: Limits = DEFAULT_LIMITS,
    curve: Curve | None = None,
) -> zmq.Socket:
    """Create, tune, and bind or connect one socket as its config says.

    An endpoint that leaves the machine is opened with CurveZMQ as ``curve`` says (see
    shared.curve); without ``curve`` such an endpoint is refused (:class:`CurveKeyError`), so no
    caller can open one in the clear by forgetting the keys.

    ZMTP heartbeats let a stage notice a peer that vanished without closing its TCP
    connection. The high-water mark (``hwm``) counts whole messages, not bytes, so on its own it
    bounds nothing in memory; a receiving socket therefore also sets ZMQ_MAXMSGSIZE, which
    libzmq applies to each part as it arrives: a part larger than the protocol's limits is
    never buffered, and its sender is disconnected (the message is lost at the socket, before
    the stage can count or dead-letter it). What one peer can queue is thus bounded by
    ``hwm * (max_frames + 1)`` parts of at most that size.
    """
    sock = ctx.socket(_PATTERNS[cfg.pattern])
    ivl_ms = max(1, int(heartbeat_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * ivl_ms)
    sock.setsockopt(zmq.SNDHWM, cfg.hwm)
    sock.setsockopt(zmq.RCVHWM, cfg.hwm)
    sock.setsockopt(zmq.LINGER, 2000)
    if cfg.pattern in RECEIVING_PATTERNS:
        sock.setsockopt(zmq.MAXMSGSIZE, max(limits.max_message_bytes, limits.max_header_bytes))
    if cfg.pattern == "push":
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to connected peers: no peer, no send
    if cfg.pattern == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        secure(ctx, sock, cfg, curve)
        if cfg.bind:
            _bind(sock, cfg)
        else:
            sock.connect(cfg.endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _bind(sock: zmq.Socket, cfg: SocketConfig) -> None:
    """Bind; an ipc:// socket file is made owner-only, since its mode is its only access control.

    A missing folder is created owner-only, which also closes the moment between bind and
    chmod when the file still has the umask's mode; an existing folder keeps its own mode.
    """
    path = cfg.ipc_path
    if path is not None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock.bind(cfg.endpoint)
    if path is not None:
        os.chmod(path, 0o600)


def send_message(
    sock: zmq.Socket, message: Message, limits: Limits = DEFAULT_LIMITS, flags: int = 0
) -> None:
    """Encode and send; frames above pyzmq's copy threshold leave without being copied.

    With ``zmq.NOBLOCK`` in ``flags`` a socket without a ready peer raises ``zmq.Again``.
    """
    sock.send_multipart(encode(message, limits), flags=flags, copy=False)
