"""The checked wire protocol every stage speaks (DESIGN.md invariant 2).

A message is ``[header, frame0, frame1, ...]``: a size-limited msgpack header followed by raw
C-contiguous little-endian float32 frames. :mod:`.codec` encodes and decodes, :mod:`.errors`
names every way a message can be refused, :mod:`.deadletter` records the refused ones.
"""

from shared.protocol.codec import Limits, Message, MessageType, decode, encode, new_message
from shared.protocol.deadletter import DeadLetterWriter
from shared.protocol.errors import ProtocolError

__all__ = [
    "DeadLetterWriter",
    "Limits",
    "Message",
    "MessageType",
    "ProtocolError",
    "decode",
    "encode",
    "new_message",
]
