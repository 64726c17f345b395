"""SOURCE_BEGIN / SOURCE_CHUNK messages and the SourceState payload they carry.

The source state (feature volume f_s, canonical keypoints, the source's own motion) crosses the
network once per call, on the reliable channel, in chunks that fit the data channel's message
size. Three layers:

* ``pack_source_state`` / ``unpack_source_state``: named float32 arrays ↔ one payload (fp16 or
  per-channel 8-bit quantisation, byte-shuffled, then zlib or lzma from the standard library);
* ``split_source``: payload → SOURCE_BEGIN (length, SHA-256, model id, kind) + SOURCE_CHUNKs;
* ``SourceAssembler``: chunks in any order → payload, after every check, holding only the chunks
  that arrived (an announcement costs nothing until its data comes).

Compression is stdlib only: a codec that depends on an optional package (zstd) would make two
peers unable to talk depending on what happens to be installed, for a one-off transfer where the
difference is a fraction of a second. zlib is the default (fast, bounded-output decompression);
lzma is selectable for a few percent more at several times the CPU.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import lzma
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

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
#: Default ceiling on the decompressed size of a payload (guards against decompression bombs).
DEFAULT_MAX_RAW_BYTES = 128 * 1024 * 1024


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
    return SourceBegin(header.seq, header.timestamp_us, transfer_id, total, chunk_size, count, SourceKind(kind), digest, model_id)


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
    begin = SourceBegin(seq, timestamp_us, transfer_id, len(payload), chunk_size, count, SourceKind(kind), digest, model_id)
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
            logger.info("source transfer %08x replaced by %08x before completing", self._begin.transfer_id, begin.transfer_id)
        self._begin = begin
        self._chunks = {}

    def _add(self, chunk: SourceChunk) -> bytes | None:
        begin = self._begin
        if begin is None:
            raise ProtocolError(f"chunk of transfer {chunk.transfer_id:08x} before any SOURCE_BEGIN")
        if chunk.transfer_id != begin.transfer_id:
            raise ProtocolError(f"chunk of transfer {chunk.transfer_id:08x}, current transfer is {begin.transfer_id:08x}")
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


# --------------------------------------------------------------------------------------------
# SourceState payload: named arrays ↔ bytes
# --------------------------------------------------------------------------------------------

#: First bytes of a source payload.
STATE_MAGIC = b"ASRC"
#: Version of the payload format (independent of the wire version, checked on its own).
STATE_FORMAT_VERSION = 1
# magic, format version, compression, reserved u16, uncompressed body length
_STATE_HEADER = struct.Struct("<4sBBHI")
#: Arrays per payload, name length and rank limits: a state has three or four small-rank arrays.
MAX_ARRAYS = 64
MAX_NAME_BYTES = 64
MAX_NDIM = 8

Quantization = Literal["fp32", "fp16", "int8"]
Compression = Literal["none", "zlib", "lzma"]


class _Compression(enum.IntEnum):
    NONE = 0
    ZLIB = 1
    LZMA = 2


class _Encoding(enum.IntEnum):
    F32 = 0  # little-endian float32, byte-shuffled
    F16 = 1  # little-endian float16, byte-shuffled
    AFFINE_U8 = 2  # per-channel x = min + q·scale, q in 0..255
    RAW_U8 = 3  # uint8 arrays (an image crop), lossless


_ITEMSIZE = {_Encoding.F32: 4, _Encoding.F16: 2, _Encoding.AFFINE_U8: 1, _Encoding.RAW_U8: 1}
_FP16_MAX = 65504.0


@dataclass(frozen=True)
class ArrayError:
    """Reconstruction error of one array after a quantise/dequantise round trip."""

    max_abs: float
    """Largest absolute error."""
    rms: float
    """Root-mean-square error."""
    max_rel: float
    """max_abs divided by the array's largest magnitude (0 for an all-zero array)."""


def _shuffle(arr: np.ndarray) -> bytes:
    """Byte planes (all first bytes, then all second bytes...): floats compress far better so."""
    return arr.reshape(-1).view(np.uint8).reshape(-1, arr.itemsize).T.tobytes()


def _unshuffle(data: bytes, dtype: str, itemsize: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1).T.copy().view(dtype).reshape(-1)


def _channel_axis(arr: np.ndarray) -> int:
    """Channels are axis 1 of batched tensors ([1, C, D, H, W]), else axis 0."""
    return 1 if arr.ndim >= 2 else 0


def _encode_array(name: str, arr: np.ndarray, quantization: Quantization, min_elements: int) -> bytes:
    raw_name = name.encode("utf-8")
    if not 1 <= len(raw_name) <= MAX_NAME_BYTES:
        raise ValueError(f"array name must be 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name!r}")
    if arr.ndim > MAX_NDIM or any(d < 1 or d >= SEQ_MODULUS for d in arr.shape):
        raise ValueError(f"array {name!r} of shape {arr.shape}: rank ≤ {MAX_NDIM}, every dimension in [1, 2³²)")
    if arr.dtype == np.uint8:
        encoding, extra, data = _Encoding.RAW_U8, b"", arr.tobytes()
    elif np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"array {name!r} contains NaN or infinity")
        small = values.size < min_elements or values.ndim == 0
        mode = "fp32" if small else quantization
        if mode == "fp16" and np.abs(values).max() > _FP16_MAX:
            logger.warning("array %r exceeds the float16 range; sent as float32", name)
            mode = "fp32"
        if mode == "fp32":
            encoding, extra, data = _Encoding.F32, b"", _shuffle(values.astype("<f4"))
        elif mode == "fp16":
            encoding, extra, data = _Encoding.F16, b"", _shuffle(values.astype("<f2"))
        elif mode == "int8":
            axis = _channel_axis(values)
            moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
            lo = moved.min(axis=1)
            scale = (moved.max(axis=1) - lo) / 255.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            codes = np.rint((moved - lo[:, None]) / scale[:, None]).clip(0, 255).astype(np.uint8)
            codes = np.moveaxis(codes.reshape(np.moveaxis(values, axis, 0).shape), 0, axis)
            encoding = _Encoding.AFFINE_U8
            extra = bytes([axis]) + lo.astype("<f4").tobytes() + scale.astype("<f4").tobytes()
            data = np.ascontiguousarray(codes).tobytes()
        else:
            raise ValueError(f"quantization must be fp32, fp16 or int8, got {quantization!r}")
    else:
        raise ValueError(f"array {name!r} has dtype {arr.dtype}; only float and uint8 arrays are sent")
    head = bytes([len(raw_name)]) + raw_name + bytes([int(encoding), arr.ndim])
    return head + struct.pack(f"<{arr.ndim}I", *arr.shape) + extra + data


def pack_source_state(
    arrays: Mapping[str, np.ndarray],
    *,
    quantization: Quantization = "fp16",
    compression: Compression = "zlib",
    min_elements: int = 4096,
) -> bytes:
    """Named arrays → one payload for ``split_source``.

    Float arrays of at least ``min_elements`` values (the feature volume) are quantised as chosen;
    smaller ones (keypoints, motion) stay float32, where precision moves the face and bytes are
    few. uint8 arrays (an image) are sent as they are. See ``measure_source_error`` for the cost.
    """
    if not 1 <= len(arrays) <= MAX_ARRAYS:
        raise ValueError(f"a source payload holds 1..{MAX_ARRAYS} arrays, got {len(arrays)}")
    if quantization not in ("fp32", "fp16", "int8"):
        raise ValueError(f"quantization must be fp32, fp16 or int8, got {quantization!r}")
    if compression not in ("none", "zlib", "lzma"):
        raise ValueError(f"compression must be none, zlib or lzma, got {compression!r}")
    parts = [struct.pack("<H", len(arrays))]
    for name, arr in arrays.items():
        parts.append(_encode_array(name, np.asarray(arr), quantization, min_elements))
    body = b"".join(parts)
    if len(body) >= SEQ_MODULUS:
        raise ValueError("source payload body exceeds 4 GiB")
    if compression == "zlib":
        codec, packed = _Compression.ZLIB, zlib.compress(body, 6)
    elif compression == "lzma":
        codec, packed = _Compression.LZMA, lzma.compress(body, format=lzma.FORMAT_XZ, preset=6)
    elif compression == "none":
        codec, packed = _Compression.NONE, body
    else:
        raise ValueError(f"compression must be none, zlib or lzma, got {compression!r}")
    return _STATE_HEADER.pack(STATE_MAGIC, STATE_FORMAT_VERSION, int(codec), 0, len(body)) + packed


def _decompress(codec: int, data: bytes, raw_length: int) -> bytes:
    """Decompress at most raw_length + 1 bytes, so a lying length or a bomb is caught, never expanded."""
    try:
        if codec == _Compression.NONE:
            out, done, rest = data, True, b""
        elif codec == _Compression.ZLIB:
            z = zlib.decompressobj()
            out = z.decompress(data, raw_length + 1)
            done, rest = z.eof, z.unused_data + z.unconsumed_tail
        elif codec == _Compression.LZMA:
            x = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=64 * 1024 * 1024)
            out = x.decompress(data, raw_length + 1)
            done, rest = x.eof, x.unused_data
        else:
            raise ProtocolError(f"source payload with unknown compression code {codec}")
    except (zlib.error, lzma.LZMAError) as exc:
        raise ProtocolError(f"source payload does not decompress: {exc}") from None
    if len(out) != raw_length or not done or rest:
        raise ProtocolError(f"source payload decompresses to {len(out)}+ bytes, header says {raw_length}")
    return out


class _Reader:
    """Bounds-checked cursor: every read says what it wanted when the buffer runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise TruncatedMessage(f"source payload ends inside {what} (needs {n} bytes, {len(self.data) - self.pos} left)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]


#: Called with each array's name and declared shape before its data is read; raises ProtocolError to refuse it.
ShapeCheck = Callable[[str, tuple[int, ...]], None]


def _decode_array(reader: _Reader, check: ShapeCheck | None) -> tuple[str, np.ndarray]:
    name_len = reader.u8("an array name length")
    if not 1 <= name_len <= MAX_NAME_BYTES:
        raise ProtocolError(f"array name length {name_len} outside [1, {MAX_NAME_BYTES}]")
    try:
        name = reader.take(name_len, "an array name").decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("array name is not valid UTF-8") from None
    code = reader.u8(f"the encoding of {name!r}")
    if code not in _ITEMSIZE:
        raise ProtocolError(f"array {name!r} with unknown encoding {code}")
    encoding = _Encoding(code)
    ndim = reader.u8(f"the rank of {name!r}")
    if ndim > MAX_NDIM:
        raise ProtocolError(f"array {name!r} of rank {ndim} > {MAX_NDIM}")
    shape = struct.unpack(f"<{ndim}I", reader.take(4 * ndim, f"the shape of {name!r}"))
    if any(d == 0 for d in shape):
        raise ProtocolError(f"array {name!r} with an empty dimension {shape}")
    if check is not None:
        check(name, shape)  # before a byte of its data is touched or a value allocated
    count = math.prod(shape)
    if encoding == _Encoding.AFFINE_U8:
        axis = reader.u8(f"the channel axis of {name!r}")
        if ndim == 0 or axis >= ndim:
            raise ProtocolError(f"array {name!r}: channel axis {axis} invalid for rank {ndim}")
        channels = shape[axis]
        params = reader.take(8 * channels, f"the scales of {name!r}")
        lo = np.frombuffer(params[: 4 * channels], dtype="<f4")
        scale = np.frombuffer(params[4 * channels :], dtype="<f4")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(scale)) and np.all(scale >= 0)):
            raise ProtocolError(f"array {name!r} with non-finite or negative quantisation scales")
    data = reader.take(count * _ITEMSIZE[encoding], f"the data of {name!r}")  # bounded by the buffer
    if encoding == _Encoding.RAW_U8:
        return name, np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()
    if encoding == _Encoding.AFFINE_U8:
        codes = np.frombuffer(data, dtype=np.uint8).reshape(shape).astype(np.float32)
        bshape = [1] * ndim
        bshape[axis] = channels
        values = lo.astype(np.float32).reshape(bshape) + codes * scale.astype(np.float32).reshape(bshape)
    else:
        dtype = "<f4" if encoding == _Encoding.F32 else "<f2"
        values = _unshuffle(data, dtype, _ITEMSIZE[encoding]).astype(np.float32).reshape(shape)
    if not np.all(np.isfinite(values)):
        raise ProtocolError(f"array {name!r} contains NaN or infinity")
    return name, values


def unpack_source_state(payload: bytes, *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
                        check: ShapeCheck | None = None) -> dict[str, np.ndarray]:
    """Inverse of ``pack_source_state``: float arrays come back as float32, uint8 as uint8.

    ``check`` sees every array's name and shape before its data is decoded: a receiver that knows
    what it expects refuses a wrong shape before allocating anything for it.
    """
    if len(payload) < _STATE_HEADER.size:
        raise TruncatedMessage(f"source payload of {len(payload)} bytes is shorter than its header")
    magic, version, codec, reserved, raw_length = _STATE_HEADER.unpack_from(payload)
    if magic != STATE_MAGIC:
        raise ProtocolError(f"bad source payload magic {magic.hex()}, expected {STATE_MAGIC.hex()}")
    if version != STATE_FORMAT_VERSION:
        raise VersionMismatch(version, STATE_FORMAT_VERSION, "source payload format")
    if reserved:
        raise ProtocolError("source payload with non-zero reserved field")
    if raw_length > max_raw_bytes:
        raise OversizedMessage(f"source payload claims {raw_length} decompressed bytes, the limit is {max_raw_bytes}")
    reader = _Reader(_decompress(codec, payload[_STATE_HEADER.size :], raw_length))
    (n_arrays,) = struct.unpack("<H", reader.take(2, "the array count"))
    if not 1 <= n_arrays <= MAX_ARRAYS:
        raise ProtocolError(f"source payload with {n_arrays} arrays, expected 1..{MAX_ARRAYS}")
    arrays: dict[str, np.ndarray] = {}
    for _ in range(n_arrays):
        name, arr = _decode_array(reader, check)
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice")
        arrays[name] = arr
    if reader.pos != len(reader.data):
        raise ProtocolError(f"{len(reader.data) - reader.pos} trailing bytes after the last array")
    return arrays


def measure_source_error(
    arrays: Mapping[str, np.ndarray], quantization: Quantization = "fp16", *, min_elements: int = 4096
) -> dict[str, ArrayError]:
    """Round-trip ``arrays`` through the chosen quantisation and report the error per array."""
    restored = unpack_source_state(
        pack_source_state(arrays, quantization=quantization, compression="none", min_elements=min_elements)
    )
    report: dict[str, ArrayError] = {}
    for name, arr in arrays.items():
        ref = np.asarray(arr, dtype=np.float64)
        diff = np.abs(restored[name].astype(np.float64) - ref)
        peak = float(np.abs(ref).max()) if ref.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        rms = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
        report[name] = ArrayError(max_abs, rms, max_abs / peak if peak > 0 else 0.0)
    return report
