"""A corpus of malformed messages, each paired with the error type it must raise.

Shared by the codec tests and the running-stage tests so both check the same corpus.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import numpy as np

from shared.protocol import MessageType, encode, new_message
from shared.protocol import errors as e

Parts = list[bytes]


def good(msg_id: str = "good", n: int = 8) -> Parts:
    frame = np.arange(n, dtype=np.float32)
    return [bytes(p) for p in encode(new_message(MessageType.EMBEDDINGS, msg_id, [frame]))]


def _with_header(**changes: object) -> Parts:
    parts = good("bad")
    header = msgpack.unpackb(parts[0])
    header.update(changes)
    return [msgpack.packb(header), *parts[1:]]


def _shaped(shape: list[int], nbytes: int) -> Parts:
    """A message whose one frame declares ``shape`` and carries ``nbytes`` bytes."""
    header = msgpack.unpackb(good("bad")[0])
    header["frames"] = [{"dtype": "<f4", "shape": shape}]
    return [msgpack.packb(header), b"\0" * nbytes]


def _frame_values(value: float) -> Parts:
    frame = np.arange(8, dtype=np.float32)
    frame[3] = value
    parts = good("bad")
    return [parts[0], frame.tobytes()]


CORPUS: dict[str, tuple[Callable[[], Parts], type[e.ProtocolError]]] = {
    "truncated_frame": (lambda: [good("bad")[0], good("bad")[1][:-3]], e.ShapeMismatchError),
    "padded_frame": (lambda: [good("bad")[0], good("bad")[1] + b"\0\0\0\0"], e.ShapeMismatchError),
    "missing_frame": (lambda: good("bad")[:1], e.FrameCountError),
    "extra_frame": (lambda: [*good("bad"), b"\0" * 4], e.FrameCountError),
    "no_parts": (lambda: [], e.FrameCountError),
    "wrong_dtype": (lambda: _with_header(frames=[{"dtype": "<f8", "shape": [4]}]), e.DtypeError),
    "big_endian": (lambda: _with_header(frames=[{"dtype": ">f4", "shape": [8]}]), e.DtypeError),
    "shape_vs_bytes": (
        lambda: _with_header(frames=[{"dtype": "<f4", "shape": [3, 3]}]),
        e.ShapeMismatchError,
    ),
    "nan": (lambda: _frame_values(np.nan), e.NonFiniteError),
    "pos_inf": (lambda: _frame_values(np.inf), e.NonFiniteError),
    "neg_inf": (lambda: _frame_values(-np.inf), e.NonFiniteError),
    "oversized_header": (lambda: _with_header(meta={"pad": "x" * 70_000}), e.HeaderTooLargeError),
    "unknown_version": (lambda: _with_header(v=99), e.VersionError),
    "unknown_type": (lambda: _with_header(type="gossip"), e.MessageTypeError),
    "not_msgpack": (lambda: [b"\xc1\xc1 definitely not msgpack", good()[1]], e.HeaderDecodeError),
    "header_not_a_map": (lambda: [msgpack.packb([1, 2, 3]), good()[1]], e.HeaderDecodeError),
    "missing_id": (lambda: _with_header(id=None), e.HeaderSchemaError),
    "negative_dim": (
        lambda: _with_header(frames=[{"dtype": "<f4", "shape": [-8]}]),
        e.HeaderSchemaError,
    ),
    # numpy itself refuses these shapes with a plain ValueError: the codec must get there first
    "rank_65": (lambda: _shaped([1] * 65, 4), e.ShapeLimitError),
    "rank_9": (lambda: _shaped([1] * 9, 4), e.ShapeLimitError),
    "zero_by_huge": (lambda: _shaped([0, 2**63], 0), e.ShapeLimitError),
    "huge_by_huge": (lambda: _shaped([2**32, 2**32], 16), e.ShapeLimitError),
    "ts_bool": (lambda: _with_header(ts=True), e.HeaderSchemaError),
    "ts_past_year_9999": (lambda: _with_header(ts=2**64 - 1), e.HeaderSchemaError),
    "ts_negative": (lambda: _with_header(ts=-1.0), e.HeaderSchemaError),
    "unknown_header_key": (lambda: _with_header(extra="x"), e.HeaderSchemaError),
    "unknown_frame_key": (
        lambda: _with_header(frames=[{"dtype": "<f4", "shape": [8], "stride": 4}]),
        e.HeaderSchemaError,
    ),
    "ext_type_in_meta": (
        lambda: _with_header(meta={"x": [msgpack.ExtType(42, b"payload")]}),
        e.HeaderDecodeError,
    ),
    "timestamp_in_meta": (
        lambda: _with_header(meta={"when": msgpack.Timestamp(1, 0)}),
        e.HeaderSchemaError,
    ),
    "bytes_key_in_meta": (lambda: _with_header(meta={b"k": 1}), e.HeaderSchemaError),
}
