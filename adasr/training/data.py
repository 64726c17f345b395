"""Training data: face-crop preparation of video clips, and a (source, driving) pair dataset.

Preparation runs the face tracker once per clip and stores, per clip, a raw uint8 frame file
``frames.u8`` ([N, S, S, 3], read back as a memmap: no decoding at training time, which matters on
a 2-core CPU) plus ``meta.npz`` (tracker landmarks and head pose per frame) and ``meta.json``
(written last; its presence marks the clip as done, which makes preparation resumable).

Still portraits are prepared too, as short synthetic clips: the whole image is moved in-plane
(rotation about the face, shift, zoom) along a smooth random path, and the tracker then runs on
those frames exactly as on a video. With ten filmed training identities the model learns their
faces rather than faces in general (``adasr eval``'s pose_error is several times larger on held-out
faces than on training ones); every portrait adds an identity, with real tracker poses and landmarks,
that moves in the image plane (roll, shift, zoom; not yaw or pitch).

Crop choice: every frame uses the tracker's *stable* per-frame crop, i.e. exactly the crop the
sender produces at inference time, so training sees the framing the model will be driven with.
(``crop_mode: fixed`` instead uses one median box per shot, which keeps the background static, as
VoxCeleb-style preprocessing does.) Frames without a face are dropped; a drop or a crop jump
(a cut) starts a new *shot*, and pairs are only drawn within one shot.

Sampling is a pure function of (seed, index): the trainer asks for batch ``step`` and always gets
the same images and augmentations, which is what makes an interrupted run resume exactly.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from adasr.errors import InputError
from adasr.expression_rig import anchors_from_landmarks, ratio_change
from adasr.expression_signal import expression_features, mirrored, raw_ratios
from adasr.image_ops import luma
from adasr.faces import NUM_LANDMARKS, CropBox, FaceTracker, FaceTrackerConfig, crop_face
from adasr.training.face_regions import pair_region_map
from adasr.video_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FrameSource, read_image

logger = logging.getLogger(__name__)

#: Bumped when the on-disk layout changes; a clip prepared with another version is redone.
FORMAT_VERSION = 1
FRAMES_FILE = "frames.u8"
META_FILE = "meta.npz"
DONE_FILE = "meta.json"


@dataclass
class StillMotionConfig:
    """The synthetic in-plane head motion that turns a still portrait into a training clip."""

    frames: int = 48
    """Frames of the synthetic clip."""
    fps: float = 25.0
    """Its frame rate (the tracker's smoothing depends on it)."""
    keyframes: int = 4
    """Random poses along the path after the still's own; frames ease between them (cosine)."""
    max_rotation_deg: float = 10.0
    """In-plane rotation about the face centre, uniform in ±this."""
    max_shift: float = 0.08
    """Shift in each axis, uniform in ±this fraction of the face box side."""
    max_zoom: float = 0.06
    """Relative scale change, uniform in ±this."""


@dataclass
class PrepareConfig:
    """How clips are turned into face crops."""

    size: int = 256
    """Side of the stored square crops."""
    crop_mode: Literal["tracked", "fixed"] = "tracked"
    """``tracked``: the tracker's stable crop of every frame (what inference sees); ``fixed``: one
    median box per shot (static background)."""
    frame_step: int = 1
    """Keep every n-th frame (the tracker still sees every frame, so its smoothing is unchanged)."""
    min_shot_frames: int = 8
    """Shots shorter than this are dropped (too short to give distinct source/driving pairs)."""
    max_frames: int | None = None
    """Read at most this many frames per clip (None: all)."""
    cut_distance: float = 0.5
    """A crop centre moving more than this fraction of the crop size between kept frames starts a shot."""
    tracker: FaceTrackerConfig = field(default_factory=FaceTrackerConfig)
    """Face tracker settings (video mode)."""
    still: StillMotionConfig = field(default_factory=StillMotionConfig)
    """How a still portrait is turned into a clip."""


@dataclass
class PrepareSummary:
    """What :func:`prepare` did."""

    prepared: list[str] = field(default_factory=list)
    """Clips processed now."""
    skipped_done: list[str] = field(default_factory=list)
    """Clips already prepared (resumed run)."""
    unreadable: list[str] = field(default_factory=list)
    """Files that could not be decoded (skipped with a warning)."""
    no_face: list[str] = field(default_factory=list)
    """Clips where no usable shot with a face was found."""
    frames_kept: int = 0
    """Frames written by this call."""
    frames_dropped: int = 0
    """Frames read but not kept (no face, short shots, frame_step)."""


def find_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Expand directories into the video and image files they hold (sorted); keep files as given."""
    suffixes = {*VIDEO_SUFFIXES, *IMAGE_SUFFIXES}
    out: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            out += sorted(p for p in item.iterdir() if p.suffix.lower() in suffixes)
        else:
            out.append(item)
    return out


def is_still(path: Path) -> bool:
    """Whether ``path`` is prepared as a still portrait (by its suffix)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _ease_path(rng: np.random.Generator, frames: int, keyframes: int, limit: float) -> np.ndarray:
    """[frames] values from 0 through ``keyframes`` uniform draws in ±limit, cosine-eased in between."""
    keys = np.concatenate([[0.0], rng.uniform(-limit, limit, keyframes)])
    pos = np.linspace(0, keyframes, frames)
    i = np.minimum(pos.astype(int), keyframes - 1)
    w = (1 - np.cos(np.pi * (pos - i))) / 2
    return keys[i] * (1 - w) + keys[i + 1] * w


def still_seed(path: Path) -> int:
    """The seed of a still's motion path: from its file name only, so a rerun makes the same clip."""
    return zlib.crc32(path.name.encode())


def still_motion_path(cfg: StillMotionConfig, seed: int) -> np.ndarray:
    """[frames, 4] in-plane motion per frame: rotation (degrees, counter-clockwise), shift x, y (face-box
    sides), zoom factor; the first row is the still itself (0, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    limits = (cfg.max_rotation_deg, cfg.max_shift, cfg.max_shift, cfg.max_zoom)
    path = np.stack([_ease_path(rng, cfg.frames, cfg.keyframes, limit) for limit in limits], 1)
    path[:, 3] += 1
    return path


def synthesize_still_motion(image: np.ndarray, path: np.ndarray,
                            tracker_config: FaceTrackerConfig | None = None) -> list[np.ndarray]:
    """Frames of ``image`` moved along ``path`` (:func:`still_motion_path`).

    Rotation and zoom are about the face centre (found by the tracker in still mode), shifts are in
    face-box units, borders are mirrored. Raises ValueError when the still has no face.
    """
    import cv2

    with FaceTracker(replace(tracker_config or FaceTrackerConfig(), mode="image")) as tracker:
        found = tracker.track(image)
    if found is None:
        raise ValueError("no face in the still image")
    box = found.raw_box
    centre = (box.x0 + box.size / 2, box.y0 + box.size / 2)
    h, w = image.shape[:2]
    out = []
    for angle, dx, dy, zoom in path:
        matrix = cv2.getRotationMatrix2D(centre, float(angle), float(zoom))
        matrix[:, 2] += (dx * box.size, dy * box.size)
        out.append(cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101))
    return out


def _read_frames(path: Path, cfg: PrepareConfig) -> tuple[list[np.ndarray], float]:
    """RGB frames of a video (the first ``max_frames``, or all) and its fps, or a still's synthetic clip.

    InputError if unreadable; ValueError when a still has no face.
    """
    if is_still(path):
        motion = still_motion_path(cfg.still, still_seed(path))
        return synthesize_still_motion(read_image(path), motion, cfg.tracker), cfg.still.fps
    source = FrameSource(path)
    return list(itertools.islice(source, cfg.max_frames)), source.info.fps


def _still_settings(path: Path, cfg: PrepareConfig) -> dict[str, float] | None:
    """What meta.json records about a still's synthetic motion (None for a video)."""
    return asdict(cfg.still) if is_still(path) else None


def _clip_is_done(clip_dir: Path, source: Path, cfg: PrepareConfig) -> bool:
    done = clip_dir / DONE_FILE
    if not done.is_file():
        return False
    try:
        info = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (info.get("version") == FORMAT_VERSION and info.get("size") == cfg.size
            and info.get("crop_mode") == cfg.crop_mode and info.get("frame_step") == cfg.frame_step
            and info.get("source_bytes") == source.stat().st_size
            and info.get("synthetic_motion") == _still_settings(source, cfg))


def _split_shots(centres: np.ndarray, sizes: np.ndarray, frame_idx: np.ndarray, cut: float) -> np.ndarray:
    """Shot id per kept frame: a new shot after a gap in the frame indices or a crop jump."""
    shot = np.zeros(len(frame_idx), np.int32)
    for i in range(1, len(frame_idx)):
        jump = np.hypot(*(centres[i] - centres[i - 1])) / max(float(sizes[i - 1]), 1.0)
        gap = frame_idx[i] - frame_idx[i - 1] > 1
        shot[i] = shot[i - 1] + int(bool(gap or jump > cut))
    return shot


def prepare_clip(path: Path, out_dir: Path, cfg: PrepareConfig) -> tuple[int, int]:
    """Track, crop and store one clip into ``out_dir``; returns (frames kept, frames dropped).

    Raises InputError (or OSError) for an unreadable file and ValueError when no usable face shot remains.
    """
    frames, fps = _read_frames(path, cfg)
    tcfg = FaceTrackerConfig(**{**cfg.tracker.__dict__, "mode": "video", "fps": fps})
    with FaceTracker(tcfg) as tracker:
        observations = [tracker.track(f) for f in frames]
    found = [(i, ob) for i, ob in enumerate(observations) if ob is not None]
    if not found:
        raise ValueError(f"{path.name}: no face in any frame")
    idx = np.array([i for i, _ in found])
    boxes = np.array([[ob.box.x0, ob.box.y0, ob.box.size] for _, ob in found], np.float64)
    centres = boxes[:, :2] + boxes[:, 2:3] / 2
    shots = _split_shots(centres, boxes[:, 2], idx, cfg.cut_distance)
    # Subsample after the shot split so that frame_step does not look like a gap.
    sel = np.zeros(len(idx), bool)
    for s in np.unique(shots):
        members = np.flatnonzero(shots == s)
        kept = members[:: cfg.frame_step]
        if len(kept) >= max(cfg.min_shot_frames, 2):
            sel[kept] = True
    if not sel.any():
        raise ValueError(f"{path.name}: no face shot of at least {cfg.min_shot_frames} frames")
    idx, boxes, shots = idx[sel], boxes[sel], shots[sel]
    _, shots = np.unique(shots, return_inverse=True)  # renumber 0..n-1
    if cfg.crop_mode == "fixed":
        for s in np.unique(shots):
            m = shots == s
            cx, cy = np.median(boxes[m, :2] + boxes[m, 2:3] / 2, axis=0)
            side = float(np.median(boxes[m, 2]))
            boxes[m] = [cx - side / 2, cy - side / 2, side]
    boxes = np.round(boxes).astype(np.int64)

    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    n, s = len(idx), cfg.size
    frames_mm = np.memmap(tmp_dir / FRAMES_FILE, np.uint8, mode="w+", shape=(n, s, s, 3))
    landmarks = np.zeros((n, NUM_LANDMARKS, 3), np.float32)
    pose = np.zeros((n, 3), np.float32)
    for j, (i, (x0, y0, side)) in enumerate(zip(idx, boxes)):
        box = CropBox(int(x0), int(y0), int(side))
        frames_mm[j] = crop_face(frames[i], box, s)
        ob = observations[i]
        assert ob is not None
        scale = s / box.size
        landmarks[j] = (ob.landmarks - np.array([box.x0, box.y0, 0], np.float32)) * scale
        pose[j] = (ob.yaw, ob.pitch, ob.roll)
    frames_mm.flush()
    del frames_mm
    np.savez(tmp_dir / META_FILE, frame_index=idx.astype(np.int32), shot=shots.astype(np.int32),
             box=boxes.astype(np.int32), landmarks=landmarks, pose=pose)
    info = {"version": FORMAT_VERSION, "source": path.name, "source_bytes": path.stat().st_size,
            "num_frames": int(n), "size": s, "fps": fps, "crop_mode": cfg.crop_mode,
            "frame_step": cfg.frame_step, "num_shots": int(shots.max() + 1),
            "synthetic_motion": _still_settings(path, cfg),
            "pose_convention": "adasr.faces tracker: yaw>0 nose to image right, pitch>0 down, roll>0 CCW",
            "landmarks": "crop pixels (x, y), z = mediapipe depth in the same scale"}
    (tmp_dir / DONE_FILE).write_text(json.dumps(info, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    return n, len(frames) - n


def prepare(inputs: Sequence[Path], out_dir: Path, size: int = 256, config: PrepareConfig | None = None,
            progress: bool = True) -> PrepareSummary:
    """Prepare every clip and still of ``inputs`` (files or directories) into ``out_dir/<file stem>/``.

    Resumable: clips whose ``meta.json`` matches the settings are skipped. Unreadable files are
    skipped with a warning and listed in the summary.
    """
    cfg = config or PrepareConfig()
    cfg = PrepareConfig(**{**cfg.__dict__, "size": size})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PrepareSummary()
    bar = tqdm(find_inputs(inputs), desc="prepare", unit="clip", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.name)
        clip_dir = out_dir / path.stem
        if path.is_file() and _clip_is_done(clip_dir, path, cfg):
            summary.skipped_done.append(path.stem)
            continue
        try:
            kept, dropped = prepare_clip(path, clip_dir, cfg)
        except (OSError, InputError) as exc:
            logger.warning("skipping unreadable %s: %s", path, exc)
            summary.unreadable.append(str(path))
            continue
        except ValueError as exc:
            logger.warning("skipping %s", exc)
            summary.no_face.append(path.stem)
            continue
        summary.prepared.append(path.stem)
        summary.frames_kept += kept
        summary.frames_dropped += dropped
    return summary


@dataclass
class PreparedClip:
    """One prepared clip, frames memory-mapped."""

    name: str
    frames: np.ndarray
    """[N, S, S, 3] uint8 (memmap)."""
    shot: np.ndarray
    """[N] shot id."""
    pose: np.ndarray
    """[N, 3] tracker yaw, pitch, roll in degrees (tracker convention)."""
    landmarks: np.ndarray
    """[N, 478, 3] landmarks in crop pixels."""


def load_clip(clip_dir: Path) -> PreparedClip:
    """Open a prepared clip (raises FileNotFoundError if it is not complete)."""
    clip_dir = Path(clip_dir)
    info = json.loads((clip_dir / DONE_FILE).read_text())
    n, s = int(info["num_frames"]), int(info["size"])
    frames = np.memmap(clip_dir / FRAMES_FILE, np.uint8, mode="r", shape=(n, s, s, 3))
    with np.load(clip_dir / META_FILE) as meta:
        return PreparedClip(clip_dir.name, frames, meta["shot"], meta["pose"], meta["landmarks"])


@dataclass
class AugmentConfig:
    """Augmentations applied identically to the source and driving frame of a pair."""

    flip: bool = True
    """Random horizontal flip (pose yaw and roll change sign with it)."""
    brightness: float = 0.1
    """Max relative brightness change (0 disables)."""
    contrast: float = 0.1
    """Max relative contrast change."""
    saturation: float = 0.1
    """Max relative saturation change."""
    channel_shuffle: float = 0.0
    """Probability of a random RGB channel permutation (same for both frames). With few training
    identities the decoder otherwise memorises their colours instead of taking them from the source
    (seen as a green sweater rendered navy on a held-out clip); permuting forces it to copy colour."""


def rig_pair(source_landmarks: np.ndarray, source_ratios: np.ndarray, driving_ratios: np.ndarray,
             size: int) -> dict[str, torch.Tensor]:
    """The expression rig's inputs for a same-person pair, the source frame as the portrait and as the driver's
    reference: ``rig_anchors`` [N, 2] from its landmarks (pixels of a ``size``² crop), ``rig_change`` [E]."""
    return {"rig_anchors": torch.from_numpy(anchors_from_landmarks(source_landmarks, size)),
            "rig_change": torch.from_numpy(ratio_change(source_ratios, driving_ratios, source_ratios))}


class PairDataset(Dataset):
    """Item i → (source, driving) frames of one shot of one clip, a pure function of (seed, i).

    Clips are drawn uniformly (as the official sampler draws one clip per identity), then a shot
    weighted by its length, then two distinct frames of it; a share ``identity_fraction`` of the pairs
    uses the source frame as the driving frame too, so the renderer learns to give the source back; a share
    ``expression_fraction`` takes, of ``expression_candidates`` frames of the shot, the one whose expression
    differs most from the source's (most frame pairs of a talking clip show nearly the same mouth and eyes).
    Returns a dict: ``source``, ``driving`` [3, S, S] float in [0, 1]; ``source_pose``,
    ``driving_pose`` [3] tracker degrees (yaw, pitch, roll; flipped with the image); ``regions``
    [1, S, S]: 1 on the mouth and eyes of either frame (``adasr.training.face_regions``);
    ``source_expression``, ``driving_expression`` [E]: the tracker's expression vectors
    (``adasr.expression_signal``; left and right swapped with a flip); ``source_landmarks``,
    ``driving_landmarks`` [478, 2]: the tracker's landmarks, normalised like the keypoints (−1 … 1 over the
    crop's pixel centres, x along the width), mirrored with a flip. With ``rig``, also the expression rig's inputs
    as the receiver makes them (``adasr.expression_rig``), the source frame standing for the portrait and the
    driver's reference alike: ``rig_anchors`` [N, 2] and ``rig_change`` [E].
    """

    def __init__(self, root: Path, clips: Sequence[str] | None = None, seed: int = 0,
                 augment: AugmentConfig | None = None, length: int = 1 << 30, identity_fraction: float = 0.0,
                 expression_fraction: float = 0.0, expression_candidates: int = 8, rig: bool = False) -> None:
        root = Path(root)
        augment = augment or AugmentConfig(flip=False, brightness=0, contrast=0, saturation=0)
        if rig and augment.flip:  # mirrored landmarks keep their indices: the rig's face axes would point up
            raise ValueError("the expression rig needs unmirrored landmarks: set augment.flip false")
        names = list(clips) if clips else sorted(p.name for p in root.iterdir() if (p / DONE_FILE).is_file())
        if not names:
            raise FileNotFoundError(f"no prepared clips in {root} (run `adasr prepare` first)")
        self.clips = [load_clip(root / n) for n in names]
        self.shots = [[np.flatnonzero(c.shot == s) for s in np.unique(c.shot)] for c in self.clips]
        self.seed = seed
        self.augment = augment
        self.length = length
        self.identity_fraction = identity_fraction
        self.expression_fraction = expression_fraction
        self.expression_candidates = expression_candidates
        self.expressions = [expression_features(c.landmarks) for c in self.clips]
        self.ratios = [raw_ratios(c.landmarks) for c in self.clips] if rig else None

    def __len__(self) -> int:
        return self.length

    def pair_indices(self, index: int) -> tuple[int, int, int, np.random.Generator]:
        """(clip, source frame, driving frame, rng for augmentation) of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        c = int(rng.integers(len(self.clips)))
        shots = self.shots[c]
        lengths = np.array([len(s) for s in shots], np.float64)
        members = shots[int(rng.choice(len(shots), p=lengths / lengths.sum()))]
        a, b = rng.choice(len(members), size=2, replace=False)
        candidates = rng.choice(len(members), size=min(self.expression_candidates, len(members)), replace=False)
        identity_draw, expression_draw = rng.random(2)
        if identity_draw < self.identity_fraction:
            b = a
        elif expression_draw < self.expression_fraction:
            expressions = self.expressions[c]
            distance = np.linalg.norm(expressions[members[candidates]] - expressions[members[a]], axis=-1)
            b = int(candidates[int(np.argmax(distance))])
        return c, int(members[a]), int(members[b]), rng

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c, i, j, rng = self.pair_indices(index)
        clip = self.clips[c]
        imgs = torch.from_numpy(np.stack([clip.frames[i], clip.frames[j]])).permute(0, 3, 1, 2).float() / 255
        pose = torch.from_numpy(np.stack([clip.pose[i], clip.pose[j]]).astype(np.float32))
        size = imgs.shape[-1]
        regions = torch.from_numpy(pair_region_map(clip.landmarks[i], clip.landmarks[j], size))
        expression = self.expressions[c][[i, j]]
        landmarks = torch.from_numpy(clip.landmarks[[i, j], :, :2] * (2.0 / (size - 1)) - 1.0)
        imgs, pose, regions, expression, landmarks = self._augment(imgs, pose, regions, expression, landmarks, rng)
        expression_t = torch.from_numpy(np.ascontiguousarray(expression))
        item = {"source": imgs[0], "driving": imgs[1], "source_pose": pose[0], "driving_pose": pose[1],
                "regions": regions, "source_expression": expression_t[0], "driving_expression": expression_t[1],
                "source_landmarks": landmarks[0], "driving_landmarks": landmarks[1]}
        if self.ratios is not None:
            item.update(rig_pair(clip.landmarks[i], self.ratios[c][i], self.ratios[c][j], size))
        return item

    def _augment(self, imgs: torch.Tensor, pose: torch.Tensor, regions: torch.Tensor, expression: np.ndarray,
                 landmarks: torch.Tensor, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]:
        aug = self.augment
        draws = rng.random(4)  # always draw the same count so items stay independent of the settings
        perm_draw, perm = rng.random(), rng.permutation(3)
        if aug.flip and draws[0] < 0.5:
            imgs, regions = imgs.flip(-1), regions.flip(-1)
            pose = pose * torch.tensor([-1.0, 1.0, -1.0])
            expression = mirrored(expression)
            landmarks = landmarks * torch.tensor([-1.0, 1.0])
        if aug.brightness:
            imgs = imgs * (1 + aug.brightness * (2 * draws[1] - 1))
        if aug.contrast:
            mean = imgs.mean(dim=(1, 2, 3), keepdim=True)
            imgs = (imgs - mean) * (1 + aug.contrast * (2 * draws[2] - 1)) + mean
        if aug.saturation:
            grey = luma(imgs)
            imgs = (imgs - grey) * (1 + aug.saturation * (2 * draws[3] - 1)) + grey
        if aug.channel_shuffle and perm_draw < aug.channel_shuffle:
            imgs = imgs[:, torch.from_numpy(perm)]
        return imgs.clamp(0, 1), pose, regions, expression, landmarks

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """Batch of training step ``step``: items step·B … step·B + B − 1, collated."""
        items = [self[step * batch_size + k] for k in range(batch_size)]
        return {key: torch.stack([it[key] for it in items]) for key in items[0]}
