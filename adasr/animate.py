"""The ``animate`` job: drive one portrait with a video, frame by frame, with the cached pipeline.

With face cropping (the default), the source and every driving frame go through the face
tracker's stable square crop; an mp4 output can then show driving crop and result side by side.
With ``crop=False`` the images are used as given (square face crops, resized if needed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adasr.errors import InputError, NoFaceError
from adasr.face_cropper import BoxOrigin, FaceCropper, portrait_face
from adasr.faces import FaceTrackerConfig
from adasr.inference import Head
from adasr.keypoints import Motion
from adasr.video_io import FrameSource, FrameWriter, read_image

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnimateOptions:
    """What to animate and how."""

    source: Path
    """Portrait image."""
    driving: Path
    """Driving video file or folder of frames."""
    output: Path
    """An .mp4 file or a folder (lossless PNG frames 000000.png, …)."""
    relative: bool = True
    """Relative motion against the first driving frame (the released demo's --relative)."""
    crop: bool = True
    """Face-crop source and driving frames with the tracker."""
    side_by_side: bool = True
    """In an mp4, show the driving crop left of the result (only with cropping)."""
    max_frames: int | None = None
    """Stop after this many driving frames."""
    show_progress: bool = True
    """Show a progress bar."""


@dataclass(frozen=True)
class AnimateSummary:
    """What a run did."""

    frames: int
    """Frames written."""
    seconds: float
    """Wall time of the per-frame loop."""
    output: Path
    """Where the frames went."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def animate(head: Head, options: AnimateOptions,
            tracker_config: FaceTrackerConfig | None = None) -> AnimateSummary:
    """Render every driving frame; raises InputError/NoFaceError on unusable inputs."""
    tracker_config = tracker_config or FaceTrackerConfig()
    size = head.size
    source = portrait_face(read_image(options.source), size, options.crop, tracker_config, "the source image",
                           "--no-crop")
    driving = FrameSource(options.driving)
    state = head.prepare_source(source.crop, source.landmarks)
    side_by_side = options.crop and options.side_by_side and options.output.suffix.lower() == ".mp4"
    total = driving.info.frame_count
    if options.max_frames is not None:
        total = min(options.max_frames, total)
    reference: Motion | None = None
    start = time.perf_counter()
    # Without --crop the tracker still runs: the expression's landmarks.
    with FaceCropper.for_stream(size, tracker_config) as cropper, \
            FrameWriter(options.output, driving.info.fps) as writer, \
            tqdm(total=total, unit="frame", disable=not options.show_progress, desc="animate") as bar:
        for index, frame in enumerate(driving):
            if options.max_frames is not None and index >= options.max_frames:
                break
            face = cropper.crop(frame)  # a lost face keeps the last box
            if options.crop:
                if face.origin is BoxOrigin.CENTRE:
                    raise NoFaceError(f"no face in driving frame {index}; pass --no-crop if the video is already "
                                      "a face crop")
                frame = face.crop
            motion = head.extract_motion(frame, face.landmarks)
            if options.relative and reference is None:
                reference = motion
            result = head.render_image(state, motion, reference if options.relative else None)
            if side_by_side:
                result = np.concatenate([frame, result], axis=1)  # driving crop | result
            writer.write(result)
            bar.update(1)
    if writer.count == 0:
        raise InputError(f"{options.driving}: no frames were read")
    return AnimateSummary(writer.count, time.perf_counter() - start, options.output)
