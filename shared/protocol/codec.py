"""Encode and decode ``[header, frame0, frame1, ...]`` messages with every check DESIGN.md asks for.

The header is a msgpack map: protocol version ``v``, message ``type``, stable ``id``, ``trace``
id, creation time ``ts``, per-frame ``frames`` descriptors (dtype and shape) and a small ``meta``
map for scalars such as query keys or candidate ids. Frames carry only little-endian float32
bytes, so the receiver can check each against its declared shape and view it without copying.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from shared.protocol import errors

PROTOCOL_VERSION = 1
FRAME_DTYPE = "<f4"
_F32 = np.dtype(FRAME_DTYPE)


class MessageType(StrEnum):
    """Every message kind that travels between stages (see DESIGN.md, "Data flow")."""

    SNAPSHOT = "snapshot"
    QUERY = "query"
    EMBEDDINGS = "embeddings"
    SCORES = "scores"
    FORECAST = "forecast"
    DONE = "done"
    HEARTBEAT = "heartbeat"
    SCORECARD = "scorecard"
    ABSTAIN = "abstain"  # no embedding for the query's subject or relation (shared.abstention)


@dataclass(frozen=True)
class Limits:
    """Receive limits; checked before anything large is touched.

    ``max_dims`` bounds a frame's rank well below numpy's own limit (64), so a hostile shape is
    refused by a typed error here and never reaches numpy.
    """

    max_header_bytes: int = 64 * 1024
    max_message_bytes: int = 256 * 1024 * 1024
    max_frames: int = 64
    max_dims: int = 8

    @property
    def max_elements(self) -> int:
        """The most float32 values one frame can hold within ``max_message_bytes``."""
        return self.max_message_bytes // _F32.itemsize


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Message:
    """A decoded (or to-be-encoded) message; frames are read-only float32 arrays."""

    type: MessageType
    id: str
    trace_id: str
    created: float
    frames: tuple[np.ndarray, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


def new_message(
    type: MessageType,
    id: str,
    frames: Sequence[np.ndarray] = (),
    *,
    trace_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Message:
    """Build a message stamped now; a fresh trace id starts a trace unless one is carried on."""
    return Message(
        type=MessageType(type),
        id=id,
        trace_id=trace_id or uuid.uuid4().hex,
        created=time.time(),
        frames=tuple(frames),
        meta=dict(meta or {}),
    )


def _as_frame(array: np.ndarray, index: int) -> np.ndarray:
    """Return the array as C-contiguous little-endian float32, refusing non-float input.

    Integer ids would silently lose precision as float32, so they belong in ``meta``.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"frame {index} has dtype {array.dtype}; frames carry float32 only "
            "(put integer ids in meta)"
        )
    return np.asarray(array, dtype=_F32, order="C")  # unlike ascontiguousarray, keeps 0-d


def encode(message: Message, limits: Limits = DEFAULT_LIMITS) -> list[bytes | np.ndarray]:
    """Return the parts to hand to ``send_multipart``: header bytes, then the frames.

    Frames are returned as arrays (buffer-protocol objects) so a zero-copy send can use their
    memory directly; a non-contiguous or non-float32 input is converted here, once.
    """
    frames = [_as_frame(a, i) for i, a in enumerate(message.frames)]
    header = {
        "v": PROTOCOL_VERSION,
        "type": str(message.type),
        "id": message.id,
        "trace": message.trace_id,
        "ts": float(message.created),
        "frames": [{"dtype": FRAME_DTYPE, "shape": list(a.shape)} for a in frames],
        "meta": dict(message.meta),
    }
    packed = msgpack.packb(header, use_bin_type=True)
    if len(packed) > limits.max_header_bytes:
        raise ValueError(
            f"header of message {message.id!r} is {len(packed)} bytes, over the "
            f"{limits.max_header_bytes}-byte limit; move bulk data into frames"
        )
    return [packed, *frames]


def as_buffer(part: Any) -> memoryview:
    """A memoryview over a received part: bytes, a zmq.Frame or any buffer object."""
    if isinstance(part, np.ndarray):  # an encoded frame handed over without a socket
        return memoryview(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
    buf = getattr(part, "buffer", None)  # zmq.Frame exposes its memory as .buffer
    return memoryview(buf if buf is not None else part).cast("B")


def _refuse_ext(code: int, _data: bytes) -> Any:
    """msgpack ``ext_hook``: extension types carry arbitrary payloads, so a header has none."""
    raise errors.HeaderDecodeError(
        f"header holds msgpack extension type {code}; only plain msgpack values are allowed"
    )


def _unpack_header(raw: memoryview, limits: Limits) -> dict[str, Any]:
    if raw.nbytes > limits.max_header_bytes:
        raise errors.HeaderTooLargeError(
            f"header is {raw.nbytes} bytes, limit {limits.max_header_bytes}"
        )
    try:
        header = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext
        )
    except errors.ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise errors.HeaderDecodeError(f"header is not valid msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise errors.HeaderDecodeError(f"header is a msgpack {type(header).__name__}, not a map")
    _check_plain(header)
    return header


_PLAIN_LEAVES = (str, int, float, bool, bytes, type(None))
# Where a value sits in the header, as (parent trail, ".key" or "[i]"); joined only for an error,
# so the walk stays linear in the header's size however deep it nests.
Trail = tuple["Trail", str] | None


def _check_plain(header: dict[str, Any]) -> None:
    """Refuse any value that is not a plain msgpack value, and any map key that is not a str.

    msgpack decodes its Timestamp extension itself, without calling ``ext_hook``, so it is
    caught here; bytes keys pass msgpack's ``strict_map_key`` but the protocol's maps are
    str-keyed. The walk is iterative so a deeply nested header cannot exhaust the stack.
    """
    pending: list[tuple[Any, Trail]] = [(header, None)]
    while pending:
        value, trail = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise errors.HeaderSchemaError(
                        f"{_where(trail)} has a non-str key {key!r:.80}", header
                    )
                pending.append((item, (trail, f".{key}")))
        elif isinstance(value, list):
            pending.extend((item, (trail, f"[{i}]")) for i, item in enumerate(value))
        elif not isinstance(value, _PLAIN_LEAVES):
            raise errors.HeaderSchemaError(
                f"{_where(trail)} is a msgpack {type(value).__name__}; only plain values allowed",
                header,
            )


def _where(trail: Trail) -> str:
    labels = []
    while trail is not None:
        trail, label = trail
        labels.append(label)
    return ("header" + "".join(reversed(labels)))[:200]


_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "id": str,
    "trace": str,
    "ts": (float, int),
    "frames": list,
    "meta": dict,
}
_HEADER_KEYS = frozenset({"v", *_SCHEMA})
_FRAME_KEYS = frozenset({"dtype", "shape"})
# Creation times are Unix seconds up to the last second datetime can represent (9999-12-31),
# so every reader can turn one into a date; anything outside is a forged or corrupt value.
MAX_TS = 253_402_300_799.0


def _check_schema(header: dict[str, Any]) -> None:
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        raise errors.HeaderSchemaError(
            f"unknown header field(s) {unknown!r:.200}; allowed {sorted(_HEADER_KEYS)}", header
        )
    version = header.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise errors.HeaderSchemaError(f"header field 'v' must be an int, got {version!r}", header)
    if version != PROTOCOL_VERSION:
        raise errors.VersionError(
            f"protocol version {version}, this receiver speaks {PROTOCOL_VERSION}", header
        )
    for key, kind in _SCHEMA.items():
        if not isinstance(header.get(key), kind):
            raise errors.HeaderSchemaError(
                f"header field {key!r} must be {kind}, got {header.get(key)!r:.80}", header
            )
    _check_ts(header)


def _check_ts(header: dict[str, Any]) -> None:
    ts = header["ts"]
    if isinstance(ts, bool) or not 0 <= ts <= MAX_TS:  # NaN fails every comparison
        raise errors.HeaderSchemaError(
            f"header field 'ts' must be Unix seconds in [0, {MAX_TS:.0f}], got {ts!r}", header
        )


def _message_type(header: dict[str, Any], accept: frozenset[MessageType] | None) -> MessageType:
    try:
        kind = MessageType(header["type"])
    except ValueError:
        raise errors.MessageTypeError(f"unknown message type {header['type']!r}", header) from None
    if accept is not None and kind not in accept:
        allowed = sorted(str(k) for k in accept)
        raise errors.MessageTypeError(
            f"message type {kind!s} not accepted here ({allowed})", header
        )
    return kind


def _frame_shape(desc: Any, index: int, header: dict[str, Any], limits: Limits) -> tuple[int, ...]:
    if not isinstance(desc, dict) or set(desc) != _FRAME_KEYS:
        raise errors.HeaderSchemaError(
            f"frame {index} descriptor must have exactly {sorted(_FRAME_KEYS)}: {desc!r:.200}",
            header,
        )
    if desc["dtype"] != FRAME_DTYPE:
        raise errors.DtypeError(
            f"frame {index} declared dtype {desc['dtype']!r:.80}, expected {FRAME_DTYPE!r}",
            header,
        )
    shape = desc["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise errors.HeaderSchemaError(f"frame {index} shape malformed: {shape!r:.200}", header)
    _check_shape_bounds(shape, index, header, limits)
    return tuple(shape)


def _check_shape_bounds(
    shape: list[int], index: int, header: dict[str, Any], limits: Limits
) -> None:
    """Refuse a rank or a dimension no frame within the limits can have, before numpy sees it.

    A zero dimension counts as one: numpy refuses ``[0, 2**63]`` although it holds no element,
    so each dimension must fit within ``max_elements`` both alone and times the ones before it.
    The running product is a Python int and stops at the first dimension past the limit, so
    nothing overflows and no shape costs more than ``max_dims`` steps.
    """
    if len(shape) > limits.max_dims:
        raise errors.ShapeLimitError(
            f"frame {index} has {len(shape)} dimensions, limit {limits.max_dims}", header
        )
    extent = 1
    for axis, size in enumerate(shape):
        extent *= max(size, 1)
        if extent > limits.max_elements:
            raise errors.ShapeLimitError(
                f"frame {index} dimension {axis} (size {size}) takes shape {shape} past "
                f"{limits.max_elements} elements, the most a {limits.max_message_bytes}-byte "
                "message holds",
                header,
            )


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite, in one read of the frame and no temporary array.

    NaN and ±inf survive addition (inf - inf is NaN), so a finite sum proves every value finite;
    only a non-finite sum (a bad value, or finite values whose float32 sum overflows) pays for
    the exact elementwise test. On a 4 MB frame ``np.isfinite(a).all()`` writes a 1 MB mask
    into fresh memory; the profile behind ``make bench-transport`` (docs/operations.md,
    "Transport") showed that scan as the largest cost of our receive path over plain pyzmq.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(array.reshape(-1))
    return bool(np.isfinite(total)) or bool(np.isfinite(array).all())


def _check_frame(buf: memoryview, shape: tuple[int, ...], index: int, header: dict) -> np.ndarray:
    expected = math.prod(shape) * _F32.itemsize
    if buf.nbytes != expected:
        raise errors.ShapeMismatchError(
            f"frame {index} has {buf.nbytes} bytes, shape {list(shape)} needs {expected}", header
        )
    array = np.frombuffer(buf, dtype=_F32).reshape(shape)
    array.flags.writeable = False  # a view of received memory: handlers must not mutate it
    if not _all_finite(array):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise errors.NonFiniteError(f"frame {index} holds {bad} non-finite value(s)", header)
    return array


def decode(
    parts: Sequence[Any],
    limits: Limits = DEFAULT_LIMITS,
    accept: frozenset[MessageType] | None = None,
) -> Message:
    """Check a received multipart message completely and return it, or raise a typed error.

    Checks run cheapest first (sizes before unpacking, shapes before scanning values) so a
    hostile message costs little. Returned frames are read-only views of the received memory.
    """
    if not parts:
        raise errors.FrameCountError("empty message: no header part")
    header = _unpack_header(as_buffer(parts[0]), limits)
    _check_schema(header)
    kind = _message_type(header, accept)
    descs = header["frames"]
    buffers = [as_buffer(p) for p in parts[1:]]
    if len(descs) > limits.max_frames or len(buffers) != len(descs):
        raise errors.FrameCountError(
            f"header declares {len(descs)} frame(s) (limit {limits.max_frames}), "
            f"message has {len(buffers)}",
            header,
        )
    total = sum(b.nbytes for b in buffers)
    if total > limits.max_message_bytes:
        raise errors.MessageTooLargeError(
            f"frames total {total} bytes, limit {limits.max_message_bytes}", header
        )
    shapes = [_frame_shape(d, i, header, limits) for i, d in enumerate(descs)]
    frames = tuple(
        _check_frame(b, s, i, header) for i, (b, s) in enumerate(zip(buffers, shapes, strict=True))
    )
    return Message(
        type=kind,
        id=header["id"],
        trace_id=header["trace"],
        created=float(header["ts"]),
        frames=frames,
        meta=header["meta"],
    )
