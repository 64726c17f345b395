"""Where each number sits in a flat motion vector, the per-frame message of a call.

The layout is yaw, pitch, roll (degrees), then the translation t (3), then the expression
offsets δ (K·3, row-major): 6 + 3K numbers, 51 for K = 15. This module is its one owner:
``adasr.keypoints.Motion`` converts between it and tensors, and the wire format, the sender's
smoothing and the receiver's shape checks take positions and sizes from here. It imports no
torch, so the wire format can use it without loading torch.
"""

from __future__ import annotations

#: Numbers in front of δ: yaw, pitch, roll, then t.
POSE_SCALARS = 6
#: Where yaw, pitch and roll lie.
ANGLES = slice(0, 3)
#: Where the translation t lies.
TRANSLATION = slice(3, POSE_SCALARS)
#: Where the expression offsets δ lie (K·3 numbers, row-major), up to the end.
EXPRESSION = slice(POSE_SCALARS, None)


def vector_size(num_kp: int) -> int:
    """Length of the motion vector of K keypoints: 6 + 3K."""
    return POSE_SCALARS + 3 * num_kp


def keypoint_count(size: int) -> int:
    """K from the length of a motion vector; ValueError for a length not of the form 6 + 3K (K ≥ 1)."""
    expression = size - POSE_SCALARS
    if expression < 3 or expression % 3:
        raise ValueError(f"a motion vector has 6 + 3K numbers, got {size}")
    return expression // 3
