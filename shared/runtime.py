"""The stage runtime every service uses: a thin loop that decodes, calls a pure handler, sends.

A handler is a plain function ``handler(socket_name, message) -> [(out_socket, message), ...]``
that can be unit-tested without sockets. A stage that gains from batching (the LLM scores many
questions in one forward pass) also passes ``batch_handler(socket_name, messages)``: the loop then
takes up to ``batch_size`` messages that are already waiting and hands them over together; if the
batch fails, each message goes through ``handler`` alone, so only the bad one is dead-lettered.
The loop owns everything else: checked decoding, dead letters, counters on a Prometheus
endpoint, periodic heartbeats and ticks, and a graceful SIGTERM (stop taking work, finish the
message in hand, exit 0).

No single input stops the loop (DESIGN.md invariant 2): a message that fails to decode, a
handler or batch handler that raises, a tick that raises, and a produced message that cannot be
sent (its header over the limit, a non-float frame, a route to no socket, a socket error) each
become one counted, logged, dead-lettered event, and the loop carries on with the next one.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import numpy as np
import zmq

from shared.config import Config
from shared.curve import Curve, CurveKeyError, check
from shared.log import get_logger, trace
from shared.metrics import StageMetrics
from shared.protocol import DeadLetterWriter, Limits, Message, MessageType, ProtocolError, decode
from shared.protocol.errors import DecoderBugError, HandlerError, SendError, TickError
from shared.sockets import INPUT_PATTERNS, open_socket, send_message

Route = tuple[str, Message]
Handler = Callable[[str, Message], Iterable[Route]]
Tick = Callable[[float], Iterable[Route]]
BatchHandler = Callable[[str, list[Message]], Iterable[Route]]

log = get_logger(__name__)


def limits_of(config: Config) -> Limits:
    """The receive and send limits the config's protocol section sets (every stage uses these)."""
    protocol = config.protocol
    return Limits(
        max_header_bytes=protocol.max_header_bytes,
        max_message_bytes=protocol.max_message_bytes,
        max_frames=protocol.max_frames,
        max_dims=protocol.max_dims,
    )


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
        self.limits = limits_of(config)
        self.curve = Curve.of(config, name)
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size if batch_handler is not None else 1
        self.tick = tick
        self.accepts = dict(accepts or {})
        self.metrics = StageMetrics(name)
        self.dead_letters = DeadLetterWriter(
            Path(config.dead_letter_dir) / f"{name}.jsonl",
            name,
            max_bytes=config.protocol.dead_letter_max_bytes,
            keep=config.protocol.dead_letter_keep,
        )
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
        """Serve until stopped; returns the process exit code (0 on a graceful stop, 2 when a
        socket that needs CurveZMQ lacks a key or a socket or the metrics port cannot be opened,
        a port already taken most often: one line on stderr names the endpoint and the key)."""
        try:
            for cfg in self.stage_cfg.sockets.values():
                check(cfg, self.curve)  # every key before any socket opens
        except CurveKeyError as exc:
            log.error("socket_refused", reason=str(exc))
            print(f"geopol serve {self.name}: {exc}", file=sys.stderr)
            return 2
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        try:
            self._open()
            server = self._serve_metrics()
        except StartError as exc:  # a port another process holds, most often
            for sock in self.sockets.values():
                sock.close(linger=0)
            log.error("stage_not_started", reason=str(exc))
            print(f"geopol serve {self.name}: {exc}", file=sys.stderr)
            return 2
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
            try:
                self.sockets[key] = open_socket(
                    self._ctx, cfg, self.stage_cfg.heartbeat_s, self.limits, self.curve
                )
            except zmq.ZMQError as exc:
                verb = "bind" if cfg.bind else "connect to"
                raise StartError(
                    f"cannot {verb} {cfg.endpoint} (stages.{self.name}.sockets.{key}): "
                    f"{zmq.strerror(exc.errno)}"
                ) from exc

    def _serve_metrics(self) -> WSGIServer | None:
        port = self.stage_cfg.metrics_port
        if port is None:
            return None
        try:
            return self.metrics.serve(port)
        except OSError as exc:
            raise StartError(
                f"cannot serve metrics on 127.0.0.1:{port} (stages.{self.name}.metrics_port): "
                f"{exc.strerror or exc}"
            ) from exc

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
            beat = time.monotonic()  # a wall-clock step back must not stop the heartbeats
            if beat >= next_beat:
                self._heartbeat(time.time())
                next_beat = beat + self.stage_cfg.heartbeat_s
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
        self._send_all(self.run_tick(now))

    def run_tick(self, now: float) -> list[Route]:
        """The tick's messages; never raises. A raising tick is counted, logged and
        dead-lettered, and the next heartbeat calls it again (its work is durable elsewhere)."""
        if self.tick is None:
            return []
        try:
            return list(self.tick(now))
        except Exception as exc:
            log.exception("tick_failed")
            self._reject(TickError(_describe(exc)), [])
            return []

    def receive(self, socket_name: str, parts: list[Any]) -> list[Route]:
        """Check and handle one received message; returns what to send. Never raises.

        Sending is left to the loop so tests can drive this with raw parts and no sockets.
        """
        self.metrics.received()
        return self._check_and_handle(socket_name, parts)

    def _check_and_handle(self, socket_name: str, parts: list[Any]) -> list[Route]:
        start = time.perf_counter()
        message = self._decode(socket_name, parts)
        if message is None:
            return []
        with trace(message.trace_id, msg_id=message.id):
            try:
                routes = list(self.handler(socket_name, message))
            except Exception as exc:  # a handler bug must not kill the stage or lose the message
                log.exception("handler_failed", socket=socket_name)
                self._reject(HandlerError(_describe(exc), _header_of(message)), parts)
                return []
        self.metrics.processed(time.perf_counter() - start)
        return routes

    def _decode(self, socket_name: str, parts: list[Any]) -> Message | None:
        """The checked message, or None once a refusal is recorded.

        ``decode`` raises only ProtocolError by contract (a property test holds it to that);
        anything else is a decoder bug, and one bad message must not turn it into a dead stage.
        """
        try:
            return decode(parts, self.limits, self.accepts.get(socket_name))
        except ProtocolError as err:
            self._reject(err, parts)
        except Exception as exc:
            log.exception("decoder_bug", socket=socket_name)
            self._reject(DecoderBugError(_describe(exc)), parts)
        return None

    def receive_batch(self, socket_name: str, arrived: list[list[Any]]) -> list[Route]:
        """Check several received messages and hand the good ones to the batch handler at once.
        Never raises: a failed batch is retried message by message through :meth:`receive`."""
        if self.batch_handler is None:
            return [route for parts in arrived for route in self.receive(socket_name, parts)]
        good: list[tuple[list[Any], Message]] = []
        for parts in arrived:
            self.metrics.received()
            message = self._decode(socket_name, parts)
            if message is not None:
                good.append((parts, message))
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
        """Count, dead-letter and log one failure. A dead-letter file that cannot be written (a
        full disk) is logged, not raised: the count and the log line still record the failure."""
        self.metrics.rejected(err.reason)
        header = err.header or {}
        try:
            self.dead_letters.write(err, parts)
        except OSError as exc:
            log.error("dead_letter_write_failed", reason=err.reason, error=_describe(exc))
        log.warning(
            "message_rejected",
            reason=err.reason,
            detail=err.detail,
            msg_id=header.get("id"),
            trace_id=header.get("trace"),
            dead_letter=str(self.dead_letters.path),
        )

    def _send_all(self, routes: Iterable[Route]) -> None:
        self._outbox.extend(routes)
        self._flush()

    def _flush(self) -> None:
        """Send queued messages until a socket has no ready peer; the rest wait in order.

        A message that cannot be sent at all (anything but ``zmq.Again``) would block the
        queue for good, so it is dropped and dead-lettered with its reason. The outbox is
        bounded: past ``max_outbox`` the oldest messages are dropped and counted. Neither loses
        anything durable: the journal re-sends unanswered work.
        """
        while self._outbox:
            socket_name, out = self._outbox[0]
            try:
                send_message(self._socket(socket_name), out, self.limits, zmq.NOBLOCK)
            except zmq.Again:
                break
            except Exception as exc:
                log.exception("send_failed", socket=socket_name, msg_id=out.id)
                detail = f"sending to {socket_name!r}: {_describe(exc)}"
                self._reject(SendError(detail, _header_of(out)), [])
            self._outbox.popleft()
        while len(self._outbox) > self.stage_cfg.max_outbox:
            _, dropped = self._outbox.popleft()
            self.metrics.rejected("outbox_full")
            log.warning("outbox_full_dropped", msg_id=dropped.id, queued=len(self._outbox))

    def _socket(self, name: str) -> zmq.Socket:
        """The socket a handler routed to, or an error naming the route and the real sockets."""
        if name not in self.sockets:
            raise LookupError(f"no socket {name!r} in stage {self.name!r} ({sorted(self.sockets)})")
        return self.sockets[name]


class StartError(RuntimeError):
    """A socket or the metrics port cannot be opened; the message names endpoint and key."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _header_of(message: Message) -> dict[str, Any]:
    """What the dead-letter record keeps of a message: never its meta, which may be the
    reason it failed (too large), and no assumption that a handler's frames are arrays."""
    return {
        "id": message.id,
        "trace": message.trace_id,
        "type": str(message.type),
        "frames": [
            list(f.shape) if isinstance(f, np.ndarray) else type(f).__name__ for f in message.frames
        ],
    }
