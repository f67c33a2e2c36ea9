"""One error type per way a received message can be refused, or the stage can fail on one.

The stage-side failures (handler, tick, send) share the base class so one dead-letter writer,
one rejection counter and one log event cover every way work can go missing. Each carries a
short ``reason`` code: it labels the rejection counter, names the dead-letter record and lets
tests tell the failures apart without parsing messages.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(ValueError):
    """A received message broke the wire protocol; the stage refuses it and keeps running."""

    reason = "protocol"

    def __init__(self, detail: str, header: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.header = header


class HeaderDecodeError(ProtocolError):
    """The header bytes are not a msgpack map with string keys."""

    reason = "header_not_msgpack"


class HeaderTooLargeError(ProtocolError):
    """The header exceeds the configured size limit (checked before unpacking)."""

    reason = "header_too_large"


class HeaderSchemaError(ProtocolError):
    """A required header field is missing or has the wrong type."""

    reason = "header_schema"


class VersionError(ProtocolError):
    """The sender speaks a protocol version this receiver does not."""

    reason = "unknown_version"


class MessageTypeError(ProtocolError):
    """The message type is unknown, or not one this socket accepts."""

    reason = "unknown_type"


class FrameCountError(ProtocolError):
    """The number of frames differs from what the header declares (missing or extra frame)."""

    reason = "frame_count"


class MessageTooLargeError(ProtocolError):
    """The frames together exceed the configured total size."""

    reason = "message_too_large"


class DtypeError(ProtocolError):
    """A frame is declared with a dtype other than little-endian float32."""

    reason = "dtype"


class ShapeMismatchError(ProtocolError):
    """A frame's byte length does not match its declared shape (truncated or padded frame)."""

    reason = "shape_mismatch"


class ShapeLimitError(ProtocolError):
    """A frame declares more dimensions, or more elements, than any frame within the limits."""

    reason = "shape_limit"


class NonFiniteError(ProtocolError):
    """A frame holds NaN or an infinity."""

    reason = "non_finite"


class HandlerError(ProtocolError):
    """A well-formed message made the stage's handler raise; dead-lettered like a refusal."""

    reason = "handler_error"


class DecoderBugError(ProtocolError):
    """``decode`` raised something other than a ProtocolError: a bug, refused like bad input."""

    reason = "decoder_bug"


class TickError(ProtocolError):
    """The stage's periodic tick raised; recorded so a failing tick is visible, not fatal."""

    reason = "tick_error"


class SendError(ProtocolError):
    """A message the stage produced could not be sent (encode refused it, no such socket, a
    socket error); it is dropped from the outbox and dead-lettered instead of stopping the loop."""

    reason = "send_failed"


# The errors ``decode`` raises, one per check.
DECODE_ERRORS: tuple[type[ProtocolError], ...] = (
    HeaderDecodeError,
    HeaderTooLargeError,
    HeaderSchemaError,
    VersionError,
    MessageTypeError,
    FrameCountError,
    MessageTooLargeError,
    DtypeError,
    ShapeMismatchError,
    ShapeLimitError,
    NonFiniteError,
)
