"""Reading portraits and driving videos, writing mp4s or lossless PNG frame folders.

Every failure a user can cause (missing file, not an image, empty video) is an InputError with
one line saying what is wrong, so the CLI can print it without a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import imageio.v2 as imageio
import numpy as np

from adasr.errors import InputError
from adasr.image_ops import as_rgb_uint8

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def read_image(path: str | Path) -> np.ndarray:
    """An image file → HWC RGB uint8 (grey expanded, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        image = imageio.imread(path)
    except Exception as exc:  # imageio raises many types for unreadable data
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from exc
    if image.ndim not in (2, 3) or image.size == 0:
        raise InputError(f"{path}: not a still image (shape {image.shape})")
    return as_rgb_uint8(image)


@dataclass(frozen=True)
class VideoInfo:
    """What is known of a driving source before reading it."""

    frame_count: int
    """Number of frames (an estimate for some containers)."""
    fps: float
    """Frames per second (25 for an image folder)."""


class FrameSource:
    """A driving video file or a folder of images, iterated as HWC RGB uint8 frames."""

    def __init__(self, path: str | Path, folder_fps: float = 25.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise InputError(f"{self.path}: no images in this folder")
            self.info = VideoInfo(len(self.files), folder_fps)
            return
        if not self.path.is_file():
            raise InputError(f"driving video not found: {self.path}")
        self.files = []
        capture = cv2.VideoCapture(str(self.path))
        try:
            ok, _ = capture.read()
            if not capture.isOpened() or not ok:
                raise InputError(f"{self.path}: not a readable video (no frame could be decoded)")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        finally:
            capture.release()
        self.info = VideoInfo(max(count, 1), float(fps))

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.files:
            for file in self.files:
                yield read_image(file)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


class FrameWriter:
    """Writes RGB uint8 frames to an mp4 (H.264) or to a folder of ``000000.png`` … (lossless)."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.count = 0
        self.is_dir = self.path.suffix.lower() != ".mp4"
        if self.is_dir:
            if self.path.suffix:
                raise InputError(f"output must be a .mp4 file or a folder, got {self.path}")
            self.path.mkdir(parents=True, exist_ok=True)
            self.writer = None
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = imageio.get_writer(self.path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                             ffmpeg_log_level="error")

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            cv2.imwrite(str(self.path / f"{self.count:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        else:
            self.writer.append_data(frame)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
