"""The ``eval`` job: same-identity reconstruction and cross-identity driving, against "copy the source".

Same-identity reconstruction (the ground-truth task). For each clip the face tracker (video mode,
the same stable crop as ``animate`` and ``prepare``) runs over the frames; the first frame with a
face that the product takes as a portrait without a warning (not turned far, eyes open: a clip's first frame
caught mid-blink is no one's portrait), cropped, is the source; the next ``frames`` crops drive the model and
are also the ground truth the output is compared with. Motion is relative to the source frame, so x_d = x_s +
(x_d − x_s) — for reconstruction that equals absolute motion, the standard protocol.

Cross-identity. Each portrait (cropped by the tracker in still mode, as ``animate`` does) is driven
by the same driving crops, relative to the clip's source frame (``animate``'s default). There is no
ground truth, so PSNR/SSIM are null, and:

* ``akd``: output landmarks vs the *driver's* landmarks. Relative motion deliberately keeps the
  portrait's own face shape, so this is never 0 even for a perfect model: it mixes the shape
  difference between the two people with motion error. It is reported because it is the
  literature's measure; read it next to the copy-source row.
* ``akd_motion``: the motion-transfer error proper: each face's landmark displacement since its
  anchor (the portrait for the output, the clip's source frame for the driver), in its own
  inter-ocular units, compared. For copy-source it is the driver's own motion magnitude.
* ``aed``: identity distance of the output from the portrait (copy-source: 0 by construction).
* ``identity``: the same with SFace (cosine distance, no dlib needed; the ``train`` extra).

Expression, both tasks (``adasr.evaluation.expression_tracking``, dlib's 68 points, the optional ``eval``
extra): ``mouth_corr`` and ``eye_corr``, the correlation over a clip of the output's mouth and eye opening
with the driver's, and ``mouth_change_error``. The model is driven with the tracker's landmarks of each
driving crop (its expression vector), as the sender drives it.

Every measure is also computed for the baseline "output = the source frame" (``copy_source``),
so a reader sees what the model adds. Landmark measures are *paired*: a frame counts only when the
tracker finds a face in the reference and in every method's output, so model and baseline are
averaged over the same frames; ``no_face_rate`` says how often an output lost the face (a blurry
output that the tracker cannot read shows there, not as a better AKD). Means are over clips (each
clip, or portrait×clip pair, weighs the same), each clip's value being its mean over frames.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from adasr.errors import InputError, NoFaceError
from adasr.evaluation.expression_tracking import (EXPRESSION_MEASURES, MOTION_OVER_NOISE, Dlib68, OpeningTrack,
                                                  expression_measures)
from adasr.evaluation.metrics import (
    SFACE_SAME_PERSON_DISTANCE,
    FaceIdentityEmbedder,
    IdentityEmbedder,
    FrechetInception,
    LandmarkDetector,
    aed,
    akd,
    detail,
    expression_error,
    identity_distance,
    motion_akd,
    pose_error,
    psnr,
    ssim,
)
from adasr.face_cropper import BoxOrigin, FaceCropper, portrait_warnings
from adasr.faces import FaceTrackerConfig
from adasr.inference import Head, SourceState
from adasr.keypoints import Motion
from adasr.video_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FrameSource, FrameWriter, read_image

logger = logging.getLogger(__name__)

#: Measures of the reconstruction table, in order (fid is set-level: mean only).
RECON_METRICS = ("psnr", "ssim", "akd", "expression", "aed", "identity", "detail", "pose_error", "identity_psnr",
                 *EXPRESSION_MEASURES)
CROSS_METRICS = ("psnr", "ssim", "akd", "akd_motion", "aed", "identity", *EXPRESSION_MEASURES)
METHODS = ("model", "copy_source")
FID_NEEDS_WEIGHTS = "needs --inception-weights"
NO_GROUND_TRUTH = "no ground truth in cross-identity driving"
IDENTITY_BY_CONSTRUCTION = ("identity_psnr: the source rendered with its own motion (driving = source) against the "
                            "source; copy-source gives the source back by construction")
AKD_NOTE = ("mean 2-D distance over the tracker's 478 landmarks (still-image mode on the crops), divided by the "
            "reference face's inter-ocular distance (outer eye corners, mesh points 33 and 263)")


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and what to write."""

    clips: Path
    """A folder of video clips (or one clip)."""
    portraits: Path | None = None
    """A folder of portrait images (or one image) for cross-identity driving; None: skip that part."""
    frames: int = 100
    """Driving frames per clip after the source frame."""
    video: Path | None = None
    """Write a source | driving | output mp4 of the first clip's reconstruction here."""
    inception_weights: Path | None = None
    """Inception-v3 state dict for FID; None: FID is null."""
    identity: bool = True
    """Compute AED (needs dlib); False skips it (it is the slowest measure)."""
    pose_source: Literal["model", "tracker"] = "model"
    """Head rotation of every motion (source, reference, driving): the motion extractor's own, or the face
    tracker's (mediapipe's facial transformation matrix) on the same crop, where it finds a face."""
    show_progress: bool = True


@dataclass
class ClipCrops:
    """A clip's face crops: the source and the driving/ground-truth frames that follow it."""

    name: str
    fps: float
    source_index: int
    """Index in the clip of the first frame with a face."""
    source: np.ndarray
    frames: list[np.ndarray]


@dataclass
class EvalReport:
    """Everything ``adasr eval`` measured; :meth:`as_dict` is the JSON document."""

    model: dict[str, Any]
    frames: int
    clips: list[dict[str, Any]]
    mean: dict[str, dict[str, float | None]]
    reasons: dict[str, str]
    cross_identity: dict[str, Any] | None
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))


def _finite(value: Any) -> Any:
    """NaN/inf → None, recursively: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _Series:
    """Per-frame values of each measure for one method on one clip."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.values: dict[str, list[float]] = {n: [] for n in names}
        self.frames = 0
        self.no_face = 0

    def add(self, name: str, value: float | None) -> None:
        if value is not None:
            self.values[name].append(value)

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {n: (float(np.mean(v)) if v else None) for n, v in self.values.items()}
        out["no_face_rate"] = self.no_face / self.frames if self.frames else None
        return out


def _mean_over(rows: list[dict[str, Any]], method: str, names: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in (*names, "no_face_rate"):
        values = [r[method][name] for r in rows if r[method].get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def list_files(path: Path, suffixes: tuple[str, ...] | set[str], what: str) -> list[Path]:
    """A single file, or the sorted matching files of a folder; InputError when there are none."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{what} not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise InputError(f"{path}: no {what} ({', '.join(sorted(suffixes))})")
    return files


#: How many frames after a clip's first face its portrait frame is looked for in (``load_clip``).
PORTRAIT_SEARCH_FRAMES = 30


def load_clip(path: Path, size: int, frames: int, tracker_config: FaceTrackerConfig) -> ClipCrops:
    """Tracker crops of a clip: its portrait frame, then up to ``frames`` following frames.

    The portrait is the first face ``portrait_warnings`` has nothing to say about, within
    ``PORTRAIT_SEARCH_FRAMES`` of the first face; failing that, the first face (logged). A frame where the
    face is lost keeps the last box (as ``animate`` does). Raises InputError for an unreadable clip,
    NoFaceError when no frame has a face or none follows the source.
    """
    source_video = FrameSource(path)
    config = dataclasses.replace(tracker_config, fps=source_video.info.fps or tracker_config.fps)
    source: np.ndarray | None = None
    source_index, first_face = -1, -1
    crops: list[np.ndarray] = []
    with FaceCropper.for_stream(size, config) as cropper:
        for index, frame in enumerate(source_video):
            face = cropper.crop(frame)
            if face.origin is BoxOrigin.CENTRE:
                continue
            if source is None:
                if first_face < 0:
                    first_face, first_crop = index, face.crop
                if face.face_found and not portrait_warnings(face):
                    source, source_index = face.crop, index
                elif index - first_face >= PORTRAIT_SEARCH_FRAMES:
                    logger.warning("%s: no frame in the first %d with a face makes a portrait without a warning "
                                   "(turned away, or eyes shut): the first face is the portrait", path.name,
                                   PORTRAIT_SEARCH_FRAMES)
                    source, source_index = first_crop, first_face
                continue
            crops.append(face.crop)
            if len(crops) >= frames:
                break
    if source is None:
        raise NoFaceError(f"{path.name}: no face in any frame")
    if not crops:
        raise NoFaceError(f"{path.name}: no frame after the source frame {source_index}")
    return ClipCrops(path.stem, source_video.info.fps, source_index, source, crops)


def _portrait_crop(path: Path, cropper: FaceCropper) -> np.ndarray:
    """The portrait's tracker crop (still mode), as ``animate`` makes its source."""
    face = cropper.crop(read_image(path))
    if not face.face_found:
        raise NoFaceError(f"{path.name}: no face found")
    for warning in portrait_warnings(face):
        logger.warning("%s: %s", path.name, warning)
    return face.crop


@dataclass
class _Portrait:
    name: str
    crop: np.ndarray
    landmarks: np.ndarray | None
    embedding: np.ndarray | None
    identity: np.ndarray | None
    state: Any
    opening: OpeningTrack
    """The portrait's own mouth and eye opening (one frame; empty without dlib)."""


class _Measures:
    """Landmark and identity measurement with the optional parts resolved once."""

    def __init__(self, tracker_config: FaceTrackerConfig, identity: bool) -> None:
        self.landmarks = LandmarkDetector(tracker_config)
        self.reasons: dict[str, str] = {}
        self.embedder: IdentityEmbedder | None = None
        if identity:
            self.embedder, reason = IdentityEmbedder.try_create()
            if reason:
                self.reasons["aed"] = reason
                logger.warning("AED skipped: %s", reason)
        else:
            self.reasons["aed"] = "skipped (--no-aed)"
        self.sface, reason = FaceIdentityEmbedder.try_create()
        if reason:
            self.reasons["identity"] = reason
            logger.warning("identity (SFace) skipped: %s", reason)
        self.dlib68, reason = Dlib68.try_create()
        if reason:
            self.reasons.update(dict.fromkeys(EXPRESSION_MEASURES, reason))
            logger.warning("expression measures (mouth/eye correlation) skipped: %s", reason)

    def track(self, track: OpeningTrack, image: np.ndarray) -> None:
        """Add the image's mouth and eye openings to ``track`` (nothing without dlib)."""
        if self.dlib68 is not None:
            track.add(self.dlib68(image))

    def add_expression(self, series: dict[str, _Series], driver: OpeningTrack,
                       outputs: dict[str, OpeningTrack]) -> None:
        """The expression measures of each method's output track against the driver's (once per clip)."""
        if self.dlib68 is None or len(driver.values) < 2:
            return
        for method, track in outputs.items():
            for name, value in expression_measures(driver, track).items():
                series[method].add(name, value)

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        return None if self.embedder is None else self.embedder(image)

    def identity(self, image: np.ndarray) -> np.ndarray | None:
        return None if self.sface is None else self.sface(image)

    def close(self) -> None:
        self.landmarks.close()


def _load_portraits(head: Head, paths: list[Path], tracker_config: FaceTrackerConfig, measures: _Measures,
                    pose_source: str, skipped: list[dict[str, str]]) -> list[_Portrait]:
    """Each portrait's crop, measures and source state; one without a usable face is logged into ``skipped``."""
    if not paths:
        return []
    portraits = []
    with FaceCropper.for_portraits(head.size, tracker_config) as cropper:
        for path in paths:
            try:
                crop = _portrait_crop(path, cropper)
            except InputError as exc:
                logger.warning("portrait skipped: %s", exc)
                skipped.append({"file": str(path), "reason": str(exc)})
                continue
            landmarks, pose = measures.landmarks.measure(crop)
            opening = OpeningTrack()
            measures.track(opening, crop)
            portraits.append(_Portrait(path.stem, crop, landmarks, measures.embed(crop), measures.identity(crop),
                                       _posed_state(head.prepare_source(crop, landmarks), pose, pose_source),
                                       opening))
    return portraits


def evaluate(head: Head, options: EvalOptions, tracker_config: FaceTrackerConfig | None = None) -> EvalReport:
    """Run the evaluation; raises InputError when no clip (or, with portraits, no portrait) is usable."""
    if options.frames < 1:
        raise InputError(f"--frames must be at least 1, got {options.frames}")
    tracker_config = tracker_config or FaceTrackerConfig()
    clip_paths = list_files(options.clips, VIDEO_SUFFIXES, "video clips")
    portrait_paths = list_files(options.portraits, IMAGE_SUFFIXES, "portraits") if options.portraits else []
    fid = FrechetInception(options.inception_weights, device=str(head.backend.device)) \
        if options.inception_weights else None

    start = time.perf_counter()
    measures = _Measures(tracker_config, options.identity)
    skipped: list[dict[str, str]] = []
    try:
        portraits = _load_portraits(head, portrait_paths, tracker_config, measures, options.pose_source, skipped)
        if portrait_paths and not portraits:
            raise InputError(f"{options.portraits}: no portrait with a detectable face")

        estimate = sum(min(options.frames, max(_frame_count(p) - 1, 1)) for p in clip_paths) * (1 + len(portraits))
        recon_rows: list[dict[str, Any]] = []
        cross_rows: list[dict[str, Any]] = []
        fid_sets: dict[str, list[np.ndarray]] = {"model": [], "copy_source": [], "reference": []}  # only with FID
        with tqdm(total=estimate, unit="frame", desc="eval", disable=not options.show_progress) as bar:
            for path in clip_paths:
                try:
                    clip = load_clip(path, head.size, options.frames, tracker_config)
                except InputError as exc:  # NoFaceError included
                    logger.warning("clip skipped: %s", exc)
                    skipped.append({"file": str(path), "reason": str(exc)})
                    continue
                video = options.video if not recon_rows else None
                row, motions, reference, gt, driver_track = _reconstruct(head, clip, measures, video, bar,
                                                                         fid_sets if fid is not None else None,
                                                                         options.pose_source)
                recon_rows.append(row)
                for portrait in portraits:
                    cross_rows.append(_cross(head, portrait, clip, motions, reference, gt, driver_track, measures,
                                             bar))
        if not recon_rows:
            raise InputError(f"{options.clips}: no clip with a detectable face")
    finally:
        measures.close()

    reasons = dict(measures.reasons)
    mean = {m: _mean_over(recon_rows, m, RECON_METRICS) for m in METHODS}
    for m in METHODS:
        no_face = mean[m].pop("no_face_rate")
        mean[m]["fid"] = fid.distance(fid_sets[m], fid_sets["reference"]) if fid is not None else None
        mean[m]["no_face_rate"] = no_face
    if fid is None:
        reasons["fid"] = FID_NEEDS_WEIGHTS
    reasons["identity_psnr"] = IDENTITY_BY_CONSTRUCTION
    if options.pose_source == "tracker":
        reasons["pose_error"] = "the rotation is the tracker's own (--pose-source tracker): nothing to compare"
    _explain_nulls(mean, reasons)

    cross = None
    if portraits:
        cross_mean = {m: _mean_over(cross_rows, m, CROSS_METRICS) for m in METHODS}
        cross_reasons = {"psnr": NO_GROUND_TRUTH, "ssim": NO_GROUND_TRUTH}
        for name in ("aed", "identity"):
            if name in measures.reasons:
                cross_reasons[name] = measures.reasons[name]
        _explain_nulls(cross_mean, cross_reasons)
        cross = {"pairs": cross_rows, "mean": cross_mean, "reasons": cross_reasons}

    notes = {"akd": AKD_NOTE,
             "relative": "driving motion is relative to the clip's source frame (reconstruction: equals absolute)",
             "mean": "mean over clips (cross-identity: over portrait×clip pairs) of per-clip frame means",
             "pairing": "landmark measures count a frame only when the tracker finds a face in the reference and in "
                        "every method's output; no_face_rate is the share of frames whose output it lost"}
    if cross is not None:
        notes["cross_akd"] = ("akd: output vs driver landmarks; relative motion keeps the portrait's face shape, so "
                              "it includes the shape difference between the two people and is not 0 for a perfect "
                              "model; akd_motion compares landmark displacements since the anchor frames instead")
    if measures.embedder is not None:
        embedder = measures.embedder
        notes["aed"] = (f"dlib 128-d embedding L2 distance (same person below 0.6); the HOG detector missed the face "
                        f"in {embedder.fallbacks}/{embedder.calls} images, which used the crop-geometry box")
    if measures.sface is not None:
        notes["identity"] = (f"SFace cosine distance 1 − cos of the face square (FaceBox); same person below "
                             f"{SFACE_SAME_PERSON_DISTANCE} (equal-error point on the corpus crops)")
    if measures.dlib68 is not None:
        notes["expression"] = _expression_note(recon_rows, cross_rows if cross is not None else [])
    backend = head.backend
    return EvalReport(
        model={"name": backend.config.name, "model_id": backend.model_id, "image_size": head.size,
               "backend": backend.describe(), "pose_source": options.pose_source},
        frames=options.frames, clips=recon_rows, mean=mean, reasons=reasons, cross_identity=cross,
        skipped=skipped, seconds=time.perf_counter() - start, notes=notes)


def _frame_count(path: Path) -> int:
    try:
        return FrameSource(path).info.frame_count
    except InputError:
        return 1


def _explain_nulls(mean: dict[str, dict[str, float | None]], reasons: dict[str, str]) -> None:
    """Every null in a mean gets a reason: the known one (missing dlib, no weights, no ground truth), else why
    no frame could be measured (landmark measures are paired across methods)."""
    names = {n for values in mean.values() for n in values} - {"no_face_rate"}
    lost = [m for m, values in mean.items() if values.get("no_face_rate") == 1.0]
    for name in sorted(names):
        if name in reasons or all(values.get(name) is not None for values in mean.values()):
            continue
        reasons[name] = (f"the tracker found no face in any {' or '.join(lost)} output frame (landmark measures are "
                         "paired: a frame counts only when every output has a face)" if lost
                         else "no frame had a face the tracker could find in the reference and in every output")


def _posed(motion: Motion, tracker_pose: np.ndarray | None, pose_source: str) -> Motion:
    """``motion`` with the tracker's rotation when that is the pose source and the tracker found the face."""
    if pose_source != "tracker" or tracker_pose is None:
        return motion
    return motion.with_pose(torch.from_numpy(np.asarray(tracker_pose, np.float32)))


def _posed_state(state: SourceState, tracker_pose: np.ndarray | None, pose_source: str) -> SourceState:
    return dataclasses.replace(state, motion=_posed(state.motion, tracker_pose, pose_source))


def _reconstruct(head: Head, clip: ClipCrops, measures: _Measures, video: Path | None, bar: tqdm,
                 fid_sets: dict[str, list[np.ndarray]] | None, pose_source: str
                 ) -> tuple[dict[str, Any], list[Motion], Motion, list[tuple[np.ndarray | None, np.ndarray | None]],
                            OpeningTrack]:
    """Same-identity reconstruction of one clip; also returns what cross-identity reuses.

    Returns the row, every frame's motion, the reference motion (the source frame's), the
    ground-truth (landmarks, embedding) per frame, and the driver's mouth and eye openings.
    """
    src_lms, src_pose = measures.landmarks.measure(clip.source)
    state = _posed_state(head.prepare_source(clip.source, src_lms), src_pose, pose_source)
    reference = _posed(head.extract_motion(clip.source, src_lms), src_pose, pose_source)
    src_emb = measures.embed(clip.source)
    src_id = measures.identity(clip.source)
    series = {m: _Series(RECON_METRICS) for m in METHODS}
    series["model"].add("identity_psnr", psnr(head.render_image(state, reference, reference), clip.source))
    motions: list[Motion] = []
    gt_measures: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    tracks = {"driver": OpeningTrack(), "model": OpeningTrack(), "source": OpeningTrack()}
    measures.track(tracks["source"], clip.source)
    writer = FrameWriter(video, clip.fps) if video is not None else None
    try:
        for frame in clip.frames:
            (gt_lms, gt_pose), gt_emb = measures.landmarks.measure(frame), measures.embed(frame)
            motion = _posed(head.extract_motion(frame, gt_lms), gt_pose, pose_source)
            motions.append(motion)
            out = head.render_image(state, motion, reference)
            measures.track(tracks["driver"], frame)
            measures.track(tracks["model"], out)
            gt_id = measures.identity(frame)
            gt_measures.append((gt_lms, gt_emb))
            if gt_pose is not None and src_pose is not None and pose_source == "model":
                teacher = gt_pose - src_pose
                rendered = (motion.pose_degrees() - reference.pose_degrees())[0].cpu().numpy()
                series["model"].add("pose_error", pose_error(rendered, teacher))
                series["copy_source"].add("pose_error", pose_error(np.zeros(3), teacher))
            out_lms = measures.landmarks(out)
            out_emb = measures.embed(out)
            out_id = measures.identity(out)
            outputs = {"model": (out, out_lms, out_emb, out_id), "copy_source": (clip.source, src_lms, src_emb, src_id)}
            for method, (image, _, emb, ident) in outputs.items():
                s = series[method]
                s.frames += 1
                s.add("psnr", psnr(image, frame))
                s.add("ssim", ssim(image, frame))
                s.add("detail", detail(image, frame))
                if emb is not None and gt_emb is not None:
                    s.add("aed", aed(emb, gt_emb))
                if ident is not None and gt_id is not None:
                    s.add("identity", identity_distance(ident, gt_id))
            _add_paired_landmarks(series, {m: v[1] for m, v in outputs.items()}, gt_lms,
                                  lambda lms, ref: {"akd": akd(lms, ref), "expression": expression_error(lms, ref)})
            if fid_sets is not None:
                fid_sets["model"].append(out)
                fid_sets["copy_source"].append(clip.source)
                fid_sets["reference"].append(frame)
            if writer is not None:
                writer.write(np.concatenate([clip.source, frame, out], axis=1))
            bar.update(1)
    finally:
        if writer is not None:
            writer.close()
    if src_lms is None:
        logger.warning("%s: the tracker finds no face in the source crop in still mode", clip.name)
    measures.add_expression(series, tracks["driver"], {"model": tracks["model"],
                                                       "copy_source": _still_track(tracks["source"], len(clip.frames))})
    row = {"clip": clip.name, "source_frame": clip.source_index, "frames": len(clip.frames),
           **{m: series[m].summary() for m in METHODS}}
    logger.info("%s: %s", clip.name, row)
    return row, motions, reference, gt_measures, tracks["driver"]


def _expression_note(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    """What the means of mouth_corr and eye_corr are over: the clips whose driver moves beyond dlib's noise."""
    def counted(name: str, items: list[dict[str, Any]]) -> str:
        return f"{sum(r['model'].get(name) is not None for r in items)}/{len(items)}"

    cross = (f"; cross identity {counted('mouth_corr', pairs)} and {counted('eye_corr', pairs)} pairs"
             if pairs else "")
    return (f"mouth_corr, eye_corr: dlib 68-point openings; a clip whose driver's opening varies less than "
            f"{MOTION_OVER_NOISE:g}× its frame-to-frame measurement noise has nothing to correlate with and is left "
            f"out (null): counted {counted('mouth_corr', rows)} clips for the mouth, {counted('eye_corr', rows)} for "
            f"the eyes{cross}")


def _still_track(still: OpeningTrack, frames: int) -> OpeningTrack:
    """A still photo's openings over ``frames`` frames (the copy-source output)."""
    return OpeningTrack(still.values * frames)


def _cross(head: Head, portrait: _Portrait, clip: ClipCrops, motions: list[Motion], reference: Motion,
           gt: list[tuple[np.ndarray | None, np.ndarray | None]], driver_track: OpeningTrack, measures: _Measures,
           bar: tqdm) -> dict[str, Any]:
    """One portrait driven by one clip's frames, relative to the clip's source frame."""
    driver_anchor = measures.landmarks(clip.source)
    series = {m: _Series(CROSS_METRICS) for m in METHODS}
    model_track = OpeningTrack()
    for motion, (drv_lms, _) in zip(motions, gt):
        out = head.render_image(portrait.state, motion, reference)
        measures.track(model_track, out)
        out_lms = measures.landmarks(out)
        out_emb = measures.embed(out)
        out_id = measures.identity(out)
        outputs = {"model": (out_lms, out_emb, out_id),
                   "copy_source": (portrait.landmarks, portrait.embedding, portrait.identity)}
        for method, (_, emb, ident) in outputs.items():
            series[method].frames += 1
            if emb is not None and portrait.embedding is not None:
                series[method].add("aed", aed(emb, portrait.embedding))
            if ident is not None and portrait.identity is not None:
                series[method].add("identity", identity_distance(ident, portrait.identity))

        def landmark_measures(lms: np.ndarray, drv: np.ndarray) -> dict[str, float | None]:
            moved = None if portrait.landmarks is None or driver_anchor is None else \
                motion_akd(lms, portrait.landmarks, drv, driver_anchor)
            return {"akd": akd(lms, drv), "akd_motion": moved}

        _add_paired_landmarks(series, {m: v[0] for m, v in outputs.items()}, drv_lms, landmark_measures)
        bar.update(1)
    measures.add_expression(series, driver_track, {"model": model_track,
                                                   "copy_source": _still_track(portrait.opening, len(motions))})
    return {"portrait": portrait.name, "clip": clip.name, "frames": len(motions),
            **{m: series[m].summary() for m in METHODS}}


def _add_paired_landmarks(series: dict[str, _Series], landmarks: dict[str, np.ndarray | None],
                          reference: np.ndarray | None,
                          measure: Callable[[np.ndarray, np.ndarray], dict[str, float | None]]) -> None:
    """Landmark measures of one frame, *paired*: added for every method or for none.

    A frame counts only when the tracker finds a face in the reference and in every method's
    output, so model and baseline are averaged over the same frames; a method whose output has no
    face adds to its ``no_face_rate`` instead (a model that blurs the face away cannot hide there).
    """
    if reference is None:
        return
    missing = [m for m, lms in landmarks.items() if lms is None]
    for m in missing:
        series[m].no_face += 1
    if missing:
        return
    for m, lms in landmarks.items():
        assert lms is not None
        for name, value in measure(lms, reference).items():
            series[m].add(name, value)


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


_DIGITS = {"psnr": 2, "ssim": 4, "detail": 3, "pose_error": 2, "identity_psnr": 2, "akd": 4, "akd_motion": 4,
           "expression": 4,
           "aed": 4, "identity": 4, "fid": 2,
           "mouth_corr": 3, "eye_corr": 3, "mouth_change_error": 4,
           "no_face_rate": 3}


def _table(title: str, rows: Iterator[tuple[str, dict[str, float | None]]], names: tuple[str, ...]) -> list[str]:
    arrows = {"psnr": "↑", "ssim": "↑", "detail": "→1", "identity_psnr": "↑", "mouth_corr": "↑", "eye_corr": "↑"}
    labels = {"no_face_rate": "no face", "mouth_change_error": "mouth_err"}
    header = f"{'':<28}" + "".join(f"{labels.get(n, n) + ' ' + arrows.get(n, '↓'):>13}" for n in names)
    lines = [title, header]
    for label, values in rows:
        lines.append(f"{label:<28}" + "".join(f"{_fmt(values.get(n), _DIGITS[n]):>13}" for n in names))
    return lines


def format_table(report: EvalReport) -> str:
    """The human-readable summary printed by ``adasr eval``: per clip, then the means, model vs copy-source."""
    recon_names = (*RECON_METRICS, "fid", "no_face_rate")

    def recon_rows() -> Iterator[tuple[str, dict[str, float | None]]]:
        for row in report.clips:
            for m in METHODS:
                yield f"{row['clip'][:14]} {m}", row[m]
        for m in METHODS:
            yield f"MEAN {m}", report.mean[m]

    lines = _table(f"same-identity reconstruction: {len(report.clips)} clip(s), up to {report.frames} driving "
                   f"frames each (model {report.model['name']}, {report.model['image_size']} px)",
                   recon_rows(), recon_names)
    if report.cross_identity is not None:
        cross = report.cross_identity

        def cross_rows() -> Iterator[tuple[str, dict[str, float | None]]]:
            for pair in cross["pairs"]:
                for m in METHODS:
                    yield f"{pair['portrait'][:8]}←{pair['clip'][:8]} {m}", pair[m]
            for m in METHODS:
                yield f"MEAN {m}", cross["mean"][m]

        lines += [""] + _table(f"cross-identity: {len(cross['pairs'])} portrait×clip pair(s) (akd vs driver, "
                               "akd_motion = displacement error, aed and identity vs portrait)",
                               cross_rows(), ("akd", "akd_motion", "aed", "identity", *EXPRESSION_MEASURES,
                                              "no_face_rate"))
    lines.append("")
    lines.append("akd: over the frames where the tracker finds a face in the reference and in every output "
                 "(paired); 'no face' = share of frames whose output it lost")
    reasons = {**report.reasons, **({f"cross {k}": v for k, v in report.cross_identity["reasons"].items()
                                     if k not in ("psnr", "ssim")} if report.cross_identity else {})}
    if reasons:
        lines += [f"{name}: null — {why}" for name, why in reasons.items()]
    for item in report.skipped:
        lines.append(f"skipped {item['file']}: {item['reason']}")
    return "\n".join(lines)
