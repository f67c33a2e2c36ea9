"""``geopol watch``: follow the published forecasts, as a table or JSON lines.

A Clone-pattern subscriber (zguide ch. 5): subscribe first, then fetch a snapshot of the latest
forecasts, and from then on apply each update once. Updates are told apart by sequence number;
a ``hugz`` heartbeat carries the publisher's last sequence, and whenever that is ahead of what
this subscriber is complete up to, it asks the snapshot server for the forecasts after its
watermark. So a publisher restart, a slow join or a dropped update leaves no gap, and a forecast
re-published after a crash (same sequence) is not shown twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import zmq

from services.calibrate.publisher import HUGZ, SCORECARD
from shared.config import DEFAULT_CONFIG, SocketConfig, load_config
from shared.curve import Curve, check, secure
from shared.protocol import Limits, Message, MessageType, ProtocolError, decode

ACCEPT = frozenset({MessageType.FORECAST, MessageType.HEARTBEAT, MessageType.SCORECARD})
SNAPSHOT_TIMEOUT_MS = 2000
MAX_SNAPSHOT_BYTES = 256 * 1024**2


class CloneSubscriber:
    """Forecasts under ``prefix`` (and scorecards) exactly once each, in arrival order."""

    def __init__(
        self,
        ctx: zmq.Context,
        publish: SocketConfig,
        snapshot: SocketConfig,
        prefix: str = "forecast/",
        limits: Limits | None = None,
        curve: Curve | None = None,
    ) -> None:
        """``publish`` and ``snapshot`` are the publisher's (binding) sockets; this connects to
        them, with CurveZMQ where ``curve`` says (raises CurveKeyError for a missing key)."""
        self.ctx, self.prefix, self.curve = ctx, prefix, curve
        publish = publish.model_copy(update={"bind": False})
        self.snapshot = snapshot.model_copy(update={"bind": False})
        check(self.snapshot, curve)
        self.limits = limits or Limits()
        self.sub = ctx.socket(zmq.SUB)
        for topic in (prefix, HUGZ, SCORECARD):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            secure(ctx, self.sub, publish, curve)
        except BaseException:
            self.sub.close(linger=0)
            raise
        self.sub.connect(publish.endpoint)
        self.watermark = 0  # every matching forecast with seq <= watermark has been applied
        self.applied: set[int] = set()
        self.scorecards: set[int] = set()
        self.refused = 0

    def close(self) -> None:
        self.sub.close(linger=0)

    def _fetch(self, after: int) -> list[Message] | None:
        """The forecasts after ``after`` from the snapshot server (Lazy Pirate: a fresh REQ
        socket per try, so a restarted server never leaves this one waiting)."""
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.MAXMSGSIZE, MAX_SNAPSHOT_BYTES)
        secure(self.ctx, req, self.snapshot, self.curve)
        req.connect(self.snapshot.endpoint)
        try:
            req.send(msgpack.packb({"prefix": self.prefix, "after": after}))
            if not req.poll(SNAPSHOT_TIMEOUT_MS, zmq.POLLIN):
                return None
            reply = msgpack.unpackb(req.recv(), raw=False)
        finally:
            req.close()
        if "error" in reply:
            raise RuntimeError(f"snapshot server: {reply['error']}")
        found = []
        for _seq, _topic, parts in reply["forecasts"]:
            message = self._decode(parts)  # [topic, header, frames...] as published
            if message is not None:
                found.append(message)
        self.watermark = max(self.watermark, int(reply["seq"]))
        return found

    def _decode(self, parts: list[Any]) -> Message | None:
        try:
            return decode(parts[1:], self.limits, ACCEPT)
        except ProtocolError:
            self.refused += 1  # a malformed publication is skipped, never shown
            return None

    def _fresh(self, messages: list[Message]) -> list[Message]:
        out = []
        for message in sorted(messages, key=lambda m: m.meta.get("seq", 0)):
            seq = int(message.meta.get("seq", 0))
            if message.type is MessageType.SCORECARD:
                if seq not in self.scorecards:
                    self.scorecards.add(seq)
                    out.append(message)
            elif seq not in self.applied:
                self.applied.add(seq)
                out.append(message)
        return out

    def start(self) -> list[Message]:
        """The snapshot: what was published before this subscriber joined."""
        return self._fresh(self._fetch(0) or [])

    def poll(self, timeout_ms: int) -> list[Message]:
        """New forecasts and scorecards that arrived within ``timeout_ms`` (maybe none)."""
        if not self.sub.poll(timeout_ms, zmq.POLLIN):
            return []
        arrived: list[Message] = []
        while self.sub.poll(0, zmq.POLLIN):
            message = self._decode(self.sub.recv_multipart())
            if message is None:
                continue
            if message.type is MessageType.HEARTBEAT:
                if int(message.meta.get("seq", 0)) > self.watermark:
                    arrived += self._fetch(self.watermark) or []
            else:
                arrived.append(message)
        return self._fresh(arrived)


def render(message: Message, top: int = 3) -> str:
    """One line a person reads: the question, the top candidates, ``other``."""
    m = message.meta
    if message.type is MessageType.SCORECARD:
        r = m["rolling"]
        unknown = f", {r['unknown']} unknown to the model" if r.get("unknown") else ""
        if not r.get("n"):
            return (
                f"scorecard step {m['step']}: nothing to score yet ({r.get('void', 0)} void"
                f"{unknown})"
            )
        return (
            f"scorecard step {m['step']}: Acc@1 {r['acc@1']:.3f}  Brier {r['brier']:.3f}  "
            f"ECE {r['ece']:.3f}  NLL {r['nll']:.3f}  recall@K {r['recall@K']:.3f}  "
            f"(n={r['n']} over {len(r['steps'])} steps{unknown})"
        )
    q = m["query"]
    when = m.get("date") or f"step {m['step']}"
    if m.get("unknown"):  # the graph model has no embedding for it: no ranking to show
        return (
            f"#{m['seq']:<6} {when}  {q['subject_name']} — {q['relation_name']} — ?   "
            f"not forecast: {' and '.join(m['unknown'])} unknown to the model (first seen "
            "after it was trained)"
        )
    picks = "  ".join(f"{c['name']} {c['p']:.2f}" for c in m["candidates"][:top])
    return (
        f"#{m['seq']:<6} {when}  {q['subject_name']} — {q['relation_name']} — ?   "
        f"{picks}  other {m['other']:.2f}"
    )


def as_json(message: Message) -> str:
    return json.dumps({"type": str(message.type), "id": message.id, **message.meta})


def _matches(message: Message, subject: str | None, relation: str | None) -> bool:
    if message.type is not MessageType.FORECAST:
        return True
    q = message.meta["query"]
    return (subject is None or subject in (str(q["subject"]), q["subject_name"])) and (
        relation is None or relation in (str(q["relation"]), q["relation_name"])
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol watch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--subject", help="only this subject (its id or its name)")
    parser.add_argument("--relation", help="only this relation (its id or its name)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--count", type=int, help="exit after this many forecasts")
    parser.add_argument("--seconds", type=float, help="exit after this many seconds")
    parser.add_argument("--no-snapshot", action="store_true", help="only what arrives from now")
    parser.add_argument(
        "--key",
        default="watch",
        help="the key pair to use for a CurveZMQ publisher off this machine (default: watch; "
        "see `geopol keys --help`)",
    )
    return parser


def follow(
    subscriber: CloneSubscriber, snapshot: bool, deadline: float | None
) -> Iterator[Message]:
    if snapshot:
        yield from subscriber.start()
    while deadline is None or time.monotonic() < deadline:
        yield from subscriber.poll(200)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    prefix = "forecast/"
    if args.subject is not None and args.subject.isdigit():
        prefix += f"{args.subject}/"
        if args.relation is not None and args.relation.isdigit():
            prefix += f"{args.relation}/"
    ctx = zmq.Context.instance()
    subscriber = CloneSubscriber(
        ctx,
        config.calibrate.publish,
        config.calibrate.snapshot,
        prefix,
        curve=Curve.of(config, args.key),
    )
    deadline = time.monotonic() + args.seconds if args.seconds else None
    shown = 0
    try:
        for message in follow(subscriber, not args.no_snapshot, deadline):
            if not _matches(message, args.subject, args.relation):
                continue
            print(as_json(message) if args.json else render(message), flush=True)
            shown += message.type is MessageType.FORECAST
            if args.count is not None and shown >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"geopol watch: {exc}", file=sys.stderr)
        return 1
    finally:
        subscriber.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
