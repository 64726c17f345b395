"""Which pose to render for each incoming motion: the reference pose, its resets, and a lost face.

In relative mode the first motion after a (new) source, or after a reset, is the *reference*: the
renderer moves the portrait by the difference between each motion and it, so the sender's resting
pose shows as the portrait's own. While the sender's tracker has lost the face (FACE_LOST) a motion
is never a reference; the receiver holds the last frame or eases from the pose on screen to the
neutral pose (the portrait's own) over ``neutral_ease_s``. The sender's face ratios (mouth, eyes, brows) travel
with each motion and are taken relative to the reference's in the same way; the first ratios after a reference
was taken are its ratios.

Plain state, no asyncio and no clock of its own: the caller passes each motion's arrival time.
The call's receiver and the local webcam both decide their poses here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from adasr.inference import SourceState
from realtime.messages import SEQ_MODULUS

logger = logging.getLogger(__name__)

#: What is shown while the sender has lost the face (see ``PoseOptions.face_lost``).
FaceLostPolicy = Literal["hold", "neutral"]


@dataclass(frozen=True)
class PoseOptions:
    """How motions become poses."""

    relative: bool = True
    """Relative motion: the first motion after a (new) source, or after a reset, is the reference pose."""
    face_lost: FaceLostPolicy = "hold"
    """While the sender has lost the face: ``hold`` the last frame, or ease to ``neutral`` (the portrait's own
    pose: the reference pose in relative mode, the source's motion in absolute mode) over ``neutral_ease_s``."""
    neutral_ease_s: float = 0.5
    """Duration of the ease to the neutral pose (0: jump to it)."""

    def __post_init__(self) -> None:
        if self.face_lost not in ("hold", "neutral"):
            raise ValueError(f"face_lost must be 'hold' or 'neutral', got {self.face_lost!r}")
        if self.neutral_ease_s < 0:
            raise ValueError(f"neutral_ease_s must be ≥ 0, got {self.neutral_ease_s}")


@dataclass
class PoseCounters:
    """What the pose state decided."""

    frames_face_lost: int = 0
    """Accepted frames flagged FACE_LOST and not rendered (the last frame holds, or the ease to neutral is done)."""
    frames_eased: int = 0
    """Accepted FACE_LOST frames rendered on the way to the neutral pose (``face_lost="neutral"``)."""
    face_lost: bool = False
    """The sender's face is lost right now."""
    face_lost_events: int = 0
    """Times the sender lost the face."""
    references_set: int = 0
    """Times a reference pose was taken (first motion, and after each reset)."""


@dataclass(frozen=True)
class Pose:
    """What to render: a motion vector and its face ratios, and the reference they are relative to (None:
    absolute)."""

    vector: np.ndarray
    reference: np.ndarray | None
    face_ratios: np.ndarray | None = None
    """The sender's face ratios for this frame (None: it sent none, the portrait's mouth and eyes stay)."""
    reference_ratios: np.ndarray | None = None
    """The reference frame's face ratios (None with no reference or none sent)."""


class PoseState:
    """Motion in (sequence number, vector, FACE_LOST, arrival time), the pose to render out, or None."""

    def __init__(self, options: PoseOptions = PoseOptions(), stats: PoseCounters | None = None) -> None:
        self.options = options
        self.stats = stats if stats is not None else PoseCounters()
        self._source: SourceState | None = None
        self._reference: np.ndarray | None = None
        self._reference_ratios: np.ndarray | None = None
        self._reset_from: int | None = None
        self._last_vector: np.ndarray | None = None  # the last motion rendered: the pose on screen
        self._last_ratios: np.ndarray | None = None  # and its face ratios
        self._lost_since_us = 0
        self._eased = False  # the ease to neutral reached its end for this loss

    def new_source(self, state: SourceState) -> None:
        """A new face: the next motion becomes its reference pose."""
        self._source = state
        self._reference, self._reset_from, self._last_vector = None, None, None
        self._reference_ratios, self._last_ratios = None, None

    def reset_from(self, seq: int) -> None:
        """The first motion numbered ``seq`` or later (serial arithmetic) becomes the new reference pose."""
        self._reset_from = seq

    def step(self, seq: int, vector: np.ndarray, face_lost: bool, now_us: int,
             face_ratios: np.ndarray | None = None) -> Pose | None:
        """The pose to render for this motion (and the sender's face ratios with it), or None when nothing is to be
        rendered (a held frame)."""
        if face_lost:
            return self._face_lost(now_us)  # a lost face is never a reference
        s = self.stats
        if s.face_lost:
            s.face_lost, self._eased = False, False
            logger.info("the sender's face is back (motion %d)", seq)
        if self._reset_from is not None and (seq - self._reset_from) % SEQ_MODULUS < SEQ_MODULUS // 2:
            self._reference, self._reset_from = None, None
        if self._reference is None:
            self._reference, self._reference_ratios = vector, None
            s.references_set += 1
        if self._reference_ratios is None:
            self._reference_ratios = face_ratios
        self._last_vector, self._last_ratios = vector, face_ratios
        return self._pose(vector, face_ratios)

    def _pose(self, vector: np.ndarray, face_ratios: np.ndarray | None) -> Pose:
        if not self.options.relative:
            return Pose(vector, None, face_ratios)
        return Pose(vector, self._reference, face_ratios, self._reference_ratios)

    def _face_lost(self, now_us: int) -> Pose | None:
        """Hold the last frame, or ease from the pose on screen to the neutral pose (``options.face_lost``)."""
        s = self.stats
        neutral = self.options.face_lost == "neutral"
        if not s.face_lost:
            s.face_lost, self._eased = True, False
            s.face_lost_events += 1
            self._lost_since_us = now_us
            logger.info("the sender lost the face: %s",
                        "easing to the neutral pose" if neutral else "holding the last pose")
        target = self._neutral_vector()
        if not neutral or self._eased or self._last_vector is None or target is None:
            s.frames_face_lost += 1
            return None
        ease_us = self.options.neutral_ease_s * 1e6
        alpha = min(1.0, (now_us - self._lost_since_us) / ease_us) if ease_us > 0 else 1.0
        if alpha <= 0.0:  # the first lost frame: nothing moved yet, nothing to render
            s.frames_face_lost += 1
            return None
        self._eased = alpha >= 1.0
        s.frames_eased += 1
        ratios = self._last_ratios
        neutral_ratios = None if ratios is None else self._neutral_ratios()
        if ratios is not None and neutral_ratios is not None:
            ratios = (ratios + (neutral_ratios - ratios) * alpha).astype(np.float32)
        return self._pose((self._last_vector + (target - self._last_vector) * alpha).astype(np.float32), ratios)

    def _neutral_vector(self) -> np.ndarray | None:
        """The motion that renders the portrait's own pose: the reference (relative) or the source's motion."""
        if self.options.relative:
            return self._reference
        return None if self._source is None else self._source.motion.to_vector()

    def _neutral_ratios(self) -> np.ndarray | None:
        """The face ratios that render the portrait's own expression: the reference's (relative) or the source's."""
        if self.options.relative:
            return self._reference_ratios
        return None if self._source is None else self._source.face_ratios
