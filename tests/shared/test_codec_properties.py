"""Whatever arrives, ``decode`` returns a checked message or raises one of its typed errors.

Three generators: raw bytes, arbitrary msgpack values as the header, and near-valid messages
(each header field and frame usually good, now and then swapped for a bad or arbitrary value)
that reach every later check. Example counts and the deadline come from the Hypothesis profile
(tests/conftest.py): a few hundred per test in CI, 20,000 under ``make fuzz``; failures are kept
in tests/fuzz_corpus and replayed by every run.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from shared.protocol import Limits, Message, decode
from shared.protocol.errors import DECODE_ERRORS, ProtocolError

LIMITS = Limits(max_header_bytes=4096, max_message_bytes=4096, max_frames=4)

ints = st.integers(-(2**63), 2**64 - 1)
plain_leaves = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
extensions = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)) | st.builds(
    msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)
)
keys = st.text(max_size=8) | st.binary(max_size=4) | ints
values = st.recursive(
    plain_leaves | extensions,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
plain_values = st.recursive(
    plain_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
# (good, bad) per header field; the bad side aims at each check, then at anything at all.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "v": (st.just(1), st.sampled_from([0, 2, True, 1.0]) | values),
    "type": (
        st.sampled_from(["embeddings", "query"]),
        st.sampled_from(["gossip", "", "EMBEDDINGS"]) | values,
    ),
    "id": (st.text(max_size=8), values),
    "trace": (st.text(max_size=8), values),
    "ts": (
        st.floats(0, 2e9) | st.integers(0, 2**31),
        st.sampled_from([True, -1.0, math.nan, math.inf, 2**64 - 1, 1e300]) | values,
    ),
    "meta": (
        st.dictionaries(st.text(max_size=6), plain_values, max_size=3),
        st.dictionaries(keys, values, max_size=3) | values,
    ),
}
HUGE = st.sampled_from([0, 2**31, 2**32, 2**63, 2**64 - 1])
SHAPES = (
    st.lists(st.integers(0, 4), max_size=4),
    st.lists(st.integers(0, 4), min_size=9, max_size=70)  # past max_dims, and numpy's 64
    | st.lists(st.integers(0, 4) | HUGE, min_size=1, max_size=4)  # past max_elements
    | st.lists(st.integers(0, 4) | st.sampled_from([-1, True, 1.5]), min_size=1, max_size=4)
    | values,
)
DTYPES = (st.just("<f4"), st.sampled_from([">f4", "<f8", "f4", b"<f4"]) | values)


class Flaws:
    """Where a near-valid message goes wrong: each choice is bad one time in ``odds``.

    The odds are drawn once (never, never, rarely, often), so many messages are clean
    and decode, most have one flaw, and a few have several."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.odds = draw(st.sampled_from([0, 0, 40, 8]))

    def hit(self) -> bool:
        return self.odds > 0 and self.draw(st.integers(1, self.odds)) == 1

    def pick(self, pair: tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]) -> Any:
        good, bad = pair
        return self.draw(bad if self.hit() else good)


def _descriptor(flaws: Flaws) -> Any:
    desc = {"dtype": flaws.pick(DTYPES), "shape": flaws.pick(SHAPES)}
    if flaws.hit():
        desc[flaws.draw(st.text(max_size=4))] = flaws.draw(values)
    return flaws.draw(values) if flaws.hit() else desc


@st.composite
def near_valid(draw: st.DrawFn) -> list[bytes]:
    """A header with each field usually good, and frames usually sized to their shape.

    Header fields and frames draw their flaws apart: header checks run first, so frames need
    clean headers often enough to meet the shape and value checks."""
    flaws, frame_flaws = Flaws(draw), Flaws(draw)
    header = {key: flaws.pick(pair) for key, pair in FIELDS.items() if not flaws.hit()}
    count = draw(st.integers(0, 3))
    descs = [_descriptor(frame_flaws) for _ in range(count)]
    header["frames"] = draw(values) if flaws.hit() else descs
    if flaws.hit():
        header[draw(st.text(max_size=4))] = draw(values)
    declared = header["frames"]
    frames = []
    for desc in declared if isinstance(declared, list) else []:
        size = _elements(desc.get("shape") if isinstance(desc, dict) else None)
        nbytes = draw(st.integers(0, 64)) if frame_flaws.hit() or size is None else 4 * size
        frames.append(_frame_bytes(frame_flaws, min(nbytes, LIMITS.max_message_bytes + 4)))
    if frame_flaws.hit():
        frames = frames[:-1] if frames else [b"\0" * 4]
    return [_pack(header), *frames]


def _elements(shape: Any) -> int | None:
    if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape):
        return math.prod(shape)
    return None


def _frame_bytes(flaws: Flaws, nbytes: int) -> bytes:
    """Finite float32 values (so the decode can succeed), or with a flaw any bytes at all
    (NaN and infinity among them)."""
    if flaws.hit():
        return flaws.draw(st.binary(min_size=nbytes, max_size=nbytes))
    value = flaws.draw(st.floats(width=32, allow_nan=flaws.hit(), allow_infinity=flaws.hit()))
    return np.full(nbytes // 4, value, np.float32).tobytes() + b"\0" * (nbytes % 4)


def _pack(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _decode_or_typed_error(parts: list[Any]) -> Message | None:
    """Decode; a refusal must be one of the codec's own error types, never anything else."""
    try:
        message = decode(parts, LIMITS)
    except ProtocolError as err:
        event(type(err).__name__)
        assert type(err) in DECODE_ERRORS, type(err)
        assert err.detail
        return None
    event("decoded")
    return message


@given(parts=st.lists(st.binary(max_size=64), max_size=4))
def test_arbitrary_bytes_raise_only_protocol_errors(parts):
    _decode_or_typed_error(parts)


@given(header=values, frames=st.lists(st.binary(max_size=32), max_size=3))
def test_arbitrary_msgpack_headers_raise_only_protocol_errors(header, frames):
    _decode_or_typed_error([_pack(header), *frames])


@given(parts=near_valid())
def test_near_valid_messages_decode_checked_or_raise_only_protocol_errors(parts):
    message = _decode_or_typed_error(parts)
    if message is None:
        return
    header = msgpack.unpackb(parts[0])
    assert [list(f.shape) for f in message.frames] == [d["shape"] for d in header["frames"]]
    assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in message.frames)
    assert all(len(f.shape) <= LIMITS.max_dims for f in message.frames)
    assert message.id == header["id"] and _pack(dict(message.meta)) == _pack(header["meta"])


def _with_shape(shape: list[int], nbytes: int) -> list[bytes]:
    header = {
        "v": 1,
        "type": "embeddings",
        "id": "q",
        "trace": "t",
        "ts": 1.0,
        "frames": [{"dtype": "<f4", "shape": shape}],
        "meta": {},
    }
    return [_pack(header), b"\0" * nbytes]


@given(
    shape=st.lists(st.integers(0, 4) | HUGE | st.integers(0, 2**64 - 1), max_size=70),
    slack=st.sampled_from([0, 0, 0, -4, -1, 1, 4]),
)
def test_any_declared_shape_decodes_checked_or_raises_only_protocol_errors(shape, slack):
    """Ranks up to 70 and dimensions up to 2**64 - 1, with the bytes they need (or a few off):
    numpy refuses many of these shapes itself, so the codec has to refuse them first."""
    needed = 4 * math.prod(shape)
    nbytes = max(0, (needed if needed <= LIMITS.max_message_bytes else 0) + slack)
    message = _decode_or_typed_error(_with_shape(shape, nbytes))
    if message is not None:
        assert list(message.frames[0].shape) == shape and len(shape) <= LIMITS.max_dims
