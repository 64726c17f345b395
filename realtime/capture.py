"""Where the sender's frames come from: a camera, a video file or a folder of images, paced.

A camera paces itself (``read`` blocks until the next frame). A file or a folder would be read
as fast as the disk allows, which is not a call: ``PacedCapture`` releases their frames at the
source's frame rate on the monotonic clock and, like a camera, drops the frames it is too late
for instead of falling behind (``drop_late``). Every frame is stamped with its capture time, the
timestamp the MOTION header carries and the receiver measures latency against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from adasr.errors import InputError
from adasr.video_io import IMAGE_SUFFIXES, read_image
from realtime.clock import monotonic_us

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureOptions:
    """One of camera, video or images, and how to pace it."""

    camera: int | None = None
    """Camera index for ``cv2.VideoCapture``."""
    video: Path | None = None
    """A video file."""
    images: Path | None = None
    """A folder of images, played in name order."""
    fps: float | None = None
    """Frames per second; None: the source's own (camera or video), 25 for a folder."""
    max_frames: int | None = None
    """Stop after this many frames (None: until the source ends)."""
    drop_late: bool = True
    """Files and folders: skip frames whose time has passed, as a camera would (False: play every frame, late)."""
    loop: bool = False
    """Files and folders: start again at the end (a test pattern for long calls)."""

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.camera, self.video, self.images)]
        if sum(given) != 1:
            raise ValueError("choose exactly one capture source: camera, video or images")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass(frozen=True)
class CapturedFrame:
    """One frame as the sender got it."""

    index: int
    """Position in the source (frames skipped for being late leave gaps)."""
    image: np.ndarray
    """HWC RGB uint8."""
    timestamp_us: int
    """Capture time on ``realtime.clock.monotonic_us``."""


class FrameReader(Protocol):
    """A source of RGB frames: ``read`` returns None at the end."""

    fps: float
    """The source's own frame rate."""
    live: bool
    """True for a camera (paces itself), False for files."""

    def read(self) -> np.ndarray | None: ...

    def rewind(self) -> None: ...

    def close(self) -> None: ...


class CameraReader:
    """A camera through OpenCV; frames come at the camera's pace."""

    live = True

    def __init__(self, index: int, fps: float | None = None) -> None:
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise InputError(f"camera {index} cannot be opened (is it connected, and free?)")
        if fps:
            self.capture.set(cv2.CAP_PROP_FPS, fps)
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or fps or 30.0)
        self.index = index

    def read(self) -> np.ndarray | None:
        ok, bgr = self.capture.read()
        if not ok:
            logger.warning("camera %d stopped delivering frames", self.index)
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def rewind(self) -> None:
        """A camera has no beginning to go back to."""

    def close(self) -> None:
        self.capture.release()


class VideoReader:
    """A video file through OpenCV."""

    live = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video not found: {self.path}")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise InputError(f"{self.path}: not a readable video")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 25.0)

    def read(self) -> np.ndarray | None:
        ok, bgr = self.capture.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None

    def rewind(self) -> None:
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self.capture.release()


class ImageFolderReader:
    """The images of a folder in name order."""

    live = False

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"image folder not found: {self.folder}")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"{self.folder}: no images in this folder")
        self.fps = fps
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        self._next += 1
        return read_image(self.files[self._next - 1])

    def rewind(self) -> None:
        self._next = 0

    def close(self) -> None:
        """Nothing is held open."""


def open_reader(options: CaptureOptions) -> FrameReader:
    """The reader for the source ``options`` names (InputError when it cannot be opened)."""
    if options.camera is not None:
        return CameraReader(options.camera, options.fps)
    if options.video is not None:
        return VideoReader(options.video)
    assert options.images is not None
    return ImageFolderReader(options.images, options.fps or 25.0)


class PacedCapture:
    """Iterates a reader's frames at ``fps`` on the monotonic clock (blocking: run it off the event loop)."""

    def __init__(self, reader: FrameReader, options: CaptureOptions) -> None:
        self.reader = reader
        self.options = options
        self.fps = float(options.fps or reader.fps)
        self.frames_read = 0
        """Frames taken from the reader."""
        self.frames_skipped = 0
        """Frames dropped because their time had passed (files and folders with ``drop_late``), or above the
        rate limit."""
        self._stopped = False
        self._min_interval_us = 0.0

    def limit_rate(self, fps: float | None) -> None:
        """Deliver at most ``fps`` frames a second from now on, skipping the others (None: every frame;
        thread-safe). Which frames go is decided on their capture schedule, not on when they are read."""
        self._min_interval_us = 1e6 / fps if fps else 0.0

    def stop(self) -> None:
        """Make the iteration end after the current frame (thread-safe)."""
        self._stopped = True

    def __iter__(self) -> Iterator[CapturedFrame]:
        period_us = 1e6 / self.fps
        start_us: float | None = None
        emitted = 0
        index = -1
        last_due_us: float | None = None
        while not self._stopped:
            if self.options.max_frames is not None and emitted >= self.options.max_frames:
                return
            image = self.reader.read()
            if image is None and self.options.loop and not self.reader.live and self.frames_read:
                self.reader.rewind()
                image = self.reader.read()
            if image is None:
                return
            self.frames_read += 1
            index += 1
            if self.reader.live:
                now = monotonic_us()
                if self._above_rate(last_due_us, now, period_us):
                    continue
                last_due_us = now
                yield CapturedFrame(index, image, now)
                emitted += 1
                continue
            if start_us is None:
                start_us = float(monotonic_us())
            due_us = start_us + index * period_us
            if self._above_rate(last_due_us, due_us, period_us):
                continue
            now = monotonic_us()
            if now > due_us + period_us:
                if self.options.drop_late:
                    self.frames_skipped += 1  # a camera would have overwritten this frame by now
                    continue
                start_us += now - due_us  # late but keeping every frame: re-anchor, never burst to catch up
                due_us = now
            if now < due_us:
                time.sleep((due_us - now) / 1e6)
            last_due_us = due_us
            yield CapturedFrame(index, image, monotonic_us())
            emitted += 1

    def _above_rate(self, last_us: float | None, due_us: float, period_us: float) -> bool:
        """Whether a frame due at ``due_us`` comes too soon after the last one delivered (then it is skipped)."""
        if last_us is None or due_us - last_us >= self._min_interval_us - period_us / 2:
            return False
        self.frames_skipped += 1
        return True

    def close(self) -> None:
        """Release the reader."""
        self.reader.close()
