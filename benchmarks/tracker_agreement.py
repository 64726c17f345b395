"""How far the tracker that drives (mediapipe) and the one that measures (dlib's 68 points) agree on real drivers.

`adasr eval`'s mouth and eye correlations compare the driver's openings with the output's, both measured by dlib,
while the expression rig moves the output by mediapipe's ratios. A rig that reproduced mediapipe's signal
perfectly could therefore score no higher than these two trackers agree on the driver itself: this prints that
ceiling per clip (the correlation of mediapipe's mouth and eye ratio with dlib's opening, over the same frames).
Needs the `eval` extra (dlib).

    python benchmarks/tracker_agreement.py --clips CLIPS_DIR [--frames 90]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from adasr.evaluation.expression_tracking import Dlib68, openings
from adasr.expression_signal import FEATURE_NAMES, raw_ratios
from clip_faces import track_clip

MOUTH, EYES = FEATURE_NAMES.index("mouth_open"), [FEATURE_NAMES.index("right_eye_open"),
                                                   FEATURE_NAMES.index("left_eye_open")]


def agreement(path: Path, dlib: Dlib68, frames: int) -> dict[str, float]:
    """Correlations over the clip's frames (after its first) where both trackers find the face."""
    clip = track_clip(path, 256, frames + 1)
    pairs = []
    for crop, landmarks in zip(clip.crops[1:], clip.landmarks[1:]):
        points = dlib(crop) if landmarks is not None else None
        if points is None or len(points) == 0:
            continue
        ratios = raw_ratios(landmarks)
        pairs.append((ratios[MOUTH], ratios[EYES].mean(), *openings(points)))
    table = np.array(pairs, np.float64)
    return {"frames": len(pairs), "mouth": float(np.corrcoef(table[:, 0], table[:, 2])[0, 1]),
            "eye": float(np.corrcoef(table[:, 1], table[:, 3])[0, 1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, required=True, help="folder of driving videos")
    parser.add_argument("--frames", type=int, default=90, help="frames per clip after the first")
    args = parser.parse_args(argv)
    dlib, why = Dlib68.try_create()
    if dlib is None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    rows = {path.stem: agreement(path, dlib, args.frames) for path in sorted(args.clips.glob("*.mp4"))}
    for name, row in rows.items():
        print(f"{name[:24]:24s} frames {row['frames']:3d}  mouth {row['mouth']:.3f}  eye {row['eye']:.3f}")
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("mouth", "eye")}
    print(f"{'MEAN':24s}              mouth {means['mouth']:.3f}  eye {means['eye']:.3f}")
    print(json.dumps({"clips": rows, "mean": means}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
