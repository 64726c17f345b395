"""Strips of frames to look at: the driver above, the rendered face below, where the driver's mouth opens and
closes and where its eyes blink.

The frames are chosen from the driver's own tracker landmarks (the widest mouth opening and the most closed
eyes of the clip, with the frames around them), the portrait is the driver's first face crop (same identity)
or another image (cross identity), and the motion is relative to the driver's first frame, as a call renders.
Two strips are stacked in one PNG: mouth (top pair of rows) and blink (bottom pair); with ``--eyes``, the blink
strip alone, each tile cut to the eyes and shown larger (a lid is a few pixels of a whole-face tile).

    python benchmarks/expression_strip.py --out benchmarks/figures/expression-carphone.png
    python benchmarks/expression_strip.py --portrait astronaut --out benchmarks/figures/expression-astronaut.png
        [--driver VIDEO] [--checkpoint CK] [--frames 8] [--size 128] [--eyes]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from adasr.expression_signal import FEATURE_NAMES, expression_features, neutral_features
from adasr.demo_media import carphone_clip
from adasr.face_cropper import portrait_face
from adasr.video_io import read_image
from adasr_cli.backend_args import add_backend_arguments, backend_from_args
from clip_faces import track_clip
from engines.talking_head import TalkingHead

MOUTH = FEATURE_NAMES.index("mouth_open")
#: The band of a face crop that holds the eyes: rows, then columns, as shares of its side.
EYE_BAND = ((0.28, 0.56), (0.12, 0.88))
EYES = [FEATURE_NAMES.index("right_eye_open"), FEATURE_NAMES.index("left_eye_open")]


def window(series: np.ndarray, centre: int, count: int, half_width: int) -> list[int]:
    """``count`` frame indices evenly spread over ``centre`` ± ``half_width``, inside the clip."""
    lo = max(0, min(centre - half_width, len(series) - 1 - 2 * half_width))
    hi = min(len(series) - 1, lo + 2 * half_width)
    return sorted(set(np.linspace(lo, hi, count).round().astype(int).tolist()))


def tile(image: np.ndarray, size: int, band: tuple[tuple[float, float], tuple[float, float]] | None) -> np.ndarray:
    """A face crop shown ``size`` wide: whole, or only ``band`` of it (rows, columns as shares of its side)."""
    if band is not None:
        side = image.shape[0]
        (top, bottom), (left, right) = band
        image = image[round(top * side):round(bottom * side), round(left * side):round(right * side)]
    height = round(size * image.shape[0] / image.shape[1])
    return cv2.resize(image, (size, height), interpolation=cv2.INTER_AREA if size < image.shape[1] else cv2.INTER_CUBIC)


def strip(head: TalkingHead, crops: list[np.ndarray], landmarks: list[np.ndarray | None], state: object,
          picks: list[int], size: int,
          band: tuple[tuple[float, float], tuple[float, float]] | None = None) -> np.ndarray:
    """Two rows: the driver's crops at ``picks``, and the renders of their motion relative to frame 0 (tiles
    ``size`` wide, of ``band`` of each crop when given)."""
    from adasr.inference import SourceState

    assert isinstance(state, SourceState)
    reference = head.extract_motion(crops[0], landmarks[0])
    top, bottom = [], []
    for i in picks:
        rendered = head.render_image(state, head.extract_motion(crops[i], landmarks[i]), reference)
        top.append(tile(crops[i], size, band))
        bottom.append(tile(rendered, size, band))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", type=Path, default=None, help="driving video (default: carphone)")
    parser.add_argument("--portrait", default=None,
                        help="portrait image, or 'astronaut' (default: the driver's first face crop)")
    parser.add_argument("--frames", type=int, default=8, help="frames per strip")
    parser.add_argument("--size", type=int, default=128, help="side of each tile in pixels")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--eyes", action="store_true", help="only the blink strip, each tile cut to the eyes")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    head = TalkingHead(backend_from_args(args))
    clip = track_clip(args.driver or carphone_clip(), head.size)
    features = np.stack([neutral_features() if lms is None else expression_features(lms) for lms in clip.landmarks])
    if args.portrait is None:
        state = head.prepare_source(clip.crops[0], clip.landmarks[0])
    else:
        if args.portrait == "astronaut":
            from skimage import data

            image = data.astronaut()
        else:
            image = read_image(Path(args.portrait))
        face = portrait_face(image, head.size, True, None, f"the portrait {args.portrait}", "another portrait")
        state = head.prepare_source(face.crop, face.landmarks)
    mouth = window(features[:, MOUTH], int(np.argmax(features[:, MOUTH])), args.frames, 3 * args.frames // 2)
    blink = window(features[:, EYES].mean(1), int(np.argmin(features[:, EYES].mean(1))), args.frames, args.frames // 2)
    if args.eyes:
        rows = [strip(head, clip.crops, clip.landmarks, state, blink, args.size, EYE_BAND)]
    else:
        rows = [strip(head, clip.crops, clip.landmarks, state, picks, args.size) for picks in (mouth, blink)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"{args.out}: mouth frames {mouth}, blink frames {blink} of {clip.path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
