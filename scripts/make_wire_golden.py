"""Write web/golden/wire-v2.json: byte vectors of the wire protocol, made once by the Python implementation.

Both implementations are tested against the file (tests/test_web_wire.py, web/test/wire.test.js), so
the page's JavaScript and ``realtime`` cannot drift apart. Rerun only for a new protocol version:
    .venv/bin/python scripts/make_wire_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adasr.expression_rig import NUM_ANCHORS
from adasr.expression_signal import NUM_FEATURES
from realtime.messages import CallStats, GoodbyeReason, encode_clock, encode_goodbye, encode_reset_reference, \
    encode_stats
from realtime.motion_codec import DEFAULT_QUANTIZER, MotionFlags, encode_motion
from realtime.source_messages import SourceKind, split_source
from realtime.source_payload import pack_source_state, unpack_source_state

GOLDEN = Path(__file__).resolve().parent.parent / "web" / "golden" / "wire-v2.json"


def motion_vectors() -> dict[str, np.ndarray]:
    """Float32 vectors (K = 15) that reach every quantiser path: in range, zero, clamped, edges, float32 edges."""
    rng = np.random.default_rng(26)
    inside = np.concatenate([rng.uniform(-99, 99, 3), rng.uniform(-0.49, 0.49, 3), rng.uniform(-0.29, 0.29, 45)])
    edges = np.concatenate([[100.0, -100.0, 0.0], [0.5, -0.5, 0.0], np.tile([0.3, -0.3, 0.0], 15)])
    clamped = np.concatenate([[180.0, -250.0, 99.9], [0.7, -3.0, 0.25], np.full(45, -0.31)])
    ties = np.concatenate([[0.0, 100 / 2046, -100 / 2046], [1 / 508, -1 / 508, 0.0],
                           np.tile([0.3 / 14, -0.3 / 14, 0.6 / 14], 15)])
    return {name: v.astype(np.float32) for name, v in
            (("inside", inside), ("edges", edges), ("clamped", clamped), ("ties", ties))}


def face_ratios() -> dict[str, np.ndarray | None]:
    """The face ratios sent with each motion vector: inside their ranges, on their edges, clamped, none."""
    lo, hi = np.array(DEFAULT_QUANTIZER.ratio_ranges, np.float64).T
    inside = np.random.default_rng(27).uniform(lo, hi)
    edges = np.where(np.arange(len(lo)) % 2 == 0, lo, hi)
    clamped = np.where(np.arange(len(lo)) % 2 == 0, lo - 0.5, hi + 0.5)
    return {"inside": inside.astype(np.float32), "edges": edges.astype(np.float32),
            "clamped": clamped.astype(np.float32), "ties": None}


def cases() -> dict[str, object]:
    """Every golden case: the inputs as JSON and the bytes as hex."""
    motion = []
    ratios = face_ratios()
    for (name, vector), (seq, ts, flags) in zip(motion_vectors().items(), (
            (0, 0, MotionFlags.NONE), (0xFFFFFFFF, 2**64 - 1, MotionFlags.FACE_LOST),
            (7, 2**53 + 1, MotionFlags.NONE), (123456, 987654321012, MotionFlags.FACE_LOST))):
        r = ratios[name]
        motion.append({"name": name, "seq": seq, "timestamp_us": str(ts), "flags": int(flags),
                       "vector": [float(x) for x in vector], "face_ratios": None if r is None else r.tolist(),
                       "hex": encode_motion(seq, ts, vector, flags, face_ratios=r).hex()})
    stats = CallStats(frames_captured=301, frames_sent=300, face_lost_frames=4, packets_received=2**32 + 5)
    image = np.arange(16 * 20 * 3, dtype=np.uint32).reshape(16, 20, 3).astype(np.uint8)  # H=16, W=20
    rig = np.random.default_rng(8)
    anchors = rig.uniform(-1, 1, (1, NUM_ANCHORS, 2)).astype(np.float32)
    portrait_ratios = rig.uniform(0, 0.6, NUM_FEATURES).astype(np.float32)
    payload = pack_source_state({"image": image, "anchors": anchors, "face_ratios": portrait_ratios},
                                compression="none")
    model_id = bytes(range(32))
    rng = np.random.default_rng(7)
    arrays = {"f_s": rng.normal(0, 2, (1, 3, 4, 5)).astype(np.float32),
              "x_c": rng.uniform(-1, 1, (1, 15, 3)).astype(np.float32),
              "motion": rng.normal(0, 0.1, 51).astype(np.float32),
              "anchors": rng.uniform(-1, 1, (1, NUM_ANCHORS, 2)).astype(np.float32),
              "face_ratios": rng.uniform(0, 0.6, NUM_FEATURES).astype(np.float32)}
    states = []
    for quantization, compression in (("fp16", "zlib"), ("int8", "none"), ("fp32", "zlib")):
        packed = pack_source_state(arrays, quantization=quantization, compression=compression, min_elements=50)
        states.append({"quantization": quantization, "compression": compression, "payload_hex": packed.hex(),
                       "arrays": {name: {"shape": list(a.shape), "values": [float(x) for x in a.reshape(-1)]}
                                  for name, a in unpack_source_state(packed).items()}})
    return {
        "protocol_version": 2,
        "source_states": states,
        "motion": motion,
        "stats": {"seq": 3, "timestamp_us": "1000000", "counters": {"frames_captured": 301, "frames_sent": 300,
                  "face_lost_frames": 4, "packets_received": 2**32 + 5},
                  "hex": encode_stats(3, 1_000_000, stats).hex()},
        "goodbye": {"seq": 9, "timestamp_us": "42", "reason": int(GoodbyeReason.ERROR), "text": "caméra fermée",
                    "hex": encode_goodbye(9, 42, GoodbyeReason.ERROR, "caméra fermée").hex()},
        "clock": {"seq": 1, "timestamp_us": "5000", "wall_us": "1764806400000000",
                  "hex": encode_clock(1, 5000, 1_764_806_400_000_000).hex()},
        "reset_reference": {"seq": 2, "timestamp_us": "77", "from_motion_seq": 4294967295,
                            "hex": encode_reset_reference(2, 77, 0xFFFFFFFF).hex()},
        "source_image": {
            "height": 16, "width": 20, "rgb_hex": image.tobytes().hex(), "payload_hex": payload.hex(),
            "anchors": anchors.reshape(-1).tolist(), "face_ratios": portrait_ratios.tolist(),
            "model_id_hex": model_id.hex(), "kind": int(SourceKind.SOURCE_IMAGE), "max_message": 256,
            "first_seq": 10, "timestamp_us": "99",
            "messages_hex": [m.hex() for m in split_source(payload, model_id, SourceKind.SOURCE_IMAGE, 256,
                                                           first_seq=10, timestamp_us=99)],
        },
    }


def main() -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(cases(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
