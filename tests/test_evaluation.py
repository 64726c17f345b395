"""Evaluation: the metrics on real faces, and ``adasr eval`` end to end on a short real clip."""

from __future__ import annotations

import importlib

import json
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from adasr_cli.main import main
from adasr.errors import InputError
from adasr.evaluation.metrics import (
    PSNR_CAP_DB,
    FrechetInception,
    IdentityEmbedder,
    LandmarkDetector,
    SFACE_SAME_PERSON_DISTANCE,
    FaceIdentityEmbedder,
    aed,
    akd,
    detail,
    expression_error,
    frechet_distance,
    frechet_distance_from_features,
    inter_ocular,
    motion_akd,
    pose_error,
    psnr,
    ssim,
)

from .conftest import TINY_CHECKPOINT, TINY_CONFIG

TINY = ["--checkpoint", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG), "--threads", "2"]


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face with a margin, 256×256 (the lite model's crop size)."""
    from skimage import data

    return cv2.resize(data.astronaut()[0:220, 120:340], (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def detector() -> LandmarkDetector:
    with LandmarkDetector() as d:
        yield d  # type: ignore[misc]


def test_psnr_and_ssim_of_identical_images(face: np.ndarray) -> None:
    assert psnr(face, face.copy()) == PSNR_CAP_DB
    assert ssim(face, face.copy()) == pytest.approx(1.0)


def test_blur_lowers_psnr_and_ssim_monotonically(face: np.ndarray) -> None:
    light = cv2.GaussianBlur(face, (0, 0), 1.0)
    heavy = cv2.GaussianBlur(face, (0, 0), 3.0)
    assert PSNR_CAP_DB > psnr(light, face) > psnr(heavy, face) > 15.0
    assert 1.0 > ssim(light, face) > ssim(heavy, face) > 0.0


def test_detail_is_one_for_the_truth_below_for_blur_above_for_sharpening(face: np.ndarray) -> None:
    assert detail(face, face.copy()) == pytest.approx(1.0)
    light = cv2.GaussianBlur(face, (0, 0), 1.0)
    heavy = cv2.GaussianBlur(face, (0, 0), 3.0)
    assert 1.0 > detail(light, face) > detail(heavy, face) > 0.0
    sharpened = cv2.addWeighted(face, 2.0, light, -1.0, 0)  # unsharp mask
    assert detail(sharpened, face) > 1.2


def test_psnr_matches_its_definition() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255² / 192
    assert psnr(b, a) == pytest.approx(10 * np.log10(192))
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:4])


def test_akd_is_zero_for_the_same_image_and_tracks_a_shift(face: np.ndarray, detector: LandmarkDetector) -> None:
    reference = detector(face)
    assert reference is not None and reference.shape == (478, 2)
    assert akd(detector(face.copy()), reference) == pytest.approx(0.0, abs=1e-6)  # type: ignore[arg-type]
    shift = 12
    # content moves right
    shifted = np.ascontiguousarray(np.pad(face, ((0, 0), (shift, 0), (0, 0)), mode="edge")[:, :256])
    moved = detector(shifted)
    assert moved is not None
    expected = shift / inter_ocular(reference)  # landmarks move by the shift, in eye-distance units
    assert akd(moved, reference) == pytest.approx(expected, rel=0.3)
    assert np.median(moved[:, 0] - reference[:, 0]) == pytest.approx(shift, abs=2)


def test_pose_error_sees_an_in_plane_rotation_in_the_models_convention(face: np.ndarray,
                                                                      detector: LandmarkDetector) -> None:
    _, upright = detector.measure(face)
    turned = cv2.warpAffine(face, cv2.getRotationMatrix2D((128, 128), 10.0, 1.0), (256, 256),
                            borderMode=cv2.BORDER_REFLECT_101)  # 10° counter-clockwise on screen
    _, rotated = detector.measure(turned)
    assert upright is not None and rotated is not None
    change = rotated - upright
    # The model's roll is positive clockwise on screen (its y axis points down): −10°.
    assert change[2] == pytest.approx(-10.0, abs=1.5) and abs(change[0]) < 3 and abs(change[1]) < 3
    assert pose_error(change, np.array([0.0, 0.0, -10.0])) < 1.5
    assert pose_error(np.zeros(3), change) == pytest.approx(np.abs(change).mean())


def test_expression_error_sees_an_opening_mouth_not_a_moving_head(face: np.ndarray, detector: LandmarkDetector) -> None:
    """The astronaut's real landmarks: a head that moves keeps its expression (0 here, AKD > 0); a lower
    lip that drops by a tenth of the inter-ocular distance is a third of that over mouth and two eyes."""
    reference = detector(face)
    assert reference is not None
    moved = reference + np.array([9.0, -4.0])
    assert expression_error(moved, reference) == pytest.approx(0.0, abs=1e-6)
    assert akd(moved, reference) > 0.05
    opened = reference.copy()
    opened[14, 1] += 0.1 * inter_ocular(reference)  # the inner lower lip, straight down
    assert expression_error(opened, reference) == pytest.approx(0.1 / 3, rel=0.05)


def test_akd_is_scale_invariant_and_motion_akd_ignores_shape() -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 100, (478, 2))
    out = ref + rng.normal(0, 2, ref.shape)
    assert akd(out * 2, ref * 2) == pytest.approx(akd(out, ref))
    # Another face (scaled and offset) making the same motion: zero displacement error.
    motion = rng.normal(0, 3, ref.shape)
    other = ref * 1.3 + 20
    assert motion_akd(other + motion * 1.3, other, ref + motion, ref) == pytest.approx(0.0, abs=1e-9)
    assert motion_akd(other, other, ref + motion, ref) > 0  # a still output misses the driver's motion


def test_landmark_measures_are_paired_across_methods() -> None:
    from adasr.evaluation.evaluate import _add_paired_landmarks, _Series

    ref = np.random.default_rng(1).uniform(0, 100, (478, 2))
    series = {m: _Series(("akd",)) for m in ("model", "copy_source")}
    measure = lambda lms, r: {"akd": akd(lms, r)}  # noqa: E731
    _add_paired_landmarks(series, {"model": ref + 1, "copy_source": ref + 2}, ref, measure)
    _add_paired_landmarks(series, {"model": None, "copy_source": ref + 9}, ref, measure)  # model lost the face
    _add_paired_landmarks(series, {"model": ref, "copy_source": ref}, None, measure)  # no face in the reference
    for m in series:
        series[m].frames = 3
    model, copy = series["model"].summary(), series["copy_source"].summary()
    assert model["akd"] == pytest.approx(np.sqrt(2) / inter_ocular(ref))
    assert copy["akd"] == pytest.approx(2 * np.sqrt(2) / inter_ocular(ref))  # frame 2 not counted for the baseline
    assert model["no_face_rate"] == pytest.approx(1 / 3) and copy["no_face_rate"] == 0


def test_aed_same_face_zero_other_person_far(face: np.ndarray, carphone_frames: list[np.ndarray]) -> None:
    embedder, reason = IdentityEmbedder.try_create()
    if embedder is None:
        pytest.skip(reason or "dlib missing")
    own = embedder(face)
    assert own.shape == (128,)
    assert aed(embedder(face.copy()), own) == pytest.approx(0.0, abs=1e-6)
    assert aed(embedder(cv2.GaussianBlur(face, (0, 0), 1.0)), own) < 0.6  # dlib: same person
    man = cv2.resize(carphone_frames[0][0:120, 30:150], (256, 256), interpolation=cv2.INTER_CUBIC)
    assert aed(embedder(man), own) > aed(embedder(cv2.GaussianBlur(face, (0, 0), 1.0)), own)


def test_frechet_distance_of_gaussians() -> None:
    mu_a, mu_b = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    cov_a, cov_b = np.diag([4.0, 1.0]), np.diag([1.0, 1.0])
    # ‖Δμ‖² + Σ (σa − σb)² per axis for diagonal covariances
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(9.0 + 1.0)
    assert frechet_distance(mu_a, cov_a, mu_a, cov_a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_from_features_matches_the_covariance_route() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 12)), rng.normal(0.3, 1.5, size=(30, 12))
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    wide = rng.normal(size=(20, 300))  # fewer samples than dimensions, as with a few hundred frames
    assert frechet_distance_from_features(wide, wide) == pytest.approx(0.0, abs=1e-8)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised Inception-v3 in pytorch-fid's layout (1008-class head): real weights are not shipped."""
    from adasr.evaluation.inception import InceptionFeatures

    torch.manual_seed(0)
    state = InceptionFeatures().state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(state, path)
    return path


def test_inception_weights_in_torchvision_layout_load(inception_weights: Path, tmp_path: Path,
                                                      face: np.ndarray) -> None:
    fid = FrechetInception(inception_weights, batch_size=2)
    assert fid.variant == "tf-fid"
    assert fid.features([face, face[::-1].copy(), face]).shape == (3, 2048)
    state = torch.load(inception_weights, weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(InputError, match="Inception-v3"):
        FrechetInception(broken)


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> tuple[Path, Path]:
    """A clips folder with the first 8 carphone frames as an mp4, and a portraits folder with the astronaut."""
    from skimage import data

    root = tmp_path_factory.mktemp("eval")
    clips, portraits = root / "clips", root / "portraits"
    clips.mkdir()
    portraits.mkdir()
    writer = imageio.get_writer(clips / "carphone.mp4", fps=30, codec="libx264", quality=9, macro_block_size=1,
                                ffmpeg_log_level="error")
    for frame in carphone_frames[:8]:
        writer.append_data(frame)
    writer.close()
    cv2.imwrite(str(portraits / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return clips, portraits


def test_eval_end_to_end_writes_json_table_and_video(eval_inputs: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    clips, portraits = eval_inputs
    out, video = tmp_path / "eval.json", tmp_path / "eval.mp4"
    assert main(["eval", "--clips", str(clips), "--portraits", str(portraits), "--frames", "5", "--json", str(out),
                 "--video", str(video), "--no-progress", *TINY]) == 0
    table = capsys.readouterr().out
    assert "MEAN model" in table and "MEAN copy_source" in table and "cross-identity" in table

    report = json.loads(out.read_text())
    mean = report["mean"]
    for method in ("model", "copy_source"):
        assert {"psnr", "ssim", "akd", "aed", "detail", "pose_error", "fid"} <= set(mean[method])
    assert mean["model"]["fid"] is None and report["reasons"]["fid"] == "needs --inception-weights"
    copy = mean["copy_source"]
    assert 15 < copy["psnr"] < PSNR_CAP_DB and 0 < copy["ssim"] < 1
    assert 0.5 < copy["detail"] < 2.0  # a real frame of the same clip: about as detailed as the truth
    assert 0 < mean["model"]["psnr"] < PSNR_CAP_DB
    # carphone's head turns a little: copy-source misses that motion (a few degrees, not zero, not wild);
    # the untrained model's pose changes are another number (not the tracker's, not zero).
    assert 0.05 < copy["pose_error"] < 10 and mean["model"]["pose_error"] != copy["pose_error"]
    # The tiny random model renders no face: AKD is paired, so it is null for both, with the reason.
    assert mean["model"]["no_face_rate"] == 1.0 and copy["no_face_rate"] == 0.0
    assert mean["model"]["akd"] is None and copy["akd"] is None and "model output" in report["reasons"]["akd"]
    if IdentityEmbedder.try_create()[0] is None:
        assert copy["aed"] is None and "dlib" in report["reasons"]["aed"]
    else:
        assert 0 <= copy["aed"] < 0.6 and "aed" not in report["reasons"]
    if FaceIdentityEmbedder.try_create()[0] is None:
        assert copy["identity"] is None and "[train]" in report["reasons"]["identity"]
    else:  # copy-source: another frame of the same man; the random model: no face at all
        assert copy["identity"] < SFACE_SAME_PERSON_DISTANCE < mean["model"]["identity"]
    for name, value in mean["model"].items():  # every null has its reason
        assert value is not None or name in report["reasons"]
    [clip] = report["clips"]
    assert clip["clip"] == "carphone" and clip["source_frame"] == 0 and clip["frames"] == 5

    cross = report["cross_identity"]
    [pair] = cross["pairs"]
    assert pair["portrait"] == "astronaut" and pair["frames"] == 5
    assert cross["mean"]["model"]["psnr"] is None and "ground truth" in cross["reasons"]["psnr"]
    assert cross["mean"]["copy_source"]["aed"] in (0.0, None)  # the portrait itself
    assert cross["mean"]["copy_source"]["identity"] in (pytest.approx(0.0, abs=1e-6), None)

    reader = imageio.get_reader(video)
    first = reader.get_data(0)
    assert first.shape == (128, 3 * 128, 3)  # source | driving | output
    assert reader.count_frames() == 5
    reader.close()


def test_a_clips_portrait_is_its_first_face_without_a_portrait_warning(
        eval_inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A clip whose first face would draw a portrait warning (here: its first two, as if caught mid-blink) takes the
    next face as its portrait and drives with the frames after it; when every face in the search draws one, the
    first face is the portrait and the log says so."""
    from adasr.faces import FaceTrackerConfig

    evaluate = importlib.import_module("adasr.evaluation.evaluate")  # the package's ``evaluate`` is the function

    clip_path = eval_inputs[0] / "carphone.mp4"
    seen: list[int] = []

    def warn_twice(face: object) -> list[str]:
        seen.append(1)
        return ["eyes nearly shut"] if len(seen) <= 2 else []

    monkeypatch.setattr(evaluate, "portrait_warnings", warn_twice)
    clip = evaluate.load_clip(clip_path, 64, 3, FaceTrackerConfig())
    assert clip.source_index == 2 and len(clip.frames) == 3
    monkeypatch.setattr(evaluate, "portrait_warnings", lambda face: ["turned away"])
    monkeypatch.setattr(evaluate, "PORTRAIT_SEARCH_FRAMES", 4)
    clip = evaluate.load_clip(clip_path, 64, 3, FaceTrackerConfig())
    assert clip.source_index == 0 and len(clip.frames) == 3 and "the first face is the portrait" in caplog.text


def test_eval_computes_fid_with_inception_weights(eval_inputs: tuple[Path, Path], inception_weights: Path,
                                                  tmp_path: Path) -> None:
    clips, _ = eval_inputs
    out = tmp_path / "fid.json"
    assert main(["eval", "--clips", str(clips), "--frames", "3", "--no-aed", "--inception-weights",
                 str(inception_weights), "--json", str(out), "--no-progress", *TINY]) == 0
    report = json.loads(out.read_text())
    assert report["mean"]["model"]["fid"] >= 0 and report["mean"]["copy_source"]["fid"] >= 0
    assert "fid" not in report["reasons"] and report["reasons"]["aed"] == "skipped (--no-aed)"
    assert report["cross_identity"] is None


def test_eval_refuses_missing_inputs_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--clips", str(tmp_path / "none"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--clips", str(tmp_path / "empty"), "--no-progress", *TINY]) == 2
    assert "no video clips" in capsys.readouterr().err
