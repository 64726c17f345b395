"""Wire protocol: round trips, quantisation bounds, every rejection path, and fuzzing.

The receiver faces bytes from the network, so the property that matters most is that bad
input of any shape ends in a ProtocolError (decode) or a counter (parse_or_count), never in
another exception or an allocation sized by the peer.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adasr.keypoints import Motion
from realtime.errors import (
    ChecksumMismatch,
    ModelMismatch,
    OversizedMessage,
    ProtocolError,
    TruncatedMessage,
    VersionMismatch,
)
from realtime.messages import HEADER_SIZE, MAGIC, PROTOCOL_VERSION, MessageType, encode_header
from realtime.protocol import (
    DEFAULT_MAX_MESSAGE,
    DEFAULT_QUANTIZER,
    CallStats,
    Goodbye,
    GoodbyeReason,
    MotionFlags,
    MotionPacket,
    MotionQuantizer,
    ReceiverCounters,
    ReplayGuard,
    ResetReference,
    SourceAssembler,
    SourceBegin,
    SourceChunk,
    SourceKind,
    StatsMessage,
    Verdict,
    decode,
    encode,
    encode_goodbye,
    encode_motion,
    encode_reset_reference,
    encode_stats,
    measure_source_error,
    model_id_for,
    pack_source_state,
    parse_or_count,
    split_source,
    unpack_source_state,
)
from realtime.source_messages import encode_source_begin, encode_source_chunk
from realtime.source_payload import STATE_FORMAT_VERSION

K = 15
MODEL = model_id_for("lite-256@test")
OTHER_MODEL = model_id_for("official-512@test")
RNG = np.random.default_rng(1234)
#: Float32 storage of the dequantised value adds a relative rounding error of 2⁻²⁴.
F32_SLACK = 1e-5


def random_motion(rng: np.random.Generator, num_kp: int = K, q: MotionQuantizer = DEFAULT_QUANTIZER) -> np.ndarray:
    """A vector with every field uniformly inside its quantiser range."""
    angles = rng.uniform(*q.angle_range, 3)
    t = rng.uniform(*q.t_range, 3)
    delta = rng.uniform(*q.delta_range, 3 * num_kp)
    return np.concatenate([angles, t, delta]).astype(np.float32)


def small_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A miniature SourceState: feature volume, canonical keypoints, source motion."""
    return {
        "f_s": np.maximum(rng.normal(0, 1, (1, 8, 4, 16, 16)), 0).astype(np.float32),
        "kp_canonical": rng.normal(0, 0.3, (1, K, 3)).astype(np.float32),
        "source_motion": random_motion(rng),
    }


def random_ratios(rng: np.random.Generator, q: MotionQuantizer = DEFAULT_QUANTIZER) -> np.ndarray:
    """Face ratios, each uniformly inside its quantiser range."""
    lo, hi = np.array(q.ratio_ranges).T
    return rng.uniform(lo, hi).astype(np.float32)


def sample_messages() -> list[bytes]:
    """One valid message of every type."""
    payload = pack_source_state(small_state(np.random.default_rng(0)))
    source = split_source(payload, MODEL, SourceKind.FEATURE_VOLUME, 1024, first_seq=7, timestamp_us=99)
    return [
        encode_motion(1, 1000, random_motion(np.random.default_rng(0)), MotionFlags.FACE_LOST),
        encode_motion(2, 1001, random_motion(np.random.default_rng(1)),
                      face_ratios=random_ratios(np.random.default_rng(1))),
        source[0],
        source[1],
        source[-1],
        encode_reset_reference(2, 2000, 40),
        encode_goodbye(3, 3000, GoodbyeReason.MODEL_MISMATCH, "modèle différent"),
        encode_stats(4, 4000, CallStats(frames_sent=10, frames_rendered=9, render_latency_us=45_000)),
    ]


# ------------------------------------------------------------------------------------------
# Motion
# ------------------------------------------------------------------------------------------


def test_motion_frame_fits_32_payload_bytes() -> None:
    data = encode_motion(0, 0, random_motion(RNG))
    payload = len(data) - HEADER_SIZE
    assert DEFAULT_QUANTIZER.payload_size(K) == payload
    assert payload <= 32
    assert HEADER_SIZE == 16 and len(data) == 48


def test_motion_with_face_ratios_fits_64_bytes_with_its_header() -> None:
    """The design's budget: a K = 15 motion and the tracker's 8 face ratios in at most 64 bytes, header included."""
    data = encode_motion(0, 0, random_motion(RNG), face_ratios=random_ratios(RNG))
    assert len(data) - HEADER_SIZE == DEFAULT_QUANTIZER.payload_size(K, ratios=True) == 38
    assert len(data) == 54 <= 64


def test_face_ratios_round_trip_within_their_bounds_and_clamp() -> None:
    q = DEFAULT_QUANTIZER
    bounds = q.ratio_error_bounds()
    assert np.all(bounds < 0.11 * np.array([0.07, 0.065, 0.08, 0.03, 0.10, 0.10, 0.06, 0.06]))  # a tenth of a spread
    rng = np.random.default_rng(8)
    worst = np.zeros(len(bounds))
    for _ in range(300):
        vec, ratios = random_motion(rng), random_ratios(rng)
        msg = decode(encode_motion(5, 6, vec, MotionFlags.FACE_LOST, face_ratios=ratios))
        assert isinstance(msg, MotionPacket) and msg.face_lost
        assert msg.flags == MotionFlags.FACE_LOST | MotionFlags.FACE_RATIOS
        assert msg.face_ratios is not None and msg.face_ratios.dtype == np.float32
        assert np.abs(msg.vector - vec)[6:].max() <= q.error_bounds()["delta"] + F32_SLACK  # the motion is intact
        worst = np.maximum(worst, np.abs(msg.face_ratios.astype(np.float64) - ratios))
    assert np.all(worst <= bounds + F32_SLACK) and np.all(worst > 0.8 * bounds)
    neutral = np.array([0.0, 0.6, 0.25, 0.0, 0.3, 0.3, 0.24, 0.24], np.float32)
    closed = decode(encode_motion(0, 0, random_motion(RNG), face_ratios=neutral))
    assert closed.face_ratios is not None and closed.face_ratios[0] == 0.0 and closed.face_ratios[3] == 0.0
    wide = neutral.copy()
    wide[0], wide[3] = 2.0, -1.0  # a mouth opened past the range, a smile below it
    clamped = decode(encode_motion(0, 0, random_motion(RNG), face_ratios=wide))
    assert clamped.flags & MotionFlags.CLAMPED and clamped.face_ratios is not None
    assert clamped.face_ratios[0] == pytest.approx(q.ratio_ranges[0][1])
    assert clamped.face_ratios[3] == pytest.approx(q.ratio_ranges[3][0])
    plain = decode(encode_motion(0, 0, random_motion(RNG)))
    assert plain.face_ratios is None and not plain.flags & MotionFlags.FACE_RATIOS


def test_face_ratios_refused_when_malformed() -> None:
    with pytest.raises(ValueError, match="8 numbers"):
        encode_motion(0, 0, random_motion(RNG), face_ratios=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        encode_motion(0, 0, random_motion(RNG), face_ratios=np.full(8, np.nan, np.float32))
    with pytest.raises(ValueError, match="needs the face ratios"):
        encode_motion(0, 0, random_motion(RNG), MotionFlags.FACE_RATIOS)
    with_ratios = encode_motion(0, 0, random_motion(RNG), face_ratios=random_ratios(RNG))
    without = bytearray(with_ratios)
    without[HEADER_SIZE] &= ~int(MotionFlags.FACE_RATIOS)  # the flag cleared: the ratio codes are trailing bytes
    with pytest.raises(ProtocolError, match="K=15"):
        decode(bytes(without))
    plain = bytearray(encode_motion(0, 0, random_motion(RNG)))
    plain[HEADER_SIZE] |= MotionFlags.FACE_RATIOS  # the flag set on a packet without them: too short
    with pytest.raises(ProtocolError, match="K=15"):
        decode(bytes(plain))
    with pytest.raises(ValueError, match="8 \\(low, high\\) pairs"):
        MotionQuantizer(ratio_ranges=((0.0, 1.0),))
    with pytest.raises(ValueError, match="ratio_ranges\\[2\\]"):
        MotionQuantizer(ratio_ranges=((0.0, 1.0),) * 2 + ((1.0, 0.0),) + ((0.0, 1.0),) * 5)


def test_motion_round_trip_within_stated_bounds() -> None:
    q = DEFAULT_QUANTIZER
    bounds = q.error_bounds()
    assert bounds["angle"] < 0.05 and bounds["t"] < 0.002 and bounds["delta"] < 0.022
    rng = np.random.default_rng(7)
    worst = np.zeros(3)
    for _ in range(400):
        vec = random_motion(rng)
        seq, ts = int(rng.integers(0, 2**32)), int(rng.integers(0, 2**63))
        msg = decode(encode_motion(seq, ts, vec))
        assert isinstance(msg, MotionPacket)
        assert (msg.seq, msg.timestamp_us, msg.flags, msg.num_kp) == (seq, ts, MotionFlags.NONE, K)
        assert msg.vector.dtype == np.float32 and msg.vector.shape == (51,)
        err = np.abs(msg.vector.astype(np.float64) - vec.astype(np.float64))
        worst = np.maximum(worst, [err[:3].max(), err[3:6].max(), err[6:].max()])
    assert worst[0] <= bounds["angle"] + F32_SLACK * 100
    assert worst[1] <= bounds["t"] + F32_SLACK
    assert worst[2] <= bounds["delta"] + F32_SLACK
    # the bound is tight: random values come close to it
    assert worst[2] > 0.9 * bounds["delta"]


def test_motion_from_keypoints_module_round_trips() -> None:
    vec = random_motion(RNG)
    motion = Motion.from_vector(vec)
    back = Motion.from_vector(decode(encode_motion(3, 4, motion.to_vector())).vector)
    assert back.num_kp == K
    assert np.allclose(back.to_vector(), vec, atol=DEFAULT_QUANTIZER.error_bounds()["angle"] + 1e-4)


def test_motion_zero_is_exact_and_edges_are_exact() -> None:
    q = DEFAULT_QUANTIZER
    vec = np.zeros(51, np.float32)
    vec[0], vec[1], vec[3], vec[6] = q.angle_range[0], q.angle_range[1], q.t_range[1], q.delta_range[0]
    out = decode(encode_motion(0, 0, vec)).vector
    assert np.array_equal(out, vec)


def test_motion_clamps_out_of_range_and_flags_it() -> None:
    q = DEFAULT_QUANTIZER
    vec = random_motion(RNG)
    vec[0], vec[4], vec[10], vec[11] = 500.0, -3.0, 9.0, -np.inf
    msg = decode(encode_motion(0, 0, vec, MotionFlags.FACE_LOST))
    assert msg.flags == MotionFlags.FACE_LOST | MotionFlags.CLAMPED and msg.face_lost
    assert msg.vector[0] == pytest.approx(q.angle_range[1])
    assert msg.vector[4] == pytest.approx(q.t_range[0])
    assert msg.vector[10] == pytest.approx(q.delta_range[1])
    assert msg.vector[11] == pytest.approx(q.delta_range[0])
    in_range = decode(encode_motion(0, 0, random_motion(RNG)))
    assert not in_range.flags & MotionFlags.CLAMPED


def test_motion_rejects_bad_vectors_and_flags() -> None:
    vec = random_motion(RNG)
    vec[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encode_motion(0, 0, vec)
    with pytest.raises(ValueError, match="6 \\+ 3K"):
        encode_motion(0, 0, np.zeros(50, np.float32))
    with pytest.raises(ValueError, match="flag"):
        encode_motion(0, 0, random_motion(RNG), 0x80)
    with pytest.raises(ValueError, match="u32"):
        encode_motion(2**32, 0, random_motion(RNG))


@pytest.mark.parametrize("num_kp", [1, 10, 20, 64])
def test_motion_other_keypoint_counts(num_kp: int) -> None:
    vec = random_motion(RNG, num_kp)
    msg = decode(encode_motion(9, 9, vec))
    assert msg.num_kp == num_kp
    assert np.abs(msg.vector - vec)[6:].max() <= DEFAULT_QUANTIZER.error_bounds()["delta"] + F32_SLACK


def test_custom_quantizer_round_trip_and_config_checks() -> None:
    q = MotionQuantizer(angle_bits=12, t_range=(-0.3, 0.3), t_bits=10, delta_range=(-0.2, 0.2), delta_bits=5)
    vec = random_motion(RNG, K, q)
    msg = decode(encode_motion(0, 0, vec, quantizer=q), quantizer=q)
    err = np.abs(msg.vector - vec)
    bounds = q.error_bounds()
    assert err[:3].max() <= bounds["angle"] + F32_SLACK * 100
    assert err[3:6].max() <= bounds["t"] + F32_SLACK
    assert err[6:].max() <= bounds["delta"] + F32_SLACK
    # a receiver with the default quantiser refuses it by length rather than misreading it
    with pytest.raises(ProtocolError):
        decode(encode_motion(0, 0, vec, quantizer=q))
    with pytest.raises(ValueError):
        MotionQuantizer(delta_bits=1)
    with pytest.raises(ValueError):
        MotionQuantizer(t_range=(0.5, -0.5))


# ------------------------------------------------------------------------------------------
# Control messages
# ------------------------------------------------------------------------------------------


def test_control_round_trips() -> None:
    msg = decode(encode_reset_reference(5, 6, 2**32 - 1))
    assert msg == ResetReference(5, 6, 2**32 - 1)
    msg = decode(encode_goodbye(7, 8, GoodbyeReason.TIMEOUT, "no packets for 10 s — bye"))
    assert msg == Goodbye(7, 8, GoodbyeReason.TIMEOUT, "no packets for 10 s — bye")
    assert decode(encode_goodbye(0, 0)) == Goodbye(0, 0, GoodbyeReason.NORMAL, "")
    stats = CallStats(1, 2, 3, 4, 5, 6, 7, 8)
    assert decode(encode_stats(9, 10, stats)) == StatsMessage(9, 10, stats)
    saturated = decode(encode_stats(0, 0, CallStats(frames_sent=2**40)))
    assert saturated.stats.frames_sent == 2**32 - 1
    for message in (ResetReference(1, 2, 3), Goodbye(1, 2, GoodbyeReason.ERROR, "x"), StatsMessage(1, 2, stats)):
        assert decode(encode(message)) == message
    with pytest.raises(ValueError):
        encode_goodbye(0, 0, GoodbyeReason.NORMAL, "x" * 256)
    with pytest.raises(ValueError):
        encode_stats(0, 0, CallStats(frames_sent=-1))


# ------------------------------------------------------------------------------------------
# Source transfer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_message", [256, 1024, DEFAULT_MAX_MESSAGE])
def test_split_and_assemble_in_any_order(max_message: int) -> None:
    payload = random.Random(max_message).randbytes(40_000)
    messages = split_source(payload, MODEL, SourceKind.SOURCE_IMAGE, max_message, first_seq=2**32 - 3, timestamp_us=5)
    assert all(len(m) <= max_message for m in messages)
    decoded = [decode(m, max_message=max_message) for m in messages]
    begin, chunks = decoded[0], decoded[1:]
    assert isinstance(begin, SourceBegin) and begin.total_length == len(payload)
    assert begin.sha256 == hashlib.sha256(payload).digest() and begin.model_id == MODEL
    assert begin.kind == SourceKind.SOURCE_IMAGE and begin.chunk_count == len(chunks)
    assert [m.seq for m in decoded[:4]] == [2**32 - 3, 2**32 - 2, 2**32 - 1, 0]
    random.Random(0).shuffle(chunks)
    assembler = SourceAssembler(MODEL)
    assert assembler.feed(begin) is None
    results = [assembler.feed(c) for c in chunks]
    assert results[-1] == payload and all(r is None for r in results[:-1])
    assert assembler.completed == begin and not assembler.in_progress
    for message in decoded:
        assert decode(encode(message), max_message=max_message) == message


def test_single_chunk_transfer() -> None:
    messages = split_source(b"x", MODEL, SourceKind.FEATURE_VOLUME)
    assert len(messages) == 2
    assembler = SourceAssembler(MODEL)
    assembler.feed(decode(messages[0]))
    assert assembler.feed(decode(messages[1])) == b"x"


def make_transfer(payload: bytes = b"", max_message: int = 256) -> tuple[SourceBegin, list[SourceChunk]]:
    payload = payload or bytes(range(256)) * 8
    messages = split_source(payload, MODEL, SourceKind.FEATURE_VOLUME, max_message)
    decoded = [decode(m, max_message=max_message) for m in messages]
    return decoded[0], decoded[1:]


def test_assembler_refuses_other_model_with_clear_message() -> None:
    begin, _ = make_transfer()
    assembler = SourceAssembler(OTHER_MODEL)
    with pytest.raises(ModelMismatch, match="same checkpoint"):
        assembler.feed(begin)
    assert not assembler.in_progress


def test_assembler_refuses_bad_checksum() -> None:
    begin, chunks = make_transfer()
    forged = SourceBegin(**{**begin.__dict__, "sha256": hashlib.sha256(b"other").digest()})
    assembler = SourceAssembler(MODEL)
    assembler.feed(decode(encode_source_begin(forged)))
    for chunk in chunks[:-1]:
        assert assembler.feed(chunk) is None
    with pytest.raises(ChecksumMismatch):
        assembler.feed(chunks[-1])
    assert not assembler.in_progress and assembler.completed is None
    # a flipped data byte fails the same way
    assembler.feed(begin)
    for chunk in chunks[:-1]:
        assembler.feed(chunk)
    last = chunks[-1]
    flipped = SourceChunk(last.seq, last.timestamp_us, last.transfer_id, last.index, last.count,
                          bytes([last.data[0] ^ 1]) + last.data[1:])
    with pytest.raises(ChecksumMismatch):
        assembler.feed(flipped)


def test_assembler_refuses_oversize_total_before_allocating() -> None:
    claim = 2**32 - 1
    chunk_size = DEFAULT_MAX_MESSAGE - 32
    begin = SourceBegin(0, 0, 1, claim, chunk_size, -(-claim // chunk_size), SourceKind.FEATURE_VOLUME, bytes(32),
                        MODEL)
    assembler = SourceAssembler(MODEL, max_total=1 << 20)
    with pytest.raises(OversizedMessage, match="claims 4294967295 bytes"):
        assembler.feed(decode(encode_source_begin(begin)))
    assert not assembler.in_progress and not assembler._chunks


def test_assembler_refuses_inconsistent_chunks() -> None:
    begin, chunks = make_transfer()
    assembler = SourceAssembler(MODEL)
    first = chunks[0]
    with pytest.raises(ProtocolError, match="before any SOURCE_BEGIN"):
        assembler.feed(first)
    assembler.feed(begin)
    with pytest.raises(ProtocolError, match="current transfer"):
        assembler.feed(SourceChunk(0, 0, begin.transfer_id ^ 1, 0, first.count, first.data))
    with pytest.raises(ProtocolError, match="SOURCE_BEGIN said"):
        assembler.feed(SourceChunk(0, 0, begin.transfer_id, 0, first.count + 1, first.data))
    with pytest.raises(ProtocolError, match="outside"):
        assembler.feed(SourceChunk(0, 0, begin.transfer_id, first.count, first.count, first.data))
    with pytest.raises(ProtocolError, match="expected"):
        assembler.feed(SourceChunk(0, 0, begin.transfer_id, 0, first.count, first.data[:-1]))
    with pytest.raises(ProtocolError, match="expected"):
        assembler.feed(SourceChunk(0, 0, begin.transfer_id, chunks[-1].index, first.count, first.data))
    assembler.feed(first)
    with pytest.raises(ProtocolError, match="duplicate chunk"):
        assembler.feed(first)
    with pytest.raises(ProtocolError, match="not part of a source transfer"):
        assembler.feed(ResetReference(0, 0, 0))  # type: ignore[arg-type]
    # refused chunks left the transfer intact
    result = None
    for chunk in chunks[1:]:
        result = assembler.feed(chunk)
    assert result == bytes(range(256)) * 8
    with pytest.raises(ProtocolError, match="kind"):
        SourceAssembler(MODEL, expected_kind=SourceKind.SOURCE_IMAGE).feed(begin)


def test_source_messages_validate_their_fields() -> None:
    begin, chunks = make_transfer()
    header = encode_header(MessageType.SOURCE_BEGIN, 0, 0)
    raw = encode_source_begin(begin)[HEADER_SIZE:]
    fields = list(struct.unpack("<IIIIB3s32s32s", raw))

    def begin_with(**changes: object) -> bytes:
        names = ["transfer_id", "total", "chunk_size", "count", "kind", "reserved", "sha", "model"]
        values = dict(zip(names, fields)) | changes
        return header + struct.pack("<IIIIB3s32s32s", *values.values())

    assert decode(begin_with(), max_message=256) == begin
    for changes, match in [
        ({"count": fields[3] + 1}, "chunk count"),
        ({"count": 0}, "chunk count"),
        ({"total": 0}, "empty payload"),
        ({"chunk_size": 0}, "chunk size"),
        ({"chunk_size": fields[1] + 1}, "chunk size"),
        ({"kind": 9}, "encoding kind"),
        ({"reserved": b"\0\1\0"}, "reserved"),
    ]:
        with pytest.raises(ProtocolError, match=match):
            decode(begin_with(**changes), max_message=256)
    with pytest.raises(OversizedMessage, match="does not fit"):
        decode(begin_with(chunk_size=fields[2] + 1, count=-(-fields[1] // (fields[2] + 1))), max_message=256)
    chunk = encode_source_chunk(chunks[0])
    head, body = chunk[:HEADER_SIZE], bytearray(chunk[HEADER_SIZE:])
    for offset, value, match in [(4, 99, "index"), (8, 0, "count of zero"), (12, 0, "without data"),
                                 (12, 5000, "SOURCE_CHUNK")]:
        bad = bytearray(body)
        bad[offset : offset + 4] = struct.pack("<I", value)
        with pytest.raises(ProtocolError, match=match):
            decode(head + bytes(bad))
    with pytest.raises(ValueError):
        split_source(b"", MODEL, SourceKind.FEATURE_VOLUME)
    with pytest.raises(ValueError):
        split_source(b"x", b"short", SourceKind.FEATURE_VOLUME)
    with pytest.raises(ValueError):
        split_source(b"x", MODEL, SourceKind.FEATURE_VOLUME, 100)


# ------------------------------------------------------------------------------------------
# SourceState payload
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "zlib", "lzma"])
def test_state_round_trip_fp32_is_exact(compression: str) -> None:
    state = small_state(np.random.default_rng(3))
    state["image"] = np.random.default_rng(4).integers(0, 256, (1, 3, 32, 32), dtype=np.uint8)
    state["scalar"] = np.array(2.5, np.float32)
    out = unpack_source_state(pack_source_state(state, quantization="fp32", compression=compression))  # type: ignore[arg-type]
    assert list(out) == list(state)
    for name, arr in state.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        assert np.array_equal(out[name], arr)


def test_state_quantisation_errors_are_bounded_and_reported() -> None:
    state = small_state(np.random.default_rng(5))
    fs = state["f_s"]
    fp16 = unpack_source_state(pack_source_state(state, quantization="fp16"))
    assert np.abs(fp16["f_s"] - fs).max() <= np.abs(fs).max() * 2**-11
    int8 = unpack_source_state(pack_source_state(state, quantization="int8"))
    channel_range = fs.max(axis=(0, 2, 3, 4)) - fs.min(axis=(0, 2, 3, 4))
    per_channel_err = np.abs(int8["f_s"] - fs).max(axis=(0, 2, 3, 4))
    assert np.all(per_channel_err <= channel_range / 255 / 2 * (1 + 1e-4) + 1e-6)
    for name in ("kp_canonical", "source_motion"):  # small arrays stay float32
        assert np.array_equal(int8[name], state[name]) and np.array_equal(fp16[name], state[name])
    report = measure_source_error(state, "int8")
    assert report["f_s"].max_abs == pytest.approx(float(np.abs(int8["f_s"] - fs).max()), rel=1e-6)
    assert 0 < report["f_s"].rms <= report["f_s"].max_abs and report["kp_canonical"].max_abs == 0
    assert measure_source_error(state, "fp16")["f_s"].max_rel < 1e-3
    sizes = {q: len(pack_source_state(state, quantization=q)) for q in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_state_pack_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pack_source_state({"a": np.array([np.nan], np.float32)})
    with pytest.raises(ValueError, match="dtype"):
        pack_source_state({"a": np.array([1], np.int64)})
    with pytest.raises(ValueError):
        pack_source_state({})
    with pytest.raises(ValueError):
        pack_source_state({"a": np.ones(3, np.float32)}, quantization="int4")  # type: ignore[arg-type]


def state_with_header(body: bytes, *, codec: int = 0, raw_length: int | None = None,
                      version: int = STATE_FORMAT_VERSION) -> bytes:
    length = len(body) if raw_length is None else raw_length
    return struct.pack("<4sBBHI", b"ASRC", version, codec, 0, length) + body


def test_state_unpack_refuses_malformed() -> None:
    good = pack_source_state(small_state(np.random.default_rng(6)), compression="none")
    body = good[12:]
    with pytest.raises(ProtocolError, match="magic"):
        unpack_source_state(b"XXXX" + good[4:])
    with pytest.raises(VersionMismatch, match="source payload format version 3"):
        unpack_source_state(state_with_header(body, version=3))
    # a payload of the format before the rig's arrays (1) is refused with its reason
    with pytest.raises(VersionMismatch, match="peer speaks AdaSR source payload format version 1, this build "
                                              "speaks version 2"):
        unpack_source_state(state_with_header(body, version=1))
    with pytest.raises(OversizedMessage):
        unpack_source_state(state_with_header(b"", raw_length=2**32 - 1))
    with pytest.raises(ProtocolError, match="compression"):
        unpack_source_state(state_with_header(body, codec=7))
    with pytest.raises(ProtocolError):
        unpack_source_state(state_with_header(body + b"\0"))
    with pytest.raises(ProtocolError):
        unpack_source_state(state_with_header(body[:-1]))
    # a decompression bomb: a small claim, a large stream
    bomb = zlib.compress(bytes(10_000_000))
    with pytest.raises(ProtocolError, match="decompresses"):
        unpack_source_state(state_with_header(bomb, codec=1, raw_length=1000))
    with pytest.raises(ProtocolError, match="decompress"):
        unpack_source_state(state_with_header(b"not zlib", codec=1, raw_length=8))
    nan = struct.pack("<HB", 1, 1) + b"a" + bytes([0, 1]) + struct.pack("<I", 1) + np.array([np.nan], "<f4").tobytes()
    with pytest.raises(ProtocolError, match="NaN"):
        unpack_source_state(state_with_header(nan))
    huge = struct.pack("<HB", 1, 1) + b"a" + bytes([0, 8]) + struct.pack("<8I", *[2**32 - 1] * 8)
    with pytest.raises(TruncatedMessage):  # a claimed shape larger than the buffer is refused, not allocated
        unpack_source_state(state_with_header(huge))
    twice = struct.pack("<HB", 2, 1) + b"a" + bytes([3, 1]) + struct.pack("<I", 1) + b"\1"
    twice += bytes([1]) + b"a" + bytes([3, 1]) + struct.pack("<I", 1) + b"\2"
    with pytest.raises(ProtocolError, match="twice"):
        unpack_source_state(state_with_header(twice))


# ------------------------------------------------------------------------------------------
# Header and framing rejections
# ------------------------------------------------------------------------------------------


def test_every_message_round_trips_through_encode() -> None:
    for data in sample_messages():
        msg = decode(data)
        again = encode(msg)
        if isinstance(msg, MotionPacket):
            assert np.array_equal(decode(again).vector, msg.vector)  # the dequantised vector is a fixed point
        assert again == data


def test_wrong_magic_version_and_type() -> None:
    data = sample_messages()[0]
    with pytest.raises(ProtocolError, match="bad magic"):
        decode(b"XY" + data[2:])
    with pytest.raises(VersionMismatch, match="version 3, this build speaks version 2") as info:
        decode(MAGIC + bytes([3]) + data[3:])
    assert info.value.peer_version == 3 and info.value.our_version == PROTOCOL_VERSION
    # a peer of the release before the face ratios (version 1) is refused with the reason, not misread
    with pytest.raises(VersionMismatch, match="peer speaks AdaSR wire protocol version 1, this build speaks "
                                              "version 2: both sides of a call must run releases with the same"):
        decode(MAGIC + bytes([1]) + data[3:])
    with pytest.raises(VersionMismatch):  # refused before the rest of the header is even read
        decode(MAGIC + bytes([0]))
    with pytest.raises(ProtocolError, match="unknown message type 0x7f"):
        decode(data[:3] + bytes([0x7F]) + data[4:])
    with pytest.raises(ProtocolError, match="must be bytes"):
        decode("AS hello")  # type: ignore[arg-type]


def test_truncated_at_every_length_and_trailing_bytes() -> None:
    for data in sample_messages():
        for cut in range(len(data)):
            with pytest.raises(ProtocolError):
                decode(data[:cut])
        with pytest.raises(ProtocolError):
            decode(data + b"\0")


def test_oversized() -> None:
    with pytest.raises(OversizedMessage, match="exceeds the limit"):
        decode(MAGIC + bytes([PROTOCOL_VERSION]) + bytes(DEFAULT_MAX_MESSAGE))
    big = split_source(bytes(5000), MODEL, SourceKind.FEATURE_VOLUME, 4096)[1]
    with pytest.raises(OversizedMessage):
        decode(big, max_message=1024)
    with pytest.raises(ValueError):
        decode(big, max_message=10)


def test_motion_payload_validation() -> None:
    data = bytearray(encode_motion(0, 0, random_motion(RNG)))
    bad = bytearray(data)
    bad[HEADER_SIZE] = 0x80
    with pytest.raises(ProtocolError, match="reserved flag"):
        decode(bytes(bad))
    bad = bytearray(data)
    bad[HEADER_SIZE + 1] = 0
    with pytest.raises(ProtocolError, match="zero keypoints"):
        decode(bytes(bad))
    bad = bytearray(data)
    bad[HEADER_SIZE + 1] = 16
    with pytest.raises(ProtocolError, match="K=16"):
        decode(bytes(bad))
    bad = bytearray(data)
    bad[HEADER_SIZE + 2] = 0xFF  # first angle's top 8 bits...
    bad[HEADER_SIZE + 3] |= 0xE0  # ...and its low 3 bits: the reserved all-ones code
    with pytest.raises(ProtocolError, match="all-ones"):
        decode(bytes(bad))
    bad = bytearray(data)
    bad[-1] |= 0x01  # 237 code bits in 30 bytes: the last 3 bits are padding
    with pytest.raises(ProtocolError, match="padding"):
        decode(bytes(bad))


def test_goodbye_validation() -> None:
    data = bytearray(encode_goodbye(0, 0, GoodbyeReason.NORMAL, "ab"))
    bad = bytearray(data)
    bad[HEADER_SIZE] = 200
    with pytest.raises(ProtocolError, match="reason"):
        decode(bytes(bad))
    bad = bytearray(data)
    bad[-1] = 0xFF
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode(bytes(bad))


# ------------------------------------------------------------------------------------------
# Receiver: replay guard and counters
# ------------------------------------------------------------------------------------------


def test_replay_guard_categories_and_wraparound() -> None:
    guard = ReplayGuard(window=8)
    assert guard.check(2**32 - 2) is Verdict.ACCEPTED
    assert guard.check(2**32 - 1) is Verdict.ACCEPTED
    assert guard.check(1) is Verdict.ACCEPTED  # wrapped; 0 was lost
    assert guard.check(1) is Verdict.DUPLICATE
    assert guard.check(0) is Verdict.OUT_OF_ORDER  # late: older than the newest
    assert guard.check(0) is Verdict.DUPLICATE  # the same late packet again
    assert guard.check(2**32 - 1) is Verdict.DUPLICATE
    assert guard.check(2**32 - 20) is Verdict.REPLAYED  # far behind the window
    assert guard.check(2**31 + 1) is Verdict.REPLAYED  # more than half the space "ahead" reads as behind
    assert guard.check(1000) is Verdict.ACCEPTED  # a burst of loss is fine
    assert guard.check(999) is Verdict.OUT_OF_ORDER
    assert guard.check(1) is Verdict.REPLAYED


def test_parse_or_count_counts_every_category() -> None:
    counters = ReceiverCounters()
    guard = ReplayGuard()
    vec = random_motion(RNG)
    packets = [encode_motion(seq, seq * 33_333, vec) for seq in range(10)]
    accepted = [parse_or_count(p, counters, guard) for p in packets[5:]]
    assert all(isinstance(m, MotionPacket) for m in accepted)
    assert parse_or_count(packets[7], counters, guard) is None  # duplicate
    assert parse_or_count(packets[3], counters, guard) is None  # out of order
    assert parse_or_count(packets[3], counters, guard) is None  # ...and its duplicate
    late = encode_motion(2**32 - 1000, 0, vec)
    assert parse_or_count(late, counters, guard) is None  # replayed
    assert parse_or_count(packets[0][:10], counters, guard) is None  # truncated
    assert parse_or_count(b"garbage!", counters, guard) is None  # bad magic
    assert parse_or_count(MAGIC + bytes([9]) + packets[0][3:], counters, guard) is None  # version
    assert parse_or_count(bytes(DEFAULT_MAX_MESSAGE + 1), counters, guard) is None  # oversized
    assert parse_or_count("text", counters, guard) is None  # a text message on the channel
    assert parse_or_count(None, counters, guard) is None
    assert counters == ReceiverCounters(
        received=15, accepted=5, malformed=4, oversized=1, version_mismatch=1, out_of_order=1, duplicate=2,
        replayed=1, last_error=counters.last_error,
    )
    assert counters.dropped == 10 and counters.as_dict()["accepted"] == 5
    assert "must be bytes" in counters.last_error


# ------------------------------------------------------------------------------------------
# Fuzzing
# ------------------------------------------------------------------------------------------

SAMPLES = sample_messages()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPE_BYTES = [int(t) for t in MessageType] + [0, 0x7F, 0xFF]


def decode_or_protocol_error(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass  # anything else propagates and fails the test
    counters = ReceiverCounters()
    parse_or_count(data, counters, ReplayGuard())
    assert counters.received == 1 and counters.accepted + counters.dropped == 1


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    decode_or_protocol_error(data)


@FUZZ
@given(st.sampled_from(TYPE_BYTES), st.binary(min_size=12, max_size=12), st.binary(max_size=400))
def test_fuzz_random_payload_behind_valid_header(type_byte: int, header_rest: bytes, payload: bytes) -> None:
    decode_or_protocol_error(MAGIC + bytes([PROTOCOL_VERSION, type_byte]) + header_rest + payload)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated_sample())
def test_fuzz_mutated_valid_messages(data: bytes) -> None:
    decode_or_protocol_error(data)


STATE_SAMPLES = [
    pack_source_state(small_state(np.random.default_rng(8)), quantization=q, compression=c)  # type: ignore[arg-type]
    for q, c in [("fp16", "none"), ("int8", "none"), ("int8", "zlib")]
]


@FUZZ
@given(st.sampled_from(STATE_SAMPLES),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_state_payloads(payload: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(payload)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        unpack_source_state(bytes(data))
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.floats(-150, 150, allow_nan=False, width=32), min_size=51, max_size=51), st.integers(0, 3))
def test_fuzz_motion_vectors_stay_within_bounds_after_clamping(values: list[float], flags: int) -> None:
    q = DEFAULT_QUANTIZER
    vec = np.array(values, np.float32)
    msg = decode(encode_motion(0, 0, vec, flags))
    lo, hi, _ = q._layout(K)
    expected = np.clip(vec.astype(np.float64), lo, hi)
    bound = np.array([q.error_bounds()["angle"]] * 3 + [q.error_bounds()["t"]] * 3 + [q.error_bounds()["delta"]] * 45)
    assert np.all(np.abs(msg.vector - expected) <= bound + F32_SLACK * 100)
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)  # the flag ignores float32 rounding of the edges
    outside = (vec < np.minimum(lo, lo32)) | (vec > np.maximum(hi, hi32))
    assert bool(msg.flags & MotionFlags.CLAMPED) == bool(np.any(outside))
