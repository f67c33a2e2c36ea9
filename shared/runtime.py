"""The stage runtime every service uses: a thin loop that decodes, calls a pure handler, sends.

A handler is a plain function ``handler(socket_name, message) -> [(out_socket, message), ...]``
that can be unit-tested without sockets. A stage that gains from batching (the LLM scores many
questions in one forward pass) also passes ``batch_handler(socket_name, messages)``: the loop then
takes up to ``batch_size`` messages that are already waiting and hands them over together; if the
batch fails, each message goes through ``handler`` alone, so only the bad one is dead-lettered. The loop owns everything else: checked decoding,
dead letters for refused messages, counters on a Prometheus endpoint, periodic heartbeats and
ticks, and a graceful SIGTERM (stop taking work, finish the message in hand, exit 0).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from shared.config import Config
from shared.log import get_logger, trace
from shared.metrics import StageMetrics
from shared.protocol import DeadLetterWriter, Limits, Message, MessageType, ProtocolError, decode
from shared.protocol.errors import HandlerError
from shared.sockets import INPUT_PATTERNS, open_socket, send_message

Route = tuple[str, Message]
Handler = Callable[[str, Message], Iterable[Route]]
Tick = Callable[[float], Iterable[Route]]
BatchHandler = Callable[[str, list[Message]], Iterable[Route]]

log = get_logger(__name__)


class StageRuntime:
    """Runs one stage: its sockets, its handler, its counters, until asked to stop."""

    def __init__(
        self,
        name: str,
        config: Config,
        handler: Handler,
        *,
        tick: Tick | None = None,
        accepts: Mapping[str, frozenset[MessageType]] | None = None,
        context: zmq.Context | None = None,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 1,
    ) -> None:
        self.name = name
        self.stage_cfg = config.stage(name)
        self.limits = Limits(
            max_header_bytes=config.protocol.max_header_bytes,
            max_message_bytes=config.protocol.max_message_bytes,
            max_frames=config.protocol.max_frames,
        )
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size if batch_handler is not None else 1
        self.tick = tick
        self.accepts = dict(accepts or {})
        self.metrics = StageMetrics(name)
        self.dead_letters = DeadLetterWriter(Path(config.dead_letter_dir) / f"{name}.jsonl", name)
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self.sockets: dict[str, zmq.Socket] = {}
        # Messages waiting for a peer: a send never blocks the loop (heartbeats, SIGTERM).
        self._outbox: deque[Route] = deque()

    # -- lifecycle -------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Ask the loop to finish the message in hand and return (the SIGTERM handler)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 on a graceful stop)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self._open()
        server = None
        if self.stage_cfg.metrics_port is not None:
            server = self.metrics.serve(self.stage_cfg.metrics_port)
        log.info(
            "stage_started",
            sockets={k: s.getsockopt_string(zmq.LAST_ENDPOINT) for k, s in self.sockets.items()},
        )
        try:
            self._loop()
        finally:
            for sock in self.sockets.values():
                sock.close()
            if server is not None:
                server.shutdown()
            log.info("stage_stopped", **self.metrics.snapshot())
        return 0

    def _open(self) -> None:
        for key, cfg in self.stage_cfg.sockets.items():
            self.sockets[key] = open_socket(self._ctx, cfg, self.stage_cfg.heartbeat_s)

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        inputs = {
            self.sockets[k]: k
            for k, cfg in self.stage_cfg.sockets.items()
            if cfg.pattern in INPUT_PATTERNS
        }
        for sock in inputs:
            poller.register(sock, zmq.POLLIN)
        next_beat = 0.0
        while not self._stop.is_set():
            now = time.time()
            if now >= next_beat:
                self._heartbeat(now)
                next_beat = now + self.stage_cfg.heartbeat_s
            for sock, _ in poller.poll(self.stage_cfg.poll_ms):
                if self._stop.is_set():
                    break
                arrived = [sock.recv_multipart(copy=False)]
                while len(arrived) < self.batch_size and sock.poll(0, zmq.POLLIN):
                    arrived.append(sock.recv_multipart(copy=False))
                self._send_all(self.receive_batch(inputs[sock], arrived))
            self._flush()

    def _heartbeat(self, now: float) -> None:
        self.metrics.heartbeat()
        if self.tick is not None:
            self._send_all(self.tick(now))

    def receive(self, socket_name: str, parts: list[Any]) -> list[Route]:
        """Check and handle one received message; returns what to send. Never raises.

        Sending is left to the loop so tests can drive this with raw parts and no sockets.
        """
        self.metrics.received()
        return self._check_and_handle(socket_name, parts)

    def _check_and_handle(self, socket_name: str, parts: list[Any]) -> list[Route]:
        start = time.perf_counter()
        try:
            message = decode(parts, self.limits, self.accepts.get(socket_name))
        except ProtocolError as err:
            self._reject(err, parts)
            return []
        with trace(message.trace_id, msg_id=message.id):
            try:
                routes = list(self.handler(socket_name, message))
            except Exception as exc:  # a handler bug must not kill the stage or lose the message
                log.exception("handler_failed", socket=socket_name)
                detail = f"{type(exc).__name__}: {exc}"
                self._reject(HandlerError(detail, _header_of(message)), parts)
                return []
        self.metrics.processed(time.perf_counter() - start)
        return routes

    def receive_batch(self, socket_name: str, arrived: list[list[Any]]) -> list[Route]:
        """Check several received messages and hand the good ones to the batch handler at once.
        Never raises: a failed batch is retried message by message through :meth:`receive`."""
        if self.batch_handler is None:
            return [route for parts in arrived for route in self.receive(socket_name, parts)]
        good: list[tuple[list[Any], Message]] = []
        for parts in arrived:
            self.metrics.received()
            try:
                good.append((parts, decode(parts, self.limits, self.accepts.get(socket_name))))
            except ProtocolError as err:
                self._reject(err, parts)
        if not good:
            return []
        start = time.perf_counter()
        try:
            routes = list(self.batch_handler(socket_name, [m for _, m in good]))
        except Exception:
            log.warning("batch_failed_retrying_singly", socket=socket_name, messages=len(good))
            routes = []
            for parts, _ in good:
                routes.extend(self._check_and_handle(socket_name, parts))
            return routes
        elapsed = (time.perf_counter() - start) / len(good)
        for _ in good:
            self.metrics.processed(elapsed)
        return routes

    def _reject(self, err: ProtocolError, parts: list[Any]) -> None:
        self.metrics.rejected(err.reason)
        record = self.dead_letters.write(err, parts)
        header = err.header or {}
        log.warning(
            "message_rejected",
            reason=err.reason,
            detail=err.detail,
            msg_id=header.get("id"),
            trace_id=header.get("trace"),
            dead_letter=str(self.dead_letters.path),
            time=record["time"],
        )

    def _send_all(self, routes: Iterable[Route]) -> None:
        self._outbox.extend(routes)
        self._flush()

    def _flush(self) -> None:
        """Send queued messages until a socket has no ready peer; the rest wait in order.

        The outbox is bounded: past ``max_outbox`` the oldest messages are dropped and
        counted, which loses nothing durable because the journal re-sends unanswered work.
        """
        while self._outbox:
            socket_name, out = self._outbox[0]
            try:
                send_message(self.sockets[socket_name], out, self.limits, zmq.NOBLOCK)
            except zmq.Again:
                break
            self._outbox.popleft()
        while len(self._outbox) > self.stage_cfg.max_outbox:
            _, dropped = self._outbox.popleft()
            self.metrics.rejected("outbox_full")
            log.warning("outbox_full_dropped", msg_id=dropped.id, queued=len(self._outbox))


def _header_of(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "trace": message.trace_id,
        "type": str(message.type),
        "frames": [list(f.shape) for f in message.frames],
    }
