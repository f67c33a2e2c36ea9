"""Round trips and sender-side behaviour of the wire codec."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.protocol import Limits, MessageType, decode, encode, new_message
from shared.protocol.errors import NonFiniteError, ShapeLimitError

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7)
arrays = hnp.arrays(np.float32, shapes, elements=finite_f32)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(arrays, max_size=5),
    kind=st.sampled_from(list(MessageType)),
    msg_id=st.text(max_size=40),
    meta=st.dictionaries(st.text(max_size=10), st.integers(-(2**62), 2**62) | st.text(max_size=10)),
)
def test_round_trip_preserves_everything(frames, kind, msg_id, meta):
    msg = new_message(kind, msg_id, frames, meta=meta)
    out = decode(encode(msg))
    assert out.type == kind
    assert (out.id, out.trace_id, out.created, dict(out.meta)) == (
        msg.id,
        msg.trace_id,
        msg.created,
        meta,
    )
    assert len(out.frames) == len(frames)
    for got, sent in zip(out.frames, frames, strict=True):
        assert got.dtype == np.float32 and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (1_048_576,), (10, 25, 200)])
def test_round_trip_empty_and_large(shape):
    rng = np.random.default_rng(0)
    frame = rng.standard_normal(shape).astype(np.float32)
    out = decode(encode(new_message(MessageType.EMBEDDINGS, "q", [frame])))
    np.testing.assert_array_equal(out.frames[0], frame)


def test_sender_makes_non_contiguous_and_float64_input_contiguous_float32():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    view = base[:, ::2].T  # neither C-contiguous nor float32
    parts = encode(new_message(MessageType.EMBEDDINGS, "q", [view]))
    assert parts[1].flags["C_CONTIGUOUS"] and parts[1].dtype == np.float32
    np.testing.assert_array_equal(decode(parts).frames[0], view.astype(np.float32))


def test_sender_refuses_integer_frames():
    with pytest.raises(TypeError, match="frame 0 has dtype int64"):
        encode(new_message(MessageType.QUERY, "q", [np.arange(3)]))


def test_sender_refuses_header_over_limit():
    msg = new_message(MessageType.QUERY, "q", meta={"ids": list(range(5000))})
    with pytest.raises(ValueError, match="over the 1024-byte limit"):
        encode(msg, Limits(max_header_bytes=1024))


def test_decoded_frames_are_read_only_views():
    out = decode(encode(new_message(MessageType.SCORES, "q", [np.ones(4, np.float32)])))
    with pytest.raises(ValueError):
        out.frames[0][0] = 2.0


def test_header_layout_is_the_documented_one():
    parts = encode(
        new_message(
            MessageType.SCORES, "q1", [np.ones((2, 3), np.float32)], trace_id="t1", meta={"k": 1}
        )
    )
    header = msgpack.unpackb(parts[0])
    assert header == {
        "v": 1,
        "type": "scores",
        "id": "q1",
        "trace": "t1",
        "ts": header["ts"],
        "frames": [{"dtype": "<f4", "shape": [2, 3]}],
        "meta": {"k": 1},
    }


def _one_frame(shape: list[int], nbytes: int) -> list[bytes]:
    parts = encode(new_message(MessageType.SCORES, "q", [np.ones(1, np.float32)]))
    header = msgpack.unpackb(parts[0])
    header["frames"] = [{"dtype": "<f4", "shape": shape}]
    return [msgpack.packb(header), b"\0" * nbytes]


def test_rank_limit_comes_from_limits_and_names_the_frame():
    parts = _one_frame([2, 2, 2], 32)
    assert decode(parts).frames[0].shape == (2, 2, 2)
    with pytest.raises(ShapeLimitError, match="frame 0 has 3 dimensions, limit 2"):
        decode(parts, Limits(max_dims=2))


def test_a_dimension_no_message_can_fill_is_refused_even_next_to_a_zero():
    with pytest.raises(ShapeLimitError, match=r"dimension 1 \(size 1099511627776\).*1024 elements"):
        decode(_one_frame([0, 2**40], 0), Limits(max_message_bytes=4096))
    empty = decode(_one_frame([0, 1024], 0), Limits(max_message_bytes=4096)).frames[0]
    assert empty.shape == (0, 1024)


@pytest.mark.parametrize(
    "values, finite",
    [
        ([3e38, 3e38, -1.0], True),  # finite values whose float32 sum overflows: still finite
        ([1.0, np.inf, -np.inf], False),  # +inf and -inf cancel into NaN, not into a number
        ([-3e38, -3e38, np.nan], False),  # a NaN behind an overflowing sum
        ([0.0] * 7 + [np.inf], False),
    ],
)
def test_the_finiteness_check_is_exact_where_a_sum_alone_would_mislead(values, finite):
    frame = np.array(values, dtype=np.float32)
    parts = encode(new_message(MessageType.SCORES, "q", [np.zeros(len(values), np.float32)]))
    parts = [parts[0], frame.tobytes()]
    if finite:
        np.testing.assert_array_equal(decode(parts).frames[0], frame)
    else:
        with pytest.raises(NonFiniteError, match="frame 0 holds 1 non-finite|frame 0 holds 2"):
            decode(parts)
