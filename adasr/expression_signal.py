"""The driver's expression as a few numbers: mouth, eye and brow ratios from the tracker's landmarks.

The motion extractor sees a 256² face crop and, trained on a few thousand frames, learned the head's pose
but almost nothing of the mouth and eyes (a still photo's error). The sender's face tracker, however,
already measures them: mediapipe's 478 landmarks place the lips and eyelids to a pixel. These ratios feed
a small network inside the motion extractor (``adasr.head_pose.ExpressionMapper``) that turns them into
keypoint offsets, so the expression reaches the renderer through δ and the wire format is unchanged.

Every feature is a distance ratio measured in the face's own frame (x along the line between the outer
eye corners, y across it), so it does not depend on the crop, the image scale or the head's roll; each is
centred on a typical neutral face and scaled to order one, so an all-zero vector means "neutral" (what a
caller without landmarks passes).
"""

from __future__ import annotations

import numpy as np

#: What each feature measures, in the order of the vector.
FEATURE_NAMES: tuple[str, ...] = (
    "mouth_open",      # inner-lip gap / eye-corner distance
    "mouth_width",     # outer mouth-corner distance / eye-corner distance
    "lip_height",      # outer upper-to-lower lip distance / eye-corner distance (jaw drop, pout)
    "smile",           # mouth corners above the inner-lip centre / eye-corner distance
    "right_eye_open",  # the subject's right eye: lid gap / eye width
    "left_eye_open",
    "right_brow",      # the subject's right brow above its eye centre / eye-corner distance
    "left_brow",
)
NUM_FEATURES = len(FEATURE_NAMES)

#: Where the two halves of the face swap places when an image is mirrored (left ↔ right feature pairs).
MIRROR_ORDER: tuple[int, ...] = (0, 1, 2, 3, 5, 4, 7, 6)

# mediapipe FaceMesh indices.
_EYE_OUTER = (33, 263)                               # the subject's right, left outer eye corners
_INNER_UPPER_LIP, _INNER_LOWER_LIP = (82, 13, 312), (87, 14, 317)
_OUTER_UPPER_LIP, _OUTER_LOWER_LIP = 0, 17
_MOUTH_CORNERS = (61, 291)
_EYES = {  # corners, upper lid, lower lid
    "right": ((33, 133), (159, 158, 160), (145, 144, 153)),
    "left": ((263, 362), (386, 385, 387), (374, 373, 380)),
}
_BROWS = {"right": (52, 65, 105), "left": (282, 295, 334)}

#: Typical value (median) and spread (standard deviation) of each raw ratio over 26 prepared corpus clips
#: (rounded): the
#: features are (ratio − neutral) / spread.
_NEUTRAL = np.array([0.05, 0.60, 0.25, 0.0, 0.28, 0.28, 0.24, 0.24], np.float32)
_SPREAD = np.array([0.07, 0.065, 0.08, 0.03, 0.10, 0.10, 0.06, 0.06], np.float32)


def raw_ratios(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks [..., 478, ≥2] (any pixel scale) → the unscaled ratios [..., NUM_FEATURES] float32."""
    pts = np.asarray(landmarks, np.float64)[..., :2]
    right_corner, left_corner = pts[..., _EYE_OUTER[0], :], pts[..., _EYE_OUTER[1], :]
    axis_x = left_corner - right_corner
    iod = np.linalg.norm(axis_x, axis=-1, keepdims=True).clip(min=1e-6)
    axis_x = axis_x / iod
    axis_y = np.stack([-axis_x[..., 1], axis_x[..., 0]], axis=-1)  # image-down when the head is upright

    def down(i: int | tuple[int, ...]) -> np.ndarray:
        """Mean position of landmarks ``i`` along the face's downward axis, in eye-corner distances."""
        p = pts[..., list(i) if isinstance(i, tuple) else [i], :].mean(axis=-2)
        return (p * axis_y).sum(-1) / iod[..., 0]

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(pts[..., i, :] - pts[..., j, :], axis=-1)

    inner_upper, inner_lower = down(_INNER_UPPER_LIP), down(_INNER_LOWER_LIP)
    features = [
        (inner_lower - inner_upper).clip(min=0.0),
        dist(*_MOUTH_CORNERS) / iod[..., 0],
        down(_OUTER_LOWER_LIP) - down(_OUTER_UPPER_LIP),
        (inner_upper + inner_lower) / 2 - down(_MOUTH_CORNERS),
    ]
    for side in ("right", "left"):
        corners, upper, lower = _EYES[side]
        features.append((down(lower) - down(upper)) / (dist(*corners) / iod[..., 0]).clip(min=1e-6))
    for side in ("right", "left"):
        corners, upper, lower = _EYES[side]
        features.append(down(corners + upper + lower) - down(_BROWS[side]))
    return np.stack(features, axis=-1).astype(np.float32)


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks [..., 478, ≥2] → the motion extractor's expression input [..., NUM_FEATURES] float32."""
    return ((raw_ratios(landmarks) - _NEUTRAL) / _SPREAD).astype(np.float32)


def neutral_features() -> np.ndarray:
    """The input that stands for a face whose expression is unknown (no landmarks): [NUM_FEATURES] zeros."""
    return np.zeros(NUM_FEATURES, np.float32)


def mirrored(features: np.ndarray) -> np.ndarray:
    """Features of the horizontally mirrored face: the subject's left and right swap."""
    return features[..., list(MIRROR_ORDER)]
