"""MOTION messages: the per-frame packet, quantised to a few bits per number.

Bytes per frame is a headline figure of the product, so the 51 floats of a K = 15 motion vector
are sent as uniform scalar codes with per-group ranges and bit widths (angles, translation,
expression offsets), bit-packed MSB-first. The quantiser is mid-tread (an odd number of levels):
zero is exact, so δ values hovering around zero do not flicker between ±half a step. That costs
the all-ones code of every field, which a decoder therefore refuses as malformed.

When the sender's tracker measured the face, the packet also carries its 8 mouth, eye and brow ratios
(``adasr.expression_signal.raw_ratios``, flag FACE_RATIOS), which the receiver's expression rig applies to the
portrait: 6 bits each after the motion codes, in the same bit stream.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass

import numpy as np

from adasr import motion_layout
from adasr.expression_signal import NUM_FEATURES
from realtime.errors import ProtocolError, TruncatedMessage
from realtime.messages import Header, MessageType, encode_header, expect_length

logger = logging.getLogger(__name__)

#: Largest number of keypoints a MOTION packet can carry (the count is a u8).
MAX_KEYPOINTS = 255
#: flags (u8) + keypoint count (u8) precede the packed codes.
MOTION_PREFIX_SIZE = 2


class MotionFlags(enum.IntFlag):
    """Per-frame flag bits (payload byte 0). Bits not listed are reserved and must be zero."""

    NONE = 0
    FACE_LOST = 0x01
    """The sender's tracker lost the face: the vector repeats the last good one; the receiver holds
    (or fades) the last frame instead of animating a stale pose. Sent every frame while lost, so it
    survives packet loss and ends by itself when a packet without it arrives."""
    CLAMPED = 0x02
    """At least one number was outside its quantiser range and was clamped (set by the encoder)."""
    FACE_RATIOS = 0x04
    """The face ratios' codes follow the motion's (set by the encoder when it is given ratios)."""


_ALLOWED_FLAGS = int(MotionFlags.FACE_LOST | MotionFlags.CLAMPED | MotionFlags.FACE_RATIOS)

#: Clamp range of each face ratio (``adasr.expression_signal.FEATURE_NAMES`` order: mouth_open, mouth_width,
#: lip_height, smile, right and left eye opening, right and left brow height): the corpus's neutral value with at
#: least 3 spreads (``expression_signal._NEUTRAL``/``_SPREAD``) on either side a face can go; a closed eye
#: measures slightly below zero (its lower lid above the upper's line), which is in range, not clamped.
RATIO_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 0.8), (0.2, 1.0), (0.0, 0.8), (-0.2, 0.2), (-0.1, 0.6), (-0.1, 0.6), (0.0, 0.6), (0.0, 0.6))


@dataclass(frozen=True)
class MotionQuantizer:
    """Ranges and bit widths of the motion quantiser; both peers must use the same one.

    The defaults are part of protocol version 2. Tuning them means a new version, or agreeing
    on the values out of band (a mismatch in bit widths is caught as a payload length error,
    a mismatch in ranges only by wrong motion, so do not do it silently).
    """

    angle_range: tuple[float, float] = (-100.0, 100.0)
    """Clamp range of yaw, pitch and roll in degrees; the model's angles lie in [-99, 96]."""
    angle_bits: int = 11
    """Bits per angle."""
    t_range: tuple[float, float] = (-0.5, 0.5)
    """Clamp range of each translation component (normalised keypoint units)."""
    t_bits: int = 8
    """Bits per translation component."""
    delta_range: tuple[float, float] = (-0.3, 0.3)
    """Clamp range of each expression offset δ (normalised keypoint units)."""
    delta_bits: int = 4
    """Bits per expression offset."""
    ratio_ranges: tuple[tuple[float, float], ...] = RATIO_RANGES
    """Clamp range of each of the ``NUM_FEATURES`` face ratios."""
    ratio_bits: int = 6
    """Bits per face ratio."""

    def __post_init__(self) -> None:
        if len(self.ratio_ranges) != NUM_FEATURES:
            raise ValueError(f"ratio_ranges needs {NUM_FEATURES} (low, high) pairs, got {len(self.ratio_ranges)}")
        ranges = [(name, getattr(self, f"{name}_range")) for name in ("angle", "t", "delta")]
        for name, (lo, hi) in ranges + [(f"ratio_ranges[{i}]", r) for i, r in enumerate(self.ratio_ranges)]:
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be finite with low < high, got {(lo, hi)}")
        for name in ("angle", "t", "delta", "ratio"):
            bits = getattr(self, f"{name}_bits")
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ValueError(f"{name}_bits must be an int in [2, 16], got {bits!r}")

    def step(self, group: str) -> float:
        """Quantisation step of a group ("angle", "t" or "delta"): range / (2^bits − 2)."""
        lo, hi = getattr(self, f"{group}_range")
        return (hi - lo) / ((1 << getattr(self, f"{group}_bits")) - 2)

    def error_bounds(self) -> dict[str, float]:
        """Largest reconstruction error for an in-range value, per group: half a step.

        Values outside the range are clamped first, so their error is the distance to the range
        plus this. (Float32 rounding of the result adds at most ~1e-7 relative.)
        """
        return {group: self.step(group) / 2 for group in ("angle", "t", "delta")}

    def ratio_error_bounds(self) -> np.ndarray:
        """Largest reconstruction error of each in-range face ratio [NUM_FEATURES]: half its step."""
        lo, hi = np.array(self.ratio_ranges, np.float64).T
        return (hi - lo) / ((1 << self.ratio_bits) - 2) / 2

    def payload_bits(self, num_kp: int, ratios: bool = False) -> int:
        """Bits of packed codes for K keypoints, and the face ratios when ``ratios`` (without the 2-byte prefix)."""
        return int(self._layout(num_kp, ratios)[2].sum())

    def payload_size(self, num_kp: int, ratios: bool = False) -> int:
        """Bytes of MOTION payload (after the header) for K keypoints (and the face ratios when ``ratios``)."""
        return MOTION_PREFIX_SIZE + (self.payload_bits(num_kp, ratios) + 7) // 8

    def _layout(self, num_kp: int, ratios: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-number (low, high, bits) arrays in the order of ``adasr.motion_layout``, then the face ratios'."""
        size = motion_layout.vector_size(num_kp) + (NUM_FEATURES if ratios else 0)
        lo, hi, bits = np.empty(size, np.float64), np.empty(size, np.float64), np.empty(size, np.int64)
        for group, (low, high), width in ((motion_layout.ANGLES, self.angle_range, self.angle_bits),
                                          (motion_layout.TRANSLATION, self.t_range, self.t_bits),
                                          (motion_layout.EXPRESSION, self.delta_range, self.delta_bits)):
            lo[group], hi[group], bits[group] = low, high, width
        if ratios:
            tail = slice(size - NUM_FEATURES, size)
            lo[tail], hi[tail] = np.array(self.ratio_ranges, np.float64).T
            bits[tail] = self.ratio_bits
        return lo, hi, bits

    def quantize(self, vector: np.ndarray, face_ratios: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """Float vector [6 + 3K] (+ face ratios [NUM_FEATURES]) → (codes uint32 [6 + 3K (+ NUM_FEATURES)], whether
        anything was clamped)."""
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        num_kp = num_keypoints(vec.size)
        if face_ratios is not None:
            ratios = np.asarray(face_ratios, dtype=np.float64).reshape(-1)
            if ratios.size != NUM_FEATURES:
                raise ValueError(f"face ratios hold {NUM_FEATURES} numbers, got {ratios.size}")
            vec = np.concatenate([vec, ratios])
        if np.any(np.isnan(vec)):
            raise ValueError("motion vector contains NaN (infinities are clamped, NaN has no nearest code)")
        lo, hi, bits = self._layout(num_kp, face_ratios is not None)
        clipped = np.clip(vec, lo, hi)
        levels = (1 << bits) - 2  # highest code used; the all-ones code is reserved
        codes = np.rint((clipped - lo) / (hi - lo) * levels).astype(np.uint32)
        # Compare with the float32 edges: a decoded edge value (float32) re-encodes unflagged.
        lo32, hi32 = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
        return codes, bool(np.any((vec < np.minimum(lo, lo32)) | (vec > np.maximum(hi, hi32))))

    def dequantize(self, codes: np.ndarray, num_kp: int, ratios: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes [6 + 3K (+ NUM_FEATURES)] → (float32 vector [6 + 3K], float32 face ratios or None) (codes must be
        below the all-ones value)."""
        lo, hi, bits = self._layout(num_kp, ratios)
        levels = (1 << bits) - 2
        values = (lo + codes.astype(np.float64) * ((hi - lo) / levels)).astype(np.float32)
        size = motion_layout.vector_size(num_kp)
        return values[:size], (values[size:] if ratios else None)

    def pack(self, codes: np.ndarray, num_kp: int, ratios: bool = False) -> bytes:
        """Codes → bytes, each code MSB-first in its bit width, zero-padded to a byte."""
        _, _, bits = self._layout(num_kp, ratios)
        width = int(bits.max())
        planes = (codes.astype(np.uint32)[:, None] >> np.arange(width - 1, -1, -1, dtype=np.uint32)) & 1
        keep = np.arange(width)[None, :] >= (width - bits)[:, None]
        return np.packbits(planes[keep].astype(np.uint8)).tobytes()

    def unpack(self, data: bytes, num_kp: int, ratios: bool = False) -> np.ndarray:
        """Inverse of ``pack``; refuses non-zero padding and the reserved all-ones code."""
        _, _, bits = self._layout(num_kp, ratios)
        total = int(bits.sum())
        if len(data) != (total + 7) // 8:
            raise ProtocolError(f"packed motion of {len(data)} bytes, expected {(total + 7) // 8}")
        stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        if np.any(stream[total:]):
            raise ProtocolError("non-zero padding bits after the motion codes")
        width = int(bits.max())
        offsets = np.concatenate([[0], np.cumsum(bits)[:-1]])
        column = np.arange(width)[None, :]
        keep = column >= (width - bits)[:, None]
        index = np.where(keep, offsets[:, None] + column - (width - bits)[:, None], 0)
        planes = np.where(keep, stream[index], 0).astype(np.uint32)
        codes = (planes << np.arange(width - 1, -1, -1, dtype=np.uint32)).sum(axis=1).astype(np.uint32)
        if np.any(codes == (1 << bits) - 1):
            bad = int(np.argmax(codes == (1 << bits) - 1))
            raise ProtocolError(f"motion field {bad} holds the reserved all-ones code")
        return codes


#: The quantiser of protocol version 2.
DEFAULT_QUANTIZER = MotionQuantizer()


def num_keypoints(size: int) -> int:
    """K from the length of a motion vector (6 + 3K), refusing lengths that are not of that form or too long."""
    num_kp = motion_layout.keypoint_count(size)
    if num_kp > MAX_KEYPOINTS:
        raise ValueError(f"a motion packet carries at most {MAX_KEYPOINTS} keypoints, got {num_kp}")
    return num_kp


@dataclass(frozen=True, eq=False)
class MotionPacket:
    """A decoded MOTION message."""

    seq: int
    """Sequence number on the motion channel."""
    timestamp_us: int
    """Capture time of the camera frame the motion came from (sender clock, µs)."""
    vector: np.ndarray
    """Dequantised motion, float32 [6 + 3K] in ``Motion.to_vector`` order."""
    flags: MotionFlags
    """Per-frame flags (FACE_LOST, CLAMPED, FACE_RATIOS)."""
    face_ratios: np.ndarray | None = None
    """The sender's face ratios of the frame, float32 [NUM_FEATURES] (``Motion.face_ratios``); None when it sent
    none (no landmarks)."""

    @property
    def face_lost(self) -> bool:
        """True when the sender had no face in this frame."""
        return bool(self.flags & MotionFlags.FACE_LOST)

    @property
    def num_kp(self) -> int:
        """Number of keypoints K."""
        return motion_layout.keypoint_count(self.vector.size)


def encode_motion_message(
    seq: int,
    timestamp_us: int,
    vector: np.ndarray,
    flags: MotionFlags | int = MotionFlags.NONE,
    quantizer: MotionQuantizer = DEFAULT_QUANTIZER,
    face_ratios: np.ndarray | None = None,
) -> tuple[bytes, MotionFlags]:
    """MOTION (header + flags u8 + K u8 + packed codes) and the flags it carries: CLAMPED is added when a
    value was clamped, which a sender counts without reading its own bytes back; FACE_RATIOS when
    ``face_ratios`` (the tracker's, [NUM_FEATURES]) are sent after the motion."""
    flags = int(flags)
    if flags & ~_ALLOWED_FLAGS:
        raise ValueError(f"unknown motion flag bits 0x{flags & ~_ALLOWED_FLAGS:02x}")
    if flags & MotionFlags.FACE_RATIOS and face_ratios is None:
        raise ValueError("the FACE_RATIOS flag needs the face ratios")
    codes, clamped = quantizer.quantize(vector, face_ratios)
    if clamped:
        flags |= int(MotionFlags.CLAMPED)
    ratios = face_ratios is not None
    if ratios:
        flags |= int(MotionFlags.FACE_RATIOS)
    num_kp = num_keypoints(codes.size - (NUM_FEATURES if ratios else 0))
    body = bytes([flags, num_kp]) + quantizer.pack(codes, num_kp, ratios)
    return encode_header(MessageType.MOTION, seq, timestamp_us) + body, MotionFlags(flags)


def encode_motion(
    seq: int,
    timestamp_us: int,
    vector: np.ndarray,
    flags: MotionFlags | int = MotionFlags.NONE,
    quantizer: MotionQuantizer = DEFAULT_QUANTIZER,
    face_ratios: np.ndarray | None = None,
) -> bytes:
    """MOTION as bytes (``encode_motion_message`` without the flags it returns)."""
    return encode_motion_message(seq, timestamp_us, vector, flags, quantizer, face_ratios)[0]


def decode_motion(header: Header, payload: bytes, quantizer: MotionQuantizer = DEFAULT_QUANTIZER) -> MotionPacket:
    """Parse a MOTION payload: flags, K, then exactly the packed codes K (and the FACE_RATIOS flag) call for."""
    if len(payload) < MOTION_PREFIX_SIZE:
        raise TruncatedMessage(f"MOTION payload of {len(payload)} bytes, expected at least {MOTION_PREFIX_SIZE}")
    flags, num_kp = payload[0], payload[1]
    if flags & ~_ALLOWED_FLAGS:
        raise ProtocolError(f"MOTION with reserved flag bits set: 0x{flags:02x}")
    if num_kp == 0:
        raise ProtocolError("MOTION with zero keypoints")
    ratios = bool(flags & MotionFlags.FACE_RATIOS)
    expect_length(payload, quantizer.payload_size(num_kp, ratios), f"MOTION (K={num_kp})")
    codes = quantizer.unpack(payload[MOTION_PREFIX_SIZE:], num_kp, ratios)
    vector, face_ratios = quantizer.dequantize(codes, num_kp, ratios)
    return MotionPacket(header.seq, header.timestamp_us, vector, MotionFlags(flags), face_ratios)
