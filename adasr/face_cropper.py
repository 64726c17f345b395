"""The face crop the networks see, cut the same way for every caller: from portraits or from a stream.

The source encoder and the motion extractor expect a square, face-centred crop at the model's
size, like the training data. A :class:`FaceCropper` runs the face tracker (``adasr.faces``) and
cuts that crop, for one of two jobs:

* portraits (``FaceCropper.for_portraits``): each image is tracked on its own (image mode, no
  smoothing); an image without a face gives its centre square, marked ``BoxOrigin.CENTRE``;
* a stream (``FaceCropper.for_stream``: camera, video, clip): frames are tracked in order (video
  mode, the smoothed stable box); a frame where the face is lost keeps the last face's box, so the
  crop holds still instead of jumping; before any face, the frame's centre square.

What a missing face means is the caller's choice: animate and the sender refuse a portrait
without one, eval skips a clip's frames before the first face, the sender flags FACE_LOST.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from dataclasses import dataclass

import numpy as np

from adasr.errors import NoFaceError
from adasr.expression_signal import FEATURE_NAMES, raw_ratios
from adasr.faces import CropBox, FaceTracker, FaceTrackerConfig, crop_face

logger = logging.getLogger(__name__)


class BoxOrigin(enum.Enum):
    """Where a crop's box came from."""

    FACE = "face"
    """The tracker found the face in this image."""
    LAST_FACE = "last face"
    """The stream lost the face in this frame: the last face's box is kept."""
    CENTRE = "centre"
    """No face (in a portrait, or in a stream so far): the image's centre square."""


@dataclass(frozen=True)
class FaceCrop:
    """A square crop at the model's size and the box of the image it was cut from."""

    crop: np.ndarray
    """S×S crop, the image's dtype and channels."""
    box: CropBox
    """The square it was cut from, in image pixels (it may extend outside the image)."""
    origin: BoxOrigin
    """Whether the box is this image's face, a kept one, or the centre square."""
    landmarks: np.ndarray | None = None
    """[478, 3] float32 in crop pixels when the tracker found the face in this image (what the expression vector
    is measured from), else None."""
    pose: tuple[float, float, float] | None = None
    """The tracker's (yaw, pitch, roll) in degrees when it found the face in this image, else None."""

    @property
    def face_found(self) -> bool:
        """True when the tracker found the face in this very image."""
        return self.origin is BoxOrigin.FACE


#: Beyond these head angles (degrees from frontal) a portrait shows too little of the far side of the face for
#: the renderer to turn it towards the camera: the output stays close to a profile.
FRONTAL_YAW_LIMIT = 30.0
FRONTAL_PITCH_LIMIT = 25.0


#: Below this lid gap (over eye width, both eyes' mean) a portrait's eyes are nearly shut: the rig can close an eye
#: but not open one (there is no eyeball to show), so its face cannot blink.
SHUT_EYES_LIMIT = 0.12


def portrait_warnings(face: FaceCrop) -> list[str]:
    """One line each for what keeps a portrait from animating well: a face turned too far from frontal (its pose
    known), eyes nearly shut (its landmarks known); empty when neither."""
    warnings = []
    if face.pose is not None:
        yaw, pitch, _ = face.pose
        if abs(yaw) > FRONTAL_YAW_LIMIT or abs(pitch) > FRONTAL_PITCH_LIMIT:
            warnings.append(
                f"the portrait's face is turned {abs(yaw):.0f}° sideways and {abs(pitch):.0f}° up or down: a face "
                f"that far from frontal (over {FRONTAL_YAW_LIMIT:.0f}° / {FRONTAL_PITCH_LIMIT:.0f}°) cannot be "
                "animated well; a portrait looking at the camera works best")
    if face.landmarks is not None:
        ratios = raw_ratios(face.landmarks)
        eyes = float(ratios[[FEATURE_NAMES.index("right_eye_open"), FEATURE_NAMES.index("left_eye_open")]].mean())
        if eyes < SHUT_EYES_LIMIT:
            warnings.append(f"the portrait's eyes are nearly shut (lids {eyes:.2f} of the eye's width apart, under "
                            f"{SHUT_EYES_LIMIT}): its face cannot open them to blink; a portrait with open eyes "
                            "works best")
    return warnings


def centre_square(image: np.ndarray) -> CropBox:
    """The largest square centred in the image."""
    h, w = image.shape[:2]
    side = min(h, w)
    return CropBox((w - side) // 2, (h - side) // 2, side)


def centre_crop(image: np.ndarray, size: int) -> FaceCrop:
    """The image's centre square at size×size: an image that already is a face crop, or no face seen yet."""
    box = centre_square(image)
    return FaceCrop(crop_face(image, box, size), box, BoxOrigin.CENTRE)


def portrait_face(image: np.ndarray, size: int, crop: bool, tracker_config: FaceTrackerConfig | None, what: str,
                  no_crop_flag: str) -> FaceCrop:
    """A portrait as the source encoder sees it: the tracker's face crop (``crop``), or the image's centre square
    when it already is a face crop; with the landmarks of its expression either way (None when no face is found
    there: the neutral expression), in the returned crop's pixels (the expression rig moves the portrait's own
    lips and lids there). A portrait turned far from frontal, or with its eyes shut, is named in a warning line.

    Raises NoFaceError, naming ``what`` and the ``no_crop_flag`` that skips the crop, when ``crop`` finds no face.
    """
    with FaceCropper.for_portraits(size, tracker_config) as cropper:
        face = cropper.crop(image)
    if crop and not face.face_found:
        raise NoFaceError(f"no face found in {what}; pass a square face crop with {no_crop_flag}")
    for warning in portrait_warnings(face):
        logger.warning("%s", warning)
    if crop:
        return face
    centre = centre_crop(image, size)
    return dataclasses.replace(centre, landmarks=None if face.landmarks is None else moved_landmarks(
        face.landmarks, face.box, centre.box, size))


def moved_landmarks(landmarks: np.ndarray, box: CropBox, to_box: CropBox, size: int) -> np.ndarray:
    """Landmarks [478, ≥2] in the pixels of ``box``'s size×size crop → the same points in ``to_box``'s crop."""
    moved = np.array(landmarks, np.float32, copy=True)
    image_xy = moved[:, :2] * (box.size / size) + np.array([box.x0, box.y0], np.float32)
    moved[:, :2] = (image_xy - np.array([to_box.x0, to_box.y0], np.float32)) * (size / to_box.size)
    return moved


class FaceCropper:
    """Face tracker → square face crop at ``size``, for portraits or for a stream (``config.mode``).

    Prefer the named constructors, which set the mode. Use as a context manager or call
    :meth:`close`: the tracker holds native resources.
    """

    def __init__(self, size: int, config: FaceTrackerConfig | None = None) -> None:
        self.size = size
        self.tracker = FaceTracker(config)
        self._stream = self.tracker.config.mode == "video"
        self._box: CropBox | None = None  # the last face's box (streams only)
        self._last_ms: int | None = None

    @classmethod
    def for_portraits(cls, size: int, config: FaceTrackerConfig | None = None) -> FaceCropper:
        """A cropper for independent stills: each image tracked on its own, nothing kept between them."""
        return cls(size, dataclasses.replace(config or FaceTrackerConfig(), mode="image"))

    @classmethod
    def for_stream(cls, size: int, config: FaceTrackerConfig | None = None) -> FaceCropper:
        """A cropper for the frames of one stream, in order (``config.fps`` paces frames given no timestamp)."""
        return cls(size, dataclasses.replace(config or FaceTrackerConfig(), mode="video"))

    def __enter__(self) -> FaceCropper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the tracker (idempotent)."""
        self.tracker.close()

    def crop(self, image: np.ndarray, timestamp_ms: int | None = None) -> FaceCrop:
        """The face crop of an RGB uint8 image; see ``BoxOrigin`` for where its box came from.

        In a stream, ``timestamp_ms`` is the frame's capture time (None: one frame period after the
        last); a time that does not increase, as capture clocks truncated to milliseconds can give,
        is moved 1 ms past the previous one.
        """
        if self._stream and timestamp_ms is not None:
            if self._last_ms is not None:
                timestamp_ms = max(timestamp_ms, self._last_ms + 1)
            self._last_ms = timestamp_ms
        observation = self.tracker.track(image, timestamp_ms)
        if observation is not None:
            if self._stream:
                self._box = observation.box
            box = observation.box
            landmarks = (observation.landmarks - np.array([box.x0, box.y0, 0], np.float32)) * (self.size / box.size)
            return FaceCrop(crop_face(image, box, self.size), box, BoxOrigin.FACE, landmarks,
                            (observation.yaw, observation.pitch, observation.roll))
        if self._box is not None:
            return FaceCrop(crop_face(image, self._box, self.size), self._box, BoxOrigin.LAST_FACE)
        return centre_crop(image, self.size)
