"""Message framing: the fixed header every message starts with, and the small control messages.

The header is the only part whose layout never depends on the message type, so a receiver can
refuse a peer of another version, or a message it does not know, before it reads anything else.
All integers are little-endian (the native order of every machine this runs on, so packing is a
plain ``struct`` call). The byte layout is documented in ``realtime/PROTOCOL.md``.
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass, field, fields

from realtime.errors import OversizedMessage, ProtocolError, TruncatedMessage, VersionMismatch

logger = logging.getLogger(__name__)

#: First two bytes of every message: "AS" (AdaSR). Tells a stray or foreign message apart at once.
MAGIC = b"AS"
#: Wire protocol version this build speaks. Any change of a layout or a quantiser default bumps it.
PROTOCOL_VERSION = 2
#: magic (2s), version (B), type (B), sequence number (I), capture timestamp in µs (Q).
HEADER_STRUCT = struct.Struct("<2sBBIQ")
#: Bytes in the fixed header.
HEADER_SIZE = HEADER_STRUCT.size
#: Default largest message on a data channel: 16 KiB is what every WebRTC stack delivers intact.
DEFAULT_MAX_MESSAGE = 16 * 1024
#: Smallest max-message setting allowed: must hold a SOURCE_BEGIN and a useful chunk.
MIN_MAX_MESSAGE = 256
#: Largest max-message setting allowed (aiortc's SCTP limit is 64 KiB; this leaves headroom).
MAX_MAX_MESSAGE = 1024 * 1024
#: Sequence numbers are u32 and wrap; see ``ReplayGuard`` for the serial-number arithmetic.
SEQ_MODULUS = 1 << 32
#: Capture timestamps are u64 microseconds on the sender's monotonic clock.
TIMESTAMP_MODULUS = 1 << 64


class MessageType(enum.IntEnum):
    """Message type byte. Motion is 0x0_, source transfer 0x1_, control 0x2_."""

    MOTION = 0x01
    SOURCE_BEGIN = 0x10
    SOURCE_CHUNK = 0x11
    RESET_REFERENCE = 0x20
    GOODBYE = 0x21
    STATS = 0x22
    SOURCE_REQUEST = 0x23
    CLOCK = 0x24


_KNOWN_TYPES = frozenset(int(t) for t in MessageType)


@dataclass(frozen=True)
class Header:
    """The fixed 16-byte header, parsed and validated."""

    type: MessageType
    """What follows the header."""
    seq: int
    """Sequence number, u32, per channel and per sender; wraps modulo 2³²."""
    timestamp_us: int
    """Capture time in microseconds on the sender's clock (u64); only differences are meaningful."""


def check_max_message(max_message: int) -> int:
    """Validate a max-message setting; a nonsense limit would make every check below meaningless."""
    if not isinstance(max_message, int) or not MIN_MAX_MESSAGE <= max_message <= MAX_MAX_MESSAGE:
        raise ValueError(f"max_message must be an int in [{MIN_MAX_MESSAGE}, {MAX_MAX_MESSAGE}], got {max_message!r}")
    return max_message


def encode_header(msg_type: MessageType, seq: int, timestamp_us: int) -> bytes:
    """Pack the fixed header; refuses out-of-range numbers rather than letting struct wrap them."""
    if not 0 <= seq < SEQ_MODULUS:
        raise ValueError(f"sequence number must fit in u32, got {seq}")
    if not 0 <= timestamp_us < TIMESTAMP_MODULUS:
        raise ValueError(f"timestamp must fit in u64 microseconds, got {timestamp_us}")
    return HEADER_STRUCT.pack(MAGIC, PROTOCOL_VERSION, int(msg_type), seq, timestamp_us)


def as_bytes(data: object) -> bytes:
    """Accept bytes-like input only: a text message on a data channel is malformed, not a crash."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise ProtocolError(f"a message must be bytes, got {type(data).__name__}")


def parse_header(data: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> tuple[Header, bytes]:
    """Validate the header and return it with the payload.

    Order matters: the size limit first (never look further into an oversized buffer), then the
    magic, then the version (a peer of another version may lay out the rest differently), then
    the rest of the header and the type.
    """
    if len(data) > max_message:
        raise OversizedMessage(f"message of {len(data)} bytes exceeds the limit of {max_message} bytes")
    if len(data) < len(MAGIC):
        raise TruncatedMessage(f"message of {len(data)} bytes is shorter than the magic")
    if data[: len(MAGIC)] != MAGIC:
        raise ProtocolError(f"bad magic {data[:len(MAGIC)].hex()}, expected {MAGIC.hex()}: not an AdaSR message")
    if len(data) < len(MAGIC) + 1:
        raise TruncatedMessage("message ends before the version byte")
    if data[len(MAGIC)] != PROTOCOL_VERSION:
        raise VersionMismatch(data[len(MAGIC)], PROTOCOL_VERSION)
    if len(data) < HEADER_SIZE:
        raise TruncatedMessage(f"message of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    _, _, type_byte, seq, timestamp_us = HEADER_STRUCT.unpack_from(data)
    if type_byte not in _KNOWN_TYPES:
        raise ProtocolError(f"unknown message type 0x{type_byte:02x}")
    return Header(MessageType(type_byte), seq, timestamp_us), data[HEADER_SIZE:]


def expect_length(payload: bytes, size: int, what: str) -> None:
    """Exact-length check shared by the fixed-size payloads: shorter is truncated, longer is padding."""
    if len(payload) < size:
        raise TruncatedMessage(f"{what} payload of {len(payload)} bytes, expected {size}")
    if len(payload) > size:
        raise ProtocolError(f"{what} payload of {len(payload)} bytes has {len(payload) - size} trailing bytes")


# --------------------------------------------------------------------------------------------
# Control messages (reliable, ordered channel)
# --------------------------------------------------------------------------------------------

_RESET_STRUCT = struct.Struct("<I")


@dataclass(frozen=True)
class ResetReference:
    """Take a new reference pose: relative motion is measured against it from now on."""

    seq: int
    """Sequence number on the control channel."""
    timestamp_us: int
    """Sender time the user asked for the reset."""
    from_motion_seq: int
    """The first motion packet with this sequence number or newer becomes the reference.

    Control and motion travel on different channels with no common order, so the reset names
    the motion frame it applies to instead of meaning "whatever arrives next".
    """


def encode_reset_reference(seq: int, timestamp_us: int, from_motion_seq: int) -> bytes:
    """RESET_REFERENCE: header + u32 first motion sequence number of the new reference."""
    if not 0 <= from_motion_seq < SEQ_MODULUS:
        raise ValueError(f"from_motion_seq must fit in u32, got {from_motion_seq}")
    return encode_header(MessageType.RESET_REFERENCE, seq, timestamp_us) + _RESET_STRUCT.pack(from_motion_seq)


def decode_reset_reference(header: Header, payload: bytes) -> ResetReference:
    """Parse the RESET_REFERENCE payload (exactly 4 bytes)."""
    expect_length(payload, _RESET_STRUCT.size, "RESET_REFERENCE")
    (from_seq,) = _RESET_STRUCT.unpack(payload)
    return ResetReference(header.seq, header.timestamp_us, from_seq)


class GoodbyeReason(enum.IntEnum):
    """Why a peer hangs up; lets the other side tell the user something better than "closed"."""

    NORMAL = 0
    ERROR = 1
    VERSION_MISMATCH = 2
    MODEL_MISMATCH = 3
    TIMEOUT = 4


_KNOWN_REASONS = frozenset(int(r) for r in GoodbyeReason)
#: Longest reason text, in UTF-8 bytes (the length is a u8).
MAX_GOODBYE_TEXT = 255


@dataclass(frozen=True)
class Goodbye:
    """The peer ends the call; the receiver closes its channels and stops rendering."""

    seq: int
    """Sequence number on the control channel."""
    timestamp_us: int
    """Sender time of the hang-up."""
    reason: GoodbyeReason
    """Machine-readable reason."""
    text: str = ""
    """Optional human-readable detail, at most 255 UTF-8 bytes."""


def encode_goodbye(seq: int, timestamp_us: int, reason: GoodbyeReason = GoodbyeReason.NORMAL, text: str = "") -> bytes:
    """GOODBYE: header + u8 reason + u8 text length + UTF-8 text."""
    raw = text.encode("utf-8")
    if len(raw) > MAX_GOODBYE_TEXT:
        raise ValueError(f"goodbye text is {len(raw)} UTF-8 bytes, at most {MAX_GOODBYE_TEXT} allowed")
    return encode_header(MessageType.GOODBYE, seq, timestamp_us) + bytes([int(GoodbyeReason(reason)), len(raw)]) + raw


def decode_goodbye(header: Header, payload: bytes) -> Goodbye:
    """Parse GOODBYE: the text length must match the bytes present exactly."""
    if len(payload) < 2:
        raise TruncatedMessage(f"GOODBYE payload of {len(payload)} bytes, expected at least 2")
    reason, length = payload[0], payload[1]
    if reason not in _KNOWN_REASONS:
        raise ProtocolError(f"GOODBYE with unknown reason code {reason}")
    expect_length(payload, 2 + length, "GOODBYE")
    try:
        text = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"GOODBYE text is not valid UTF-8: {exc.reason}") from None
    return Goodbye(header.seq, header.timestamp_us, GoodbyeReason(reason), text)


#: Largest value of a STATS counter; larger counts are sent saturated.
U32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class CallStats:
    """Counters one peer reports to the other, for the call's status display and logs.

    Fixed fields rather than a key/value blob: nothing to parse but eight u32s, and a new
    counter is a version bump, which is what a layout change should be anyway.
    """

    frames_captured: int = 0
    """Camera frames the sender captured."""
    frames_sent: int = 0
    """Motion packets the sender sent."""
    face_lost_frames: int = 0
    """Frames sent with the FACE_LOST flag (no face tracked)."""
    packets_received: int = 0
    """Messages the receiver got on the motion channel."""
    packets_rejected: int = 0
    """Messages dropped as malformed, duplicated, replayed or out of order."""
    frames_rendered: int = 0
    """Frames the receiver's renderer produced."""
    frames_dropped: int = 0
    """Accepted frames never rendered because a newer one arrived first (latest wins)."""
    render_latency_us: int = 0
    """Recent mean capture-to-render latency in µs (0 when unknown)."""


_STATS_STRUCT = struct.Struct("<" + "I" * len(fields(CallStats)))


@dataclass(frozen=True)
class StatsMessage:
    """A STATS control message."""

    seq: int
    """Sequence number on the control channel."""
    timestamp_us: int
    """Sender time the counters were read."""
    stats: CallStats = field(default_factory=CallStats)
    """The counters."""


def encode_stats(seq: int, timestamp_us: int, stats: CallStats) -> bytes:
    """STATS: header + eight u32 counters in field order; counts beyond u32 saturate."""
    values = []
    for f in fields(CallStats):
        value = getattr(stats, f.name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"stats counter {f.name} must be a non-negative int, got {value!r}")
        values.append(min(value, U32_MAX))
    return encode_header(MessageType.STATS, seq, timestamp_us) + _STATS_STRUCT.pack(*values)


def decode_stats(header: Header, payload: bytes) -> StatsMessage:
    """Parse STATS (exactly 32 bytes)."""
    expect_length(payload, _STATS_STRUCT.size, "STATS")
    values = _STATS_STRUCT.unpack(payload)
    return StatsMessage(header.seq, header.timestamp_us, CallStats(*values))


_SOURCE_REQUEST_STRUCT = struct.Struct("<Q")


@dataclass(frozen=True)
class SourceRequest:
    """A group call's "source please": the publisher of ``feed`` is asked to send its source state again.

    In a room every subscriber receives every message a publisher sends, and the SFU keeps nothing:
    a participant who subscribes late never saw the state, and the publisher cannot know who
    subscribed. So the newcomer asks, on its own published channel, naming the feed it wants.
    """

    seq: int
    """Sequence number on the control channel."""
    timestamp_us: int
    """Sender time of the request."""
    feed: int
    """The room's id of the feed whose source state is wanted (1 ≤ feed < 2⁵³, Janus's JSON-safe ids)."""


#: Largest feed id a SOURCE_REQUEST may name (Janus's ids are JSON-safe integers).
MAX_FEED_ID = (1 << 53) - 1


def encode_source_request(seq: int, timestamp_us: int, feed: int) -> bytes:
    """SOURCE_REQUEST: header + u64 feed id."""
    if not 1 <= feed <= MAX_FEED_ID:
        raise ValueError(f"a feed id is in [1, 2^53), got {feed}")
    return encode_header(MessageType.SOURCE_REQUEST, seq, timestamp_us) + _SOURCE_REQUEST_STRUCT.pack(feed)


def decode_source_request(header: Header, payload: bytes) -> SourceRequest:
    """Parse SOURCE_REQUEST (exactly 8 bytes, a feed id in [1, 2⁵³))."""
    expect_length(payload, _SOURCE_REQUEST_STRUCT.size, "SOURCE_REQUEST")
    (feed,) = _SOURCE_REQUEST_STRUCT.unpack(payload)
    if not 1 <= feed <= MAX_FEED_ID:
        raise ProtocolError(f"SOURCE_REQUEST names feed {feed}, outside [1, 2^53)")
    return SourceRequest(header.seq, header.timestamp_us, feed)


_CLOCK_STRUCT = struct.Struct("<Q")


@dataclass(frozen=True)
class ClockMessage:
    """CLOCK: the sender's wall clock read together with the header's monotonic timestamp.

    Motion is stamped on the sender's monotonic clock; the RTCP sender reports of its voice carry its
    wall clock. One pair of readings of both lets the receiver put a face and its voice on one clock
    (lip sync) without synchronising anything between the peers.
    """

    seq: int
    """Sequence number on the control channel."""
    timestamp_us: int
    """Sender's monotonic clock, µs (the motion timestamps' clock)."""
    wall_us: int
    """Sender's wall clock at the same instant, µs since the Unix epoch (its RTCP sender reports' clock)."""

    @property
    def wall_minus_monotonic_us(self) -> int:
        """Add to a motion timestamp to get the sender's wall clock, µs."""
        return self.wall_us - self.timestamp_us


def encode_clock(seq: int, timestamp_us: int, wall_us: int) -> bytes:
    """CLOCK: header (monotonic µs) + u64 wall-clock µs."""
    if not 0 <= wall_us < TIMESTAMP_MODULUS:
        raise ValueError(f"wall clock must fit in u64 microseconds, got {wall_us}")
    return encode_header(MessageType.CLOCK, seq, timestamp_us) + _CLOCK_STRUCT.pack(wall_us)


def decode_clock(header: Header, payload: bytes) -> ClockMessage:
    """Parse CLOCK (exactly 8 bytes)."""
    expect_length(payload, _CLOCK_STRUCT.size, "CLOCK")
    (wall_us,) = _CLOCK_STRUCT.unpack(payload)
    return ClockMessage(header.seq, header.timestamp_us, wall_us)
