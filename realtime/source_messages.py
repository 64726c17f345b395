"""SOURCE_BEGIN / SOURCE_CHUNK: a source payload carried across the reliable channel, and put back together.

The source payload (``realtime.source_payload``: the SourceState's arrays as bytes) crosses the network
once per call, on the reliable channel, in chunks that fit the data channel's message size. This
module knows bytes, not what they hold:

* ``split_source``: payload → SOURCE_BEGIN (length, SHA-256, model id, kind) + SOURCE_CHUNKs;
* ``SourceAssembler``: chunks in any order → payload, after every check (model id, length limit,
  chunk consistency, SHA-256), holding only the chunks that arrived (an announcement costs nothing
  until its data comes).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import struct
from dataclasses import dataclass

from realtime.errors import ChecksumMismatch, ModelMismatch, OversizedMessage, ProtocolError, TruncatedMessage
from realtime.messages import (
    DEFAULT_MAX_MESSAGE,
    HEADER_SIZE,
    MIN_MAX_MESSAGE,
    SEQ_MODULUS,
    Header,
    MessageType,
    check_max_message,
    encode_header,
    expect_length,
)

logger = logging.getLogger(__name__)

#: Bytes of a model identity (a SHA-256 digest; see ``model_id_for``).
MODEL_ID_SIZE = 32
#: Default ceiling on a source payload a receiver accepts (the official 512² state is ~4 MiB in fp16).
DEFAULT_MAX_SOURCE_BYTES = 64 * 1024 * 1024


class SourceKind(enum.IntEnum):
    """What a source payload holds."""

    FEATURE_VOLUME = 1
    """The encoded SourceState (f_s, canonical keypoints, source motion): the receiver skips the encoder."""
    SOURCE_IMAGE = 2
    """The source portrait crop: the receiver runs the source encoder itself."""


_KNOWN_KINDS = frozenset(int(k) for k in SourceKind)

# transfer id, total length, chunk size, chunk count, kind, 3 reserved bytes, SHA-256, model id
_BEGIN_STRUCT = struct.Struct(f"<IIIIB3s32s{MODEL_ID_SIZE}s")
# transfer id, chunk index, chunk count, data length
_CHUNK_STRUCT = struct.Struct("<IIII")
#: Bytes of a SOURCE_CHUNK before its data: header + chunk fields.
CHUNK_OVERHEAD = HEADER_SIZE + _CHUNK_STRUCT.size
#: Smallest chunk a transfer may announce (but for a payload that is smaller): what the smallest allowed
#: message carries. A sender never needs less; a peer asking for 1-byte chunks wants a million messages.
MIN_CHUNK_DATA = MIN_MAX_MESSAGE - CHUNK_OVERHEAD


def model_id_for(identity: str | bytes) -> bytes:
    """A 32-byte model id: SHA-256 of whatever names the model (checkpoint bytes, preset + weights hash)."""
    raw = identity.encode("utf-8") if isinstance(identity, str) else bytes(identity)
    return hashlib.sha256(raw).digest()


def max_chunk_data(max_message: int) -> int:
    """Data bytes per chunk so that a whole SOURCE_CHUNK fits in ``max_message``."""
    return check_max_message(max_message) - CHUNK_OVERHEAD


@dataclass(frozen=True)
class SourceBegin:
    """Announces a source transfer; nothing is allocated for it before this is validated."""

    seq: int
    """Sequence number on the reliable channel."""
    timestamp_us: int
    """Sender time the transfer started."""
    transfer_id: int
    """Identifies the transfer; every chunk repeats it (a new BEGIN replaces an unfinished transfer)."""
    total_length: int
    """Payload bytes, ≥ 1."""
    chunk_size: int
    """Data bytes in every chunk but the last, which holds the remainder."""
    chunk_count: int
    """Number of chunks, exactly ceil(total_length / chunk_size)."""
    kind: SourceKind
    """What the payload holds."""
    sha256: bytes
    """SHA-256 of the whole payload."""
    model_id: bytes
    """32-byte identity of the model that produced the payload."""


@dataclass(frozen=True)
class SourceChunk:
    """One piece of a source payload."""

    seq: int
    """Sequence number on the reliable channel."""
    timestamp_us: int
    """Sender time the chunk was sent."""
    transfer_id: int
    """Transfer this chunk belongs to."""
    index: int
    """Position of the chunk, 0 ≤ index < count."""
    count: int
    """Number of chunks of the transfer (must match the BEGIN)."""
    data: bytes
    """The chunk's bytes."""


def encode_source_begin(begin: SourceBegin) -> bytes:
    """SOURCE_BEGIN: header + 84 bytes of fixed fields."""
    if len(begin.sha256) != 32 or len(begin.model_id) != MODEL_ID_SIZE:
        raise ValueError("sha256 and model_id must be 32 bytes each")
    body = _BEGIN_STRUCT.pack(
        begin.transfer_id, begin.total_length, begin.chunk_size, begin.chunk_count, int(SourceKind(begin.kind)),
        b"\0\0\0", begin.sha256, begin.model_id,
    )
    return encode_header(MessageType.SOURCE_BEGIN, begin.seq, begin.timestamp_us) + body


def encode_source_chunk(chunk: SourceChunk) -> bytes:
    """SOURCE_CHUNK: header + transfer id, index, count, data length (u32 each) + data."""
    if not 0 <= chunk.index < chunk.count:
        raise ValueError(f"chunk index {chunk.index} outside [0, {chunk.count})")
    if not chunk.data:
        raise ValueError("a chunk carries at least one byte")
    fields = _CHUNK_STRUCT.pack(chunk.transfer_id, chunk.index, chunk.count, len(chunk.data))
    return encode_header(MessageType.SOURCE_CHUNK, chunk.seq, chunk.timestamp_us) + fields + bytes(chunk.data)


def decode_source_begin(header: Header, payload: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> SourceBegin:
    """Parse SOURCE_BEGIN and check its fields agree with each other (not yet with the receiver's limits)."""
    expect_length(payload, _BEGIN_STRUCT.size, "SOURCE_BEGIN")
    transfer_id, total, chunk_size, count, kind, reserved, digest, model_id = _BEGIN_STRUCT.unpack(payload)
    if kind not in _KNOWN_KINDS:
        raise ProtocolError(f"SOURCE_BEGIN with unknown encoding kind {kind}")
    if reserved != b"\0\0\0":
        raise ProtocolError("SOURCE_BEGIN with non-zero reserved bytes")
    if total == 0:
        raise ProtocolError("SOURCE_BEGIN announces an empty payload")
    if not min(MIN_CHUNK_DATA, total) <= chunk_size <= total:
        raise ProtocolError(f"SOURCE_BEGIN chunk size {chunk_size} outside [{min(MIN_CHUNK_DATA, total)}, "
                            f"total length {total}]")
    if chunk_size > max_message - CHUNK_OVERHEAD:
        raise OversizedMessage(f"SOURCE_BEGIN chunk size {chunk_size} does not fit a {max_message}-byte message")
    if count != -(-total // chunk_size):
        raise ProtocolError(f"SOURCE_BEGIN chunk count {count} != ceil({total} / {chunk_size})")
    return SourceBegin(header.seq, header.timestamp_us, transfer_id, total, chunk_size, count, SourceKind(kind), digest,
                       model_id)


def decode_source_chunk(header: Header, payload: bytes) -> SourceChunk:
    """Parse SOURCE_CHUNK; the data length field must match the bytes present exactly."""
    if len(payload) < _CHUNK_STRUCT.size:
        raise TruncatedMessage(f"SOURCE_CHUNK payload of {len(payload)} bytes, expected at least {_CHUNK_STRUCT.size}")
    transfer_id, index, count, length = _CHUNK_STRUCT.unpack_from(payload)
    if count == 0:
        raise ProtocolError("SOURCE_CHUNK with a chunk count of zero")
    if index >= count:
        raise ProtocolError(f"SOURCE_CHUNK index {index} outside [0, {count})")
    if length == 0:
        raise ProtocolError("SOURCE_CHUNK without data")
    expect_length(payload, _CHUNK_STRUCT.size + length, "SOURCE_CHUNK")
    return SourceChunk(header.seq, header.timestamp_us, transfer_id, index, count, payload[_CHUNK_STRUCT.size :])


def split_source(
    payload: bytes,
    model_id: bytes,
    kind: SourceKind,
    max_message: int = DEFAULT_MAX_MESSAGE,
    *,
    transfer_id: int | None = None,
    first_seq: int = 0,
    timestamp_us: int = 0,
) -> list[bytes]:
    """Payload → [SOURCE_BEGIN, SOURCE_CHUNK...], every message at most ``max_message`` bytes.

    Sequence numbers run from ``first_seq`` (mod 2³²). The transfer id defaults to the first four
    bytes of the payload's SHA-256, so resending the same state reuses the same id.
    """
    if not payload:
        raise ValueError("cannot send an empty source payload")
    if len(payload) >= SEQ_MODULUS:
        raise ValueError(f"source payload of {len(payload)} bytes does not fit a u32 length")
    if len(model_id) != MODEL_ID_SIZE:
        raise ValueError(f"model id must be {MODEL_ID_SIZE} bytes, got {len(model_id)}")
    digest = hashlib.sha256(payload).digest()
    if transfer_id is None:
        transfer_id = int.from_bytes(digest[:4], "little")
    chunk_size = min(max_chunk_data(max_message), len(payload))
    count = -(-len(payload) // chunk_size)
    seq = first_seq % SEQ_MODULUS
    begin = SourceBegin(seq, timestamp_us, transfer_id, len(payload), chunk_size, count, SourceKind(kind), digest,
                        model_id)
    messages = [encode_source_begin(begin)]
    for index in range(count):
        data = payload[index * chunk_size : (index + 1) * chunk_size]
        chunk = SourceChunk((seq + 1 + index) % SEQ_MODULUS, timestamp_us, transfer_id, index, count, data)
        messages.append(encode_source_chunk(chunk))
    return messages


class SourceAssembler:
    """Rebuilds a source payload from SOURCE_BEGIN and its chunks, refusing anything inconsistent.

    The BEGIN must come first (the reliable channel is ordered; a chunk of an unannounced
    transfer is refused rather than buffered, so nothing is held for data nobody vouched for).
    Chunks then may come in any order. Nothing is allocated for an announcement: the chunks that
    arrive are kept as they are and joined once all are there, so memory follows the bytes the
    peer actually sent (bounded by the BEGIN's length, checked against ``max_total``). A refused
    chunk leaves the transfer intact; a checksum failure ends it.
    """

    def __init__(
        self,
        expected_model_id: bytes,
        *,
        max_total: int = DEFAULT_MAX_SOURCE_BYTES,
        expected_kind: SourceKind | None = None,
    ) -> None:
        if len(expected_model_id) != MODEL_ID_SIZE:
            raise ValueError(f"model id must be {MODEL_ID_SIZE} bytes, got {len(expected_model_id)}")
        self.expected_model_id = bytes(expected_model_id)
        self.max_total = max_total
        self.expected_kind = expected_kind
        self.completed: SourceBegin | None = None
        """The BEGIN of the last transfer that completed and passed its checksum."""
        self._begin: SourceBegin | None = None
        self._chunks: dict[int, bytes] = {}

    @property
    def in_progress(self) -> bool:
        """Whether a transfer has been announced and not finished."""
        return self._begin is not None

    @property
    def progress(self) -> tuple[int, int]:
        """(chunks received, chunk count) of the current transfer; (0, 0) when idle."""
        if self._begin is None:
            return 0, 0
        return len(self._chunks), self._begin.chunk_count

    def reset(self) -> None:
        """Abandon the current transfer and free its chunks."""
        self._begin = None
        self._chunks = {}

    def feed(self, message: SourceBegin | SourceChunk) -> bytes | None:
        """Take one decoded message; return the payload once complete and verified, else None."""
        if isinstance(message, SourceBegin):
            self._start(message)
            return None
        if isinstance(message, SourceChunk):
            return self._add(message)
        raise ProtocolError(f"{type(message).__name__} is not part of a source transfer")

    def _start(self, begin: SourceBegin) -> None:
        if begin.model_id != self.expected_model_id:
            raise ModelMismatch(
                f"source state was made by model {begin.model_id.hex()[:16]}…, this receiver runs "
                f"{self.expected_model_id.hex()[:16]}…: both peers must load the same checkpoint and preset"
            )
        if self.expected_kind is not None and begin.kind != self.expected_kind:
            raise ProtocolError(f"source transfer of kind {begin.kind.name}, expected {self.expected_kind.name}")
        if begin.total_length > self.max_total:
            raise OversizedMessage(f"source transfer claims {begin.total_length} bytes, the limit is {self.max_total}")
        if (not min(MIN_CHUNK_DATA, begin.total_length) <= begin.chunk_size <= begin.total_length
                or begin.chunk_count != -(-begin.total_length // begin.chunk_size)):
            raise ProtocolError("SOURCE_BEGIN fields are inconsistent")
        if self._begin is not None:
            logger.info("source transfer %08x replaced by %08x before completing",
                        self._begin.transfer_id, begin.transfer_id)
        self._begin = begin
        self._chunks = {}

    def _add(self, chunk: SourceChunk) -> bytes | None:
        begin = self._begin
        if begin is None:
            raise ProtocolError(f"chunk of transfer {chunk.transfer_id:08x} before any SOURCE_BEGIN")
        if chunk.transfer_id != begin.transfer_id:
            raise ProtocolError(f"chunk of transfer {chunk.transfer_id:08x}, "
                                f"current transfer is {begin.transfer_id:08x}")
        if chunk.count != begin.chunk_count:
            raise ProtocolError(f"chunk says {chunk.count} chunks, SOURCE_BEGIN said {begin.chunk_count}")
        if not 0 <= chunk.index < begin.chunk_count:
            raise ProtocolError(f"chunk index {chunk.index} outside [0, {begin.chunk_count})")
        start = chunk.index * begin.chunk_size
        expected = min(begin.chunk_size, begin.total_length - start)
        if len(chunk.data) != expected:
            raise ProtocolError(f"chunk {chunk.index} holds {len(chunk.data)} bytes, expected {expected}")
        if chunk.index in self._chunks:
            raise ProtocolError(f"duplicate chunk {chunk.index} of transfer {begin.transfer_id:08x}")
        self._chunks[chunk.index] = bytes(chunk.data)
        if len(self._chunks) < begin.chunk_count:
            return None
        payload = b"".join(self._chunks[index] for index in range(begin.chunk_count))
        self.reset()
        if hashlib.sha256(payload).digest() != begin.sha256:
            raise ChecksumMismatch(f"source transfer {begin.transfer_id:08x} failed its SHA-256 check; discarded")
        self.completed = begin
        return payload
