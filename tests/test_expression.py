"""The expression path: tracker landmarks → expression vector → keypoint offsets in δ, through every backend,
the training pairs that carry it, and the evaluation's mouth and eye measures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from adasr.config import load_model_config
from adasr.evaluation.expression_tracking import OpeningTrack, expression_measures
from adasr.expression_signal import FEATURE_NAMES, NUM_FEATURES, expression_features, mirrored
from adasr.face_cropper import FaceCropper
from adasr.faces import FaceTrackerConfig
from adasr.head_pose import HEEstimator
from adasr.training.data import PairDataset

MOUTH = FEATURE_NAMES.index("mouth_open")


@pytest.fixture(scope="module")
def face_model() -> None:
    if not FaceTrackerConfig().resolved_model_path().is_file():
        pytest.skip("face model missing (make models/face_landmarker.task)")


@pytest.fixture(scope="module")
def astronaut_landmarks(face_model: None) -> np.ndarray:
    from skimage import data

    with FaceCropper.for_portraits(256) as cropper:
        face = cropper.crop(data.astronaut())
    assert face.landmarks is not None
    return face.landmarks


def test_features_do_not_depend_on_where_the_face_is_or_how_big_or_tilted(astronaut_landmarks: np.ndarray) -> None:
    features = expression_features(astronaut_landmarks)
    assert features.shape == (NUM_FEATURES,) and np.isfinite(features).all()
    assert np.abs(features).max() < 4  # the astronaut is a face like the corpus's: within four spreads of typical
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = astronaut_landmarks.copy()
    moved[:, :2] = astronaut_landmarks[:, :2] @ rotation.T * 1.7 + np.array([40.0, -13.0])
    np.testing.assert_allclose(expression_features(moved), features, atol=1e-3)


def test_a_flipped_training_pair_swaps_its_left_and_right_features(prepared: Path) -> None:
    """mediapipe names the eyes by where they appear: in a mirrored crop the subject's right eye is the one
    that was the left, so the flip augmentation swaps the left and right features with the image."""
    from adasr.training.data import AugmentConfig

    plain = PairDataset(prepared, ["carphone"], seed=3)
    flipped = PairDataset(prepared, ["carphone"], seed=3,
                          augment=AugmentConfig(flip=True, brightness=0, contrast=0, saturation=0))
    seen = set()
    for i in range(12):
        a, b = plain[i], flipped[i]
        was_flipped = torch.equal(b["source"], a["source"].flip(-1)) and not torch.equal(a["source"], b["source"])
        seen.add(was_flipped)
        for key in ("source_expression", "driving_expression"):
            expected = mirrored(a[key].numpy()) if was_flipped else a[key].numpy()
            np.testing.assert_array_equal(b[key].numpy(), expected)
    assert seen == {True, False}


def test_the_mouth_feature_follows_carphone_talking(face_model: None) -> None:
    """A real talking clip opens its mouth wide (carphone, frames 40–120): the mouth feature swings by several
    corpus spreads over the clip, more than in its quiet first second."""
    from adasr.demo_media import carphone_clip
    from adasr.video_io import FrameSource

    with FaceCropper.for_stream(128) as cropper:
        crops = [cropper.crop(frame) for frame in FrameSource(carphone_clip())]
    features = np.stack([expression_features(c.landmarks) for c in crops if c.landmarks is not None])
    assert len(features) >= 110
    assert np.ptp(features[:, MOUTH]) > 3.0 > np.ptp(features[:30, MOUTH])


def test_the_mapper_starts_at_zero_and_insists_on_its_input() -> None:
    config = load_model_config("lite").he_estimator
    assert config.expression_inputs == NUM_FEATURES
    torch.manual_seed(0)
    estimator = HEEstimator(config, num_kp=15).eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = estimator(image, torch.randn(2, NUM_FEATURES))
        neutral = estimator(image, torch.zeros(2, NUM_FEATURES))
    torch.testing.assert_close(out.exp, neutral.exp)  # zero-initialised last layer: no effect yet
    with pytest.raises(ValueError, match="expression vector"):
        estimator(image)


def _mapper_moved(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with its expression mapper's last layer set to a fixed random draw (as training moves it)."""
    from adasr.checkpoint import load_model, save_checkpoint

    model = load_model(checkpoint)
    mapper = model.networks.he_estimator.expression_mapper
    assert mapper is not None
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mapper.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return save_checkpoint(out, model.networks)


@pytest.fixture(scope="module")
def expressive_checkpoint(fast_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mapper_moved(fast_checkpoint, tmp_path_factory.mktemp("expr") / "expressive.pth")


def test_the_expression_moves_the_keypoints_the_same_in_torch_and_onnx_runtime(
        expressive_checkpoint: Path, astronaut_face: np.ndarray, astronaut_landmarks: np.ndarray,
        tmp_path: Path) -> None:
    """The motion graph takes the expression as a second input; ONNX Runtime agrees with PyTorch on it, and an
    open mouth moves δ where a closed one does not."""
    from adasr.checkpoint import load_model
    from engines.onnxruntime_backend import OnnxRuntimeBackend
    from engines.talking_head import TalkingHead
    from engines.torch_backend import TorchBackend
    from export.onnx_export import export_model

    model = load_model(expressive_checkpoint)
    report = export_model(model, tmp_path / "onnx")
    names = [t.name for t in report.graphs["motion_extractor"].inputs]
    assert names == ["image", "expression"]
    torch_head = TalkingHead(TorchBackend(model))
    ort_head = TalkingHead(OnnxRuntimeBackend(tmp_path / "onnx", threads=2))
    open_mouth = astronaut_landmarks.copy()
    open_mouth[[87, 14, 317, 17], 1] += 12.0  # the lower lip drops by 12 px at 256 px
    crop = astronaut_face
    for head in (torch_head, ort_head):
        closed = head.extract_motion(crop, astronaut_landmarks).delta
        opened = head.extract_motion(crop, open_mouth).delta
        assert float((opened - closed).abs().max()) > 1e-3
    torch.testing.assert_close(ort_head.extract_motion(crop, open_mouth).delta,
                               torch_head.extract_motion(crop, open_mouth).delta, atol=1e-4, rtol=1e-4)
    # without landmarks the neutral vector: in relative motion a constant expression moves nothing
    torch.testing.assert_close(torch_head.extract_motion(crop).delta,
                               torch_head.extract_motion(crop, None).delta)


def test_expression_pairs_pick_the_frame_whose_mouth_and_eyes_differ_most(prepared: Path) -> None:
    plain = PairDataset(prepared, ["carphone"], seed=5)
    chosen = PairDataset(prepared, ["carphone"], seed=5, expression_fraction=1.0, expression_candidates=8)
    features = chosen.expressions[0]
    gaps_plain, gaps_chosen = [], []
    for i in range(40):
        _, s, d, _ = plain.pair_indices(i)
        gaps_plain.append(np.linalg.norm(features[d] - features[s]))
        _, s, d, _ = chosen.pair_indices(i)
        gaps_chosen.append(np.linalg.norm(features[d] - features[s]))
    assert np.mean(gaps_chosen) > 1.3 * np.mean(gaps_plain)
    item = chosen[0]
    _, s, d, _ = chosen.pair_indices(0)
    np.testing.assert_allclose(item["driving_expression"].numpy(), features[d])
    np.testing.assert_allclose(item["source_expression"].numpy(), features[s])


def test_a_still_photo_scores_zero_correlation_and_the_drivers_own_change() -> None:
    t = np.linspace(0, 4 * np.pi, 60)
    driver = OpeningTrack([(0.1 + 0.05 * np.sin(x), 0.3 + 0.1 * np.cos(x)) for x in t])
    follows = OpeningTrack([(0.2 + 0.03 * np.sin(x), 0.25 + 0.05 * np.cos(x)) for x in t])
    still = OpeningTrack([(0.2, 0.25)] * len(t))
    good, photo = expression_measures(driver, follows), expression_measures(driver, still)
    assert good["mouth_corr"] == pytest.approx(1.0) and good["eye_corr"] == pytest.approx(1.0)
    assert photo["mouth_corr"] == 0.0 and photo["eye_corr"] == 0.0
    drive = driver.array()[:, 0]
    assert photo["mouth_change_error"] == pytest.approx(np.abs(drive - drive[0]).mean())
    assert good["mouth_change_error"] < photo["mouth_change_error"]
    quiet = OpeningTrack([(0.1, 0.3)] * len(t))  # a driver that never moves: nothing to correlate with
    assert expression_measures(quiet, follows)["mouth_corr"] is None


def test_a_driver_whose_eyes_only_jitter_has_no_eye_correlation_but_a_blink_counts() -> None:
    """dlib's landmarks jitter by ~0.015 of an eye's opening from frame to frame: a driver who never blinks leaves
    jitter correlated with jitter (about zero for a perfect model), so it is left out; one blink in 90 frames of
    the same jitter is motion, and an output that follows it correlates."""
    rng = np.random.default_rng(0)
    frames = 90
    talking = 0.1 + 0.05 * np.sin(np.linspace(0, 6 * np.pi, frames))
    eyes = 0.3 + rng.normal(0, 0.015, frames)
    blink = eyes.copy()
    blink[40:46] -= np.array([0.1, 0.2, 0.28, 0.28, 0.2, 0.1])
    follows = OpeningTrack(list(zip(talking, blink + rng.normal(0, 0.015, frames))))
    steady = expression_measures(OpeningTrack(list(zip(talking, eyes))), follows)
    assert steady["eye_corr"] is None and steady["mouth_corr"] == pytest.approx(1.0, abs=0.05)
    blinking = expression_measures(OpeningTrack(list(zip(talking, blink))), follows)
    assert blinking["eye_corr"] is not None and blinking["eye_corr"] > 0.8


def test_the_lite_preset_without_expression_still_loads(tmp_path: Path) -> None:
    """Weights trained before the mapper (expression_inputs 0) keep loading and running as they were."""
    config = dataclasses.replace(load_model_config("lite"), image_size=64)
    config.he_estimator = dataclasses.replace(config.he_estimator, expression_inputs=0)
    estimator = HEEstimator(config.he_estimator, config.num_kp)
    assert estimator.expression_mapper is None
    assert estimator(torch.rand(1, 3, 64, 64)).exp.shape == (1, 45)


def test_a_portrait_turned_far_from_frontal_or_with_shut_eyes_is_named_in_one_line(
        face_model: None, caplog: pytest.LogCaptureFixture) -> None:
    from skimage import data

    from adasr.face_cropper import portrait_face, portrait_warnings

    image = data.astronaut()
    face = portrait_face(image, 128, True, None, "the astronaut", "--no-crop")
    assert face.pose is not None and face.landmarks is not None
    assert portrait_warnings(face) == []  # she looks at the camera, eyes open
    turned = dataclasses.replace(face, pose=(-62.0, 4.0, 1.0))
    (warning,) = portrait_warnings(turned)
    assert "62°" in warning and "\n" not in warning
    shut = face.landmarks.copy()
    for upper, lower in ((159, 145), (158, 144), (160, 153), (386, 374), (385, 373), (387, 380)):
        shut[[upper, lower], :2] = (shut[upper, :2] + shut[lower, :2]) / 2  # the lids meet
    (warning,) = portrait_warnings(dataclasses.replace(face, landmarks=shut))
    assert "eyes are nearly shut" in warning and "\n" not in warning
    uncropped = portrait_face(image[:200, 100:300], 128, False, None, "a crop", "--no-crop")
    assert uncropped.landmarks is not None and uncropped.crop.shape == (128, 128, 3)  # centre square, landmarks kept


def test_keypoints_that_move_as_the_landmarks_do_cost_nothing_and_those_off_the_face_are_left_alone(
        astronaut_landmarks: np.ndarray) -> None:
    from adasr.training.losses import landmark_flow_loss

    lms = torch.from_numpy(astronaut_landmarks[None, :, :2] * (2 / 255) - 1)  # the astronaut's face, normalised
    jaw = torch.zeros_like(lms)
    jaw[:, [14, 17, 87, 317], 1] = 0.08  # the lower lip drops
    driving = lms + jaw + torch.tensor([0.02, -0.01])  # ... while the head shifts a little
    on_face = lms[:, [14, 1, 33]]  # keypoints at the lower lip, the nose tip and an eye corner
    off_face = torch.tensor([[[0.95, -0.95]]])  # the crop's corner: no landmark near
    kp_s = torch.cat([torch.cat([on_face, off_face], 1), torch.zeros(1, 4, 1)], -1)
    followed = kp_s.clone()
    followed[:, :3, :2] = driving[:, [14, 1, 33]]
    followed[:, 3, :2] += 0.5  # off the face: anything goes
    assert float(landmark_flow_loss(kp_s, followed, lms, driving, 0.05)) < 0.02
    still = float(landmark_flow_loss(kp_s, kp_s, lms, driving, 0.05))
    assert still > 0.025  # every face keypoint should have shifted by 0.03 (the lip by more)
