"""The source payload format: named arrays ↔ bytes, and every check on the way in. No torch, no model.

A source state (feature volume f_s, canonical keypoints, the source's own motion) travels as one
payload of named arrays: ``pack_source_state`` / ``unpack_source_state`` turn named float32 arrays
into bytes and back (fp16 or per-channel 8-bit quantisation, byte-shuffled, then zlib or lzma from
the standard library). Which arrays a model takes, and the SourceState on either side, are
``realtime.source_state_codec``'s.

Two kinds of payload: FEATURE_VOLUME (the default): f_s quantised (fp16 by default) and
compressed, x_c and the source's motion as float32; the receiver renders at once, no encoder run.
SOURCE_IMAGE: the portrait crop as raw uint8 (then compressed): about 10× fewer bytes, but the
receiver runs the source encoder (hundreds of ms on a CPU) before the first frame.

Every shape is hostile until checked: the receiver knows the one shape each array must have
(``source_state_codec.expected_shapes``, from ``ModelConfig.sent_volume_shape``), and hands
``unpack_source_state`` the most decompressed bytes those shapes can take (``max_raw_bytes``) and a
``check`` that refuses an array of any other shape as its header is read, before its data is decoded or
a value allocated. Only then does one test render run, so a payload that passes every check but does
not fit this renderer is still refused with a message instead of failing every frame. The payload's
integrity (SHA-256) and the model identity travel in the transfer's SOURCE_BEGIN
(``realtime.source_messages``).

Compression is stdlib only: a codec that depends on an optional package (zstd) would make two
peers unable to talk depending on what happens to be installed, for a one-off transfer where the
difference is a fraction of a second. zlib is the default (fast, bounded-output decompression);
lzma is selectable for a few percent more at several times the CPU.
"""

from __future__ import annotations

import enum
import logging
import lzma
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from realtime.errors import OversizedMessage, ProtocolError, TruncatedMessage, VersionMismatch
from realtime.messages import SEQ_MODULUS

logger = logging.getLogger(__name__)

#: Default ceiling on the decompressed size of a payload (guards against decompression bombs).
DEFAULT_MAX_RAW_BYTES = 128 * 1024 * 1024

# --------------------------------------------------------------------------------------------
# The payload format: named arrays ↔ bytes
# --------------------------------------------------------------------------------------------

#: First bytes of a source payload.
STATE_MAGIC = b"ASRC"
#: Version of the payload format (independent of the wire version, checked on its own). 2: a payload of either
#: kind may carry the portrait's expression-rig anchors and face ratios (``source_state_codec.RIG_ARRAYS``).
STATE_FORMAT_VERSION = 2
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
            raise TruncatedMessage(f"source payload ends inside {what} "
                                   f"(needs {n} bytes, {len(self.data) - self.pos} left)")
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
