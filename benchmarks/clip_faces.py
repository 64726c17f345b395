"""Shared by the call benchmarks: a real clip's stable face crops, the sender's motion, PSNR.

Self-reenactment: the clip's first face crop is the source portrait and every frame's motion
drives it, so the render can be compared with the real crop of the same frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adasr.expression_signal import raw_ratios
from adasr.face_cropper import FaceCropper
from adasr.faces import CropBox, FaceTrackerConfig, crop_face
from engines.talking_head import TalkingHead
from realtime.capture import VideoReader
from realtime.smoothing import MotionSmoother, SmoothingOptions

#: PSNR reported for identical images (the mean of per-frame PSNRs would be infinite otherwise).
PSNR_CAP_DB = 100.0


@dataclass
class ClipFaces:
    """A clip's frames with the face tracker's stable crop of each."""

    path: Path
    """The clip."""
    fps: float
    """Its frame rate."""
    frames: list[np.ndarray]
    """Full RGB frames."""
    boxes: list[CropBox]
    """Stable crop box per frame (the last one is kept while the face is lost)."""
    crops: list[np.ndarray]
    """S×S crops of the original frames."""
    face_found: list[bool]
    """Whether the tracker found the face in each frame."""
    landmarks: list[np.ndarray | None]
    """The tracker's landmarks in crop pixels (the expression vector's input), None where it lost the face."""


def track_clip(path: Path, size: int, max_frames: int | None = None) -> ClipFaces:
    """Read ``path`` and crop every frame the way the sender does (video-mode tracker, stable box)."""
    reader = VideoReader(path)
    frames: list[np.ndarray] = []
    while max_frames is None or len(frames) < max_frames:
        image = reader.read()
        if image is None:
            break
        frames.append(image)
    reader.close()
    with FaceCropper.for_stream(size, FaceTrackerConfig(fps=reader.fps)) as cropper:
        faces = [cropper.crop(frame, int(index * 1000 / reader.fps)) for index, frame in enumerate(frames)]
    found = [face.face_found for face in faces]
    if not any(found):
        raise ValueError(f"{path}: no face found in any frame")
    return ClipFaces(Path(path), reader.fps, frames, [face.box for face in faces], [face.crop for face in faces],
                     found, [face.landmarks for face in faces])


def scale_clip(clip: ClipFaces, factor: int, size: int) -> ClipFaces:
    """The clip as a camera of ``factor``× the resolution would see it (bicubic), boxes and crops to match."""
    if factor == 1:
        return clip
    frames = [cv2.resize(f, (f.shape[1] * factor, f.shape[0] * factor), interpolation=cv2.INTER_CUBIC)
              for f in clip.frames]
    boxes = [CropBox(b.x0 * factor, b.y0 * factor, b.size * factor) for b in clip.boxes]
    crops = [crop_face(f, b, size) for f, b in zip(frames, boxes)]
    return ClipFaces(clip.path, clip.fps, frames, boxes, crops, clip.face_found, clip.landmarks)  # ratios: unscaled


def sender_motion(head: TalkingHead, clip: ClipFaces,
                  smoothing: SmoothingOptions = SmoothingOptions()) -> list[np.ndarray]:
    """The smoothed motion vector of every crop, as the sender computes it before quantising."""
    smoother = MotionSmoother(smoothing)
    return [smoother(head.extract_motion(crop, lms).to_vector(), i / clip.fps)
            for i, (crop, lms) in enumerate(zip(clip.crops, clip.landmarks))]


def sender_ratios(clip: ClipFaces) -> list[np.ndarray | None]:
    """The face ratios the sender sends with each frame's motion: measured where the tracker found the face, the
    last measured ones while it is lost (None before the first face)."""
    ratios: list[np.ndarray | None] = []
    for lms in clip.landmarks:
        ratios.append(raw_ratios(lms) if lms is not None else (ratios[-1] if ratios else None))
    return ratios


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (capped at PSNR_CAP_DB for identical ones)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0**2 / mse))


def mean_psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean of per-frame PSNRs."""
    return float(np.mean([psnr(a, b) for a, b in pairs]))
