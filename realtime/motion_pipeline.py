"""The sender's per-frame work: face tracking, stable crop, motion extraction, smoothing.

Blocking and CPU-heavy (mediapipe, the motion extractor): the sender runs it on a worker
thread, one frame at a time, never on the asyncio loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from adasr import motion_layout
from adasr.face_cropper import FaceCropper
from adasr.faces import FaceTrackerConfig
from adasr.image_ops import resize_square
from engines.talking_head import TalkingHead
from realtime.capture import CapturedFrame
from realtime.motion_codec import MotionFlags
from realtime.smoothing import MotionSmoother, SmoothingOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionSample:
    """The motion of one captured frame, ready to quantise."""

    vector: np.ndarray
    """Smoothed float32 motion in ``Motion.to_vector`` order (the last good one when the face is lost)."""
    flags: MotionFlags
    """FACE_LOST when the tracker found no face in this frame."""
    face_ratios: np.ndarray | None
    """The tracker's mouth, eye and brow ratios (``Motion.face_ratios``, unsmoothed: mouth motion is fast and the
    quantiser's step is coarser than the tracker's jitter); the last measured ones while the face is lost; None
    before any face or without landmarks."""
    crop: np.ndarray
    """The S×S driving crop the extractor saw (the last box is kept while the face is lost)."""
    track_ms: float
    """Time spent in the face tracker."""
    extract_ms: float
    """Time spent in the motion extractor."""


class MotionPipeline:
    """Frame → MotionSample. With ``tracker_config=None`` frames are taken as square face crops."""

    def __init__(self, head: TalkingHead, smoothing: SmoothingOptions = SmoothingOptions(),
                 tracker_config: FaceTrackerConfig | None = None, crop: bool = True) -> None:
        self.head = head
        self.smoother = MotionSmoother(smoothing)
        self.cropper = FaceCropper.for_stream(head.size, tracker_config) if crop else None
        self._last: np.ndarray | None = None
        self._last_ratios: np.ndarray | None = None
        self._lost = False

    def process(self, frame: CapturedFrame) -> MotionSample:
        """Track, crop, extract and smooth one frame."""
        t0 = time.perf_counter()
        found, landmarks = True, None
        if self.cropper is not None:  # before any face: the centre square, only to have something to show
            face = self.cropper.crop(frame.image, frame.timestamp_us // 1000)
            crop, found, landmarks = face.crop, face.face_found, face.landmarks
        else:
            crop = resize_square(frame.image, self.head.size)
        t1 = time.perf_counter()
        if not found:
            if not self._lost:
                logger.info("face lost at frame %d: sending FACE_LOST until it is back", frame.index)
            self._lost = True
            self.smoother.reset()  # start afresh when the face returns, do not glide from a stale pose
            vector = self._last if self._last is not None else self._neutral()
            return MotionSample(vector, MotionFlags.FACE_LOST, self._last_ratios, crop, (t1 - t0) * 1e3, 0.0)
        if self._lost:
            logger.info("face found again at frame %d", frame.index)
            self._lost = False
        motion = self.head.extract_motion(crop, landmarks)
        t2 = time.perf_counter()
        vector = self.smoother(motion.to_vector(), frame.timestamp_us / 1e6)
        self._last, self._last_ratios = vector, motion.face_ratios
        return MotionSample(vector, MotionFlags.NONE, motion.face_ratios, crop, (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def _neutral(self) -> np.ndarray:
        """All-zero motion, sent (flagged FACE_LOST) before any face was seen."""
        return np.zeros(motion_layout.vector_size(self.head.backend.config.num_kp), dtype=np.float32)

    def close(self) -> None:
        """Release the face tracker."""
        if self.cropper is not None:
            self.cropper.close()
