"""The wire protocol in one import: encoders, the ``decode`` dispatcher, and the receiver's guard.

Each message family lives in its own module (``messages``: header and control, ``motion_codec``:
MOTION, ``source_messages``: source transfer, ``source_payload``: the arrays it carries); this
module dispatches on the header's type and adds what a receiver needs to survive a hostile or
broken peer: ``ReplayGuard`` drops stale, duplicated and replayed packets, and ``parse_or_count``
turns every failure into a counter, never an exception.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass
from typing import Union

from realtime.errors import (
    ChecksumMismatch,
    ModelMismatch,
    OversizedMessage,
    ProtocolError,
    TruncatedMessage,
    VersionMismatch,
)
from realtime.messages import (
    DEFAULT_MAX_MESSAGE,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    SEQ_MODULUS,
    CallStats,
    ClockMessage,
    Goodbye,
    GoodbyeReason,
    Header,
    MessageType,
    ResetReference,
    SourceRequest,
    StatsMessage,
    as_bytes,
    check_max_message,
    decode_clock,
    decode_goodbye,
    decode_reset_reference,
    decode_source_request,
    decode_stats,
    encode_clock,
    encode_goodbye,
    encode_reset_reference,
    encode_source_request,
    encode_stats,
    parse_header,
)
from realtime.motion_codec import (
    DEFAULT_QUANTIZER,
    MotionFlags,
    MotionPacket,
    MotionQuantizer,
    decode_motion,
    encode_motion,
)
from realtime.source_messages import (
    SourceAssembler,
    SourceBegin,
    SourceChunk,
    SourceKind,
    decode_source_begin,
    decode_source_chunk,
    encode_source_begin,
    encode_source_chunk,
    model_id_for,
    split_source,
)
from realtime.source_payload import ArrayError, measure_source_error, pack_source_state, unpack_source_state

logger = logging.getLogger(__name__)

Message = Union[MotionPacket, SourceBegin, SourceChunk, ResetReference, Goodbye, StatsMessage, SourceRequest,
                ClockMessage]

__all__ = [
    "ArrayError", "CallStats", "ChecksumMismatch", "ClockMessage", "DEFAULT_MAX_MESSAGE", "DEFAULT_QUANTIZER",
    "Goodbye", "GoodbyeReason", "HEADER_SIZE", "Header", "MAGIC", "Message", "MessageType", "ModelMismatch",
    "MotionFlags", "MotionPacket", "MotionQuantizer", "OversizedMessage", "PROTOCOL_VERSION", "ProtocolError",
    "ReceiverCounters", "ReplayGuard", "ResetReference", "SourceAssembler", "SourceBegin", "SourceChunk",
    "SourceKind", "SourceRequest", "StatsMessage", "TruncatedMessage", "Verdict", "VersionMismatch", "decode",
    "encode", "encode_clock", "encode_goodbye", "encode_motion", "encode_reset_reference", "encode_source_request",
    "encode_stats", "measure_source_error", "model_id_for", "pack_source_state", "parse_or_count", "split_source",
    "unpack_source_state",
]


def decode(
    data: bytes, *, quantizer: MotionQuantizer = DEFAULT_QUANTIZER, max_message: int = DEFAULT_MAX_MESSAGE
) -> Message:
    """Bytes → message. Raises ``ProtocolError`` (or a subclass) and nothing else for bad input."""
    check_max_message(max_message)
    header, payload = parse_header(as_bytes(data), max_message)
    if header.type == MessageType.MOTION:
        return decode_motion(header, payload, quantizer)
    if header.type == MessageType.SOURCE_BEGIN:
        return decode_source_begin(header, payload, max_message)
    if header.type == MessageType.SOURCE_CHUNK:
        return decode_source_chunk(header, payload)
    if header.type == MessageType.RESET_REFERENCE:
        return decode_reset_reference(header, payload)
    if header.type == MessageType.GOODBYE:
        return decode_goodbye(header, payload)
    if header.type == MessageType.STATS:
        return decode_stats(header, payload)
    if header.type == MessageType.SOURCE_REQUEST:
        return decode_source_request(header, payload)
    if header.type == MessageType.CLOCK:
        return decode_clock(header, payload)
    raise ProtocolError(f"no decoder for message type {header.type!r}")  # unreachable: parse_header checks


def encode(message: Message, *, quantizer: MotionQuantizer = DEFAULT_QUANTIZER) -> bytes:
    """Message object → bytes (the inverse of ``decode``), for tests and resends."""
    if isinstance(message, MotionPacket):
        return encode_motion(message.seq, message.timestamp_us, message.vector, message.flags, quantizer,
                             message.face_ratios)
    if isinstance(message, SourceBegin):
        return encode_source_begin(message)
    if isinstance(message, SourceChunk):
        return encode_source_chunk(message)
    if isinstance(message, ResetReference):
        return encode_reset_reference(message.seq, message.timestamp_us, message.from_motion_seq)
    if isinstance(message, Goodbye):
        return encode_goodbye(message.seq, message.timestamp_us, message.reason, message.text)
    if isinstance(message, StatsMessage):
        return encode_stats(message.seq, message.timestamp_us, message.stats)
    if isinstance(message, SourceRequest):
        return encode_source_request(message.seq, message.timestamp_us, message.feed)
    if isinstance(message, ClockMessage):
        return encode_clock(message.seq, message.timestamp_us, message.wall_us)
    raise TypeError(f"cannot encode {type(message).__name__}")


class Verdict(enum.Enum):
    """What ``ReplayGuard`` decided about a sequence number."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    REPLAYED = "replayed"


class ReplayGuard:
    """Receiver-side sequence tracker: only packets newer than the newest accepted one get through.

    Latest wins, so a late packet is useless even if genuine. Sequence numbers are u32 compared
    with serial-number arithmetic (RFC 1982): ``seq`` is newer when (seq − newest) mod 2³² lies in
    [1, 2³¹). At 60 packets/s that half-space is 414 days, so wrap-around is handled but never
    ambiguous in a call. A bitmap of the last ``window`` sequence numbers tells the drops apart:
    a number seen before is a *duplicate*; an unseen one within the window is *out of order*
    (late); one older than the window cannot be genuine lateness and counts as *replayed*.
    Use one guard per channel and per sender; a new call (or a peer restart) needs a new guard.
    """

    def __init__(self, window: int = 256) -> None:
        if not 1 <= window <= 1 << 16:
            raise ValueError(f"window must be in [1, 65536], got {window}")
        self.window = window
        self.newest: int | None = None
        """Newest accepted sequence number, None before the first packet."""
        self._seen = 0  # bit i set ⇔ newest − i was seen (accepted, or dropped as late)

    def check(self, seq: int) -> Verdict:
        """Classify ``seq`` and, if accepted, make it the newest."""
        if self.newest is None:
            self.newest, self._seen = seq, 1
            return Verdict.ACCEPTED
        ahead = (seq - self.newest) % SEQ_MODULUS
        if ahead == 0:
            return Verdict.DUPLICATE
        if ahead < SEQ_MODULUS // 2:
            self._seen = ((self._seen << ahead) | 1) & ((1 << self.window) - 1) if ahead < self.window else 1
            self.newest = seq
            return Verdict.ACCEPTED
        behind = SEQ_MODULUS - ahead
        if behind >= self.window:
            return Verdict.REPLAYED
        if self._seen >> behind & 1:
            return Verdict.DUPLICATE
        self._seen |= 1 << behind
        return Verdict.OUT_OF_ORDER


@dataclass
class ReceiverCounters:
    """What a receiver did with the messages it got; shown in stats and sent in STATS."""

    received: int = 0
    """Messages handed to ``parse_or_count``."""
    accepted: int = 0
    """Messages returned to the caller."""
    malformed: int = 0
    """Dropped: failed validation (bad magic, unknown type, truncated, inconsistent fields...)."""
    oversized: int = 0
    """Dropped: larger than the max message size, or claiming a length above a limit."""
    version_mismatch: int = 0
    """Dropped: the peer speaks another protocol version (the call should end with GOODBYE)."""
    out_of_order: int = 0
    """Dropped: older than the newest accepted packet and not seen before (late)."""
    duplicate: int = 0
    """Dropped: a sequence number already seen."""
    replayed: int = 0
    """Dropped: a sequence number older than the replay window."""
    last_error: str = ""
    """Message of the most recent validation failure, for logs and the status line."""

    @property
    def dropped(self) -> int:
        """All messages not accepted."""
        return self.received - self.accepted

    def unaccept(self, why: str) -> None:
        """A message ``parse_or_count`` accepted that this receiver cannot use (another model's K, the wrong
        channel): counted as malformed instead."""
        self.malformed += 1
        self.accepted -= 1
        self.last_error = f"dropped {why}"

    def as_dict(self) -> dict[str, int | str]:
        """Plain dict, for JSON logs."""
        return asdict(self)


def parse_or_count(
    data: object,
    counters: ReceiverCounters,
    guard: ReplayGuard | None = None,
    *,
    quantizer: MotionQuantizer = DEFAULT_QUANTIZER,
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> Message | None:
    """Decode one received message, or count why not and return None. Never raises.

    With a ``guard``, every message's sequence number goes through it (one guard per channel).
    """
    counters.received += 1
    try:
        message = decode(data, quantizer=quantizer, max_message=max_message)  # type: ignore[arg-type]
    except VersionMismatch as exc:
        counters.version_mismatch += 1
        counters.last_error = str(exc)
        log = logger.warning if counters.version_mismatch == 1 else logger.debug
        log("refused message: %s", exc)
        return None
    except OversizedMessage as exc:
        counters.oversized += 1
        counters.last_error = str(exc)
        logger.debug("dropped oversized message: %s", exc)
        return None
    except ProtocolError as exc:
        counters.malformed += 1
        counters.last_error = str(exc)
        logger.debug("dropped malformed message: %s", exc)
        return None
    except Exception as exc:  # a decoder bug must not take the call down: drop, count, log loudly
        counters.malformed += 1
        counters.last_error = f"internal decoder error: {exc!r}"
        logger.exception("decoder failed on a %s message", type(data).__name__)
        return None
    if guard is not None:
        verdict = guard.check(message.seq)
        if verdict is not Verdict.ACCEPTED:
            setattr(counters, verdict.value, getattr(counters, verdict.value) + 1)
            return None
    counters.accepted += 1
    return message
