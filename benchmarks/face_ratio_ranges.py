"""Do the MOTION quantiser's face-ratio ranges hold real faces? The tracker's ratios on real clips, per feature:
their spread, the share of frames outside the range (sent clamped), and the error the 6-bit codes add.

Every tracked frame of each clip goes through the MOTION encoder and decoder with its ratios (the motion vector
is zeros: only the ratios are measured here).

    python benchmarks/face_ratio_ranges.py [--clips carphone /work/shared/media/clips/*.mp4] [--max-frames 150]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from adasr import motion_layout
from adasr.demo_media import carphone_clip
from adasr.expression_signal import FEATURE_NAMES, raw_ratios
from clip_faces import track_clip
from realtime.motion_codec import DEFAULT_QUANTIZER, MotionPacket, encode_motion
from realtime.protocol import decode

#: The tracker's crop size does not change the ratios (they are distance ratios); the sender's default.
CROP = 256


def clip_ratios(path: Path, max_frames: int) -> np.ndarray:
    """The raw face ratios [frames with a face, 8] of one clip, as the sender measures them."""
    clip = track_clip(path, CROP, max_frames)
    return np.stack([raw_ratios(lms) for lms in clip.landmarks if lms is not None])


def measure(ratios: np.ndarray) -> dict[str, Any]:
    """Per feature: percentiles, the share outside the quantiser's range, and the round trip's error."""
    zeros = np.zeros(motion_layout.vector_size(15), np.float32)
    decoded = []
    for i, r in enumerate(ratios):
        message = decode(encode_motion(i, 0, zeros, face_ratios=r))
        assert isinstance(message, MotionPacket) and message.face_ratios is not None
        decoded.append(message.face_ratios)
    error = np.abs(np.stack(decoded) - ratios)
    lo, hi = np.array(DEFAULT_QUANTIZER.ratio_ranges).T
    outside = (ratios < lo) | (ratios > hi)
    inside_error = np.where(outside, np.nan, error)
    report = {}
    for f, name in enumerate(FEATURE_NAMES):
        values = ratios[:, f]
        report[name] = {
            "range": [float(lo[f]), float(hi[f])],
            "min": float(values.min()), "p1": float(np.percentile(values, 1)), "p50": float(np.median(values)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max()),
            "outside_share": float(outside[:, f].mean()),
            "error_mean": float(np.nanmean(inside_error[:, f])), "error_max": float(np.nanmax(inside_error[:, f])),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", default=["carphone"], help="clips to track ('carphone': the demo's)")
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    paths, per_clip = [], []
    for clip in args.clips:
        path = carphone_clip() if clip == "carphone" else Path(clip)
        try:
            per_clip.append(clip_ratios(path, args.max_frames))
            paths.append(path)
        except ValueError as exc:  # a clip without a face has no ratios to measure
            print(f"skipped: {exc}")
    ratios = np.concatenate(per_clip)
    report = {"machine": platform.platform(), "clips": [str(p) for p in paths], "frames": int(len(ratios)),
              "features": measure(ratios)}
    print(f"{len(ratios)} tracked frames of {len(paths)} clips")
    print(f"{'feature':<15} {'range':>13} {'p1':>7} {'p50':>7} {'p99':>7} {'min':>7} {'max':>7} {'outside':>8} "
          f"{'err mean':>9} {'err max':>8}")
    for name, f in report["features"].items():
        print(f"{name:<15} {f['range'][0]:>6.2f}–{f['range'][1]:<5.2f} {f['p1']:>7.3f} {f['p50']:>7.3f} "
              f"{f['p99']:>7.3f} {f['min']:>7.3f} {f['max']:>7.3f} {100 * f['outside_share']:>7.2f}% "
              f"{f['error_mean']:>9.4f} {f['error_max']:>8.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
