"""Where a face's expression lives: mouth and eye boxes from the tracker's landmarks, as a pixel map.

A renderer that copies the source photo is right almost everywhere and wrong exactly there (a blink, an
open mouth), a few per cent of the pixels, so a loss averaged over the whole frame barely sees it. The
map lets a loss average over these regions alone (``LossWeights.expression_regions``).
"""

from __future__ import annotations

import numpy as np

from adasr.evaluation.metrics import inter_ocular

#: mediapipe FaceMesh indices: outer lip corners, upper and lower lip (outer and inner), eye corners and lids.
FACE_PARTS: dict[str, tuple[int, ...]] = {
    "mouth": (61, 291, 0, 17, 13, 14, 78, 308),
    "right_eye": (33, 133, 159, 145),
    "left_eye": (263, 362, 386, 374),
}
#: Margin around each part's landmark box, as a fraction of the inter-ocular distance.
MARGIN = 0.15


def expression_region_map(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Landmarks [478, ≥2] in crop pixels → [size, size] float32, 1 inside the padded mouth and eye boxes."""
    out = np.zeros((size, size), np.float32)
    pad = max(MARGIN * inter_ocular(landmarks), 2.0)
    for indices in FACE_PARTS.values():
        points = landmarks[list(indices), :2]
        x0, y0 = np.floor(points.min(axis=0) - pad).astype(int)
        x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int)
        out[max(y0, 0):max(min(y1, size), 0), max(x0, 0):max(min(x1, size), 0)] = 1.0
    return out


def pair_region_map(source_landmarks: np.ndarray, driving_landmarks: np.ndarray, size: int) -> np.ndarray:
    """[1, size, size] float32: 1 on the mouth and eyes of either frame of a pair (where the expression changes)."""
    either = np.maximum(expression_region_map(source_landmarks, size), expression_region_map(driving_landmarks, size))
    return either[None]
