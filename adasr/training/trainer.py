"""The training loop: AdaSR cross-quality mode and plain face-vid2vid mode, exactly resumable.

Exact resumption is by construction: the batch, its augmentation, the degradation and the
equivariance warp of step ``s`` are drawn from generators seeded with (seed, s), so the only
state to carry is the networks, the optimizers and the step. The global RNG states (torch, numpy,
python) are saved and restored as well, for any code that might use them.

One step (AdaSR, official-architecture.md §6):
    x_c = kp_detector(clean source); pose/δ of source and driving from he_estimator;
    x_s, x_d = R·x_c + t + δ; f_s = encode(degraded source)  (clean source in ``plain`` mode);
    prediction = render(f_s, x_s, x_d) → compared with the clean driving frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from adasr.checkpoint import check_archive, load_model, save_checkpoint
from adasr.config import ModelConfig, load_model_config
from adasr.discriminator import MultiScaleDiscriminator
from adasr.errors import CheckpointError, ConfigError
from adasr.keypoints import Motion, bins_to_degrees, transform_keypoints
from adasr.networks import AdaSRNetworks
from adasr.expression_rig import ExpressionRig, RigField
from adasr.generator import RenderOutput
from adasr.expression_signal import expression_features, raw_ratios
from adasr.training.data import DONE_FILE, PairDataset, load_clip, rig_pair
from adasr.training.face_regions import pair_region_map
from adasr.training.degradation import DegradationConfig, degrade
from adasr.training.distributed import Distributed, from_environment, shutdown, split_batch
from adasr.training.losses import (
    IdentityLoss,
    ImagePyramid,
    PerceptualLoss,
    RandomTransform,
    detail_energy_loss,
    discriminator_hinge_loss,
    equivariance_loss,
    expression_loss,
    feature_matching_loss,
    generator_gan_loss,
    head_pose_loss,
    keypoint_prior_loss,
    landmark_flow_loss,
    region_l1,
    ssim,
    tracker_to_model_pose,
)
from adasr.training.train_config import TrainConfig, losses_at, lr_factor
from adasr.training.weight_average import WeightAverage

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"

_Part = TypeVar("_Part")


@dataclass
class TrainResult:
    """What :func:`train` did."""

    step: int
    """Steps done in total (including resumed ones)."""
    seconds: float
    """Wall time of this call."""
    export_path: Path
    """Exported inference weights."""
    checkpoint_path: Path
    """Training checkpoint (networks, optimizers, step)."""
    last_losses: dict[str, float]
    """Losses of the last step."""
    val: dict[str, float] | None
    """Last validation PSNR (model and copy-source) if computed."""


#: What ``np.random.get_state()`` pickles to beyond plain values: an array, its dtype, numpy's array rebuilder.
_RNG_STATE_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np._core.multiarray._reconstruct]  # type: ignore[attr-defined]  # numpy 2 private, absent from stubs


def _step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, salt)."""
    mixed = np.random.SeedSequence([seed, step, salt]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def motion_of(networks: AdaSRNetworks, image: torch.Tensor,
              expression: torch.Tensor) -> tuple[Motion, torch.Tensor]:
    """Head-pose estimator outputs as a Motion, plus the angles [B, 3] (yaw, pitch, roll) in degrees.
    ``expression`` [B, E]: the tracker's expression vectors, used when the model has an expression mapper."""
    he = networks.he_estimator(image, expression if networks.cfg.he_estimator.expression_inputs else None)
    yaw, pitch, roll = (bins_to_degrees(a.float()) for a in (he.yaw, he.pitch, he.roll))
    motion = Motion(yaw, pitch, roll, he.t.float(), he.exp.float().view(image.shape[0], -1, 3))
    return motion, motion.pose_degrees()


class PairRender(NamedTuple):
    """One set of networks' render of a batch of pairs, with the motion that drove it (the losses read both)."""

    out: RenderOutput
    canonical: torch.Tensor
    kp_source: torch.Tensor
    kp_driving: torch.Tensor
    motion_source: Motion
    motion_driving: Motion
    angles: torch.Tensor
    """[2B, 3] degrees: the sources', then the drivings'."""


def render_pair(networks: AdaSRNetworks, b: dict[str, torch.Tensor], rig: RigField | None) -> PairRender:
    """The driving frames rendered from the sources (the generator fed ``generator_source`` when the batch has one:
    training's degraded source; keypoints always from the clean one), through the expression rig's field ``rig``."""
    x_c = networks.kp_detector(b["source"]).float()
    motion_s, angles_s = motion_of(networks, b["source"], b["source_expression"])
    motion_d, angles_d = motion_of(networks, b["driving"], b["driving_expression"])
    kp_s, kp_d = transform_keypoints(x_c, motion_s), transform_keypoints(x_c, motion_d)
    out = networks.generator(b.get("generator_source", b["source"]), kp_s, kp_d, rig)
    return PairRender(out, x_c, kp_s, kp_d, motion_s, motion_d, torch.cat([angles_s, angles_d]))


class Trainer:
    """Holds networks, optimizers, data and loss modules of one run."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig | None = None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.dist: Distributed = from_environment(self.device)
        if self.dist.enabled and self.device.type == "cuda":  # torchrun: one GPU per local rank
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if cfg.batch_size % (self.dist.world_size * cfg.micro_batches):
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible into {self.dist.world_size} ranks × "
                              f"{cfg.micro_batches} micro_batches")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model_cfg = model_cfg or load_model_config(cfg.model)
        torch.manual_seed(cfg.seed)
        self.networks = AdaSRNetworks(self.model_cfg).to(self.device)
        for name in cfg.frozen_modules:
            try:
                self.networks.get_submodule(name).requires_grad_(False)
            except AttributeError as exc:
                raise ConfigError(f"frozen_modules: the {self.model_cfg.name} networks have no module "
                                  f"{name!r}") from exc
        disc_cfg = self.model_cfg.discriminator
        if cfg.discriminator_scales:
            disc_cfg = dataclasses.replace(disc_cfg, scales=list(cfg.discriminator_scales))
        self.discriminator = MultiScaleDiscriminator(disc_cfg, self.model_cfg.image_channel).to(self.device)
        mapper = self.networks.he_estimator.expression_mapper
        mapper_ids = {id(p) for p in mapper.parameters()} if mapper is not None else set()
        gen_params = [p for p in self.networks.parameters() if p.requires_grad and id(p) not in mapper_ids]
        groups = [{"params": gen_params, "lr_factor": 1.0}]
        if mapper is not None:
            groups.append({"params": list(mapper.parameters()), "lr_factor": cfg.expression_mapper_lr_factor})
        self.opt_g = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_discriminator, betas=cfg.betas)
        self.perceptual = PerceptualLoss(cfg.losses).to(self.device)
        self.identity = IdentityLoss(cfg.losses).to(self.device) if cfg.losses.identity else None
        self.disc_pyramid = ImagePyramid(tuple(disc_cfg.scales))
        deg = DegradationConfig.from_yaml(cfg.degradation_config) if cfg.degradation_config \
            else DegradationConfig()
        if cfg.degradation_mode:
            deg = DegradationConfig.from_dict({**deg.to_dict(), "mode": cfg.degradation_mode})
        self.degradation = deg
        data_dir = Path(cfg.data_dir)
        train_clips = cfg.train_clips or sorted(
            p.name for p in data_dir.iterdir() if (p / DONE_FILE).is_file() and p.name not in cfg.val_clips)
        self.train_clips = train_clips
        self.dataset = PairDataset(data_dir, train_clips, seed=cfg.seed, augment=cfg.augment,
                                   identity_fraction=cfg.identity_pair_fraction,
                                   expression_fraction=cfg.expression_pair_fraction,
                                   expression_candidates=cfg.expression_candidates, rig=cfg.expression_rig)
        self.rig = ExpressionRig().to(self.device) if cfg.expression_rig else None
        self.blend_teacher: AdaSRNetworks | None = None
        """Frozen networks whose source-blend mask the trained one's is held up to (``losses.blend_floor``). In train
        mode like the student (batch statistics, the same normalisation of the same batch); never saved."""
        if cfg.losses.blend_floor:
            blends = self.networks.generator.blend_source
            if not cfg.blend_teacher or not blends:
                raise ConfigError(f"losses.blend_floor needs blend_teacher and a model with the source blend (the "
                                  f"{self.model_cfg.name} preset's blend_source: {blends})")
            teacher = load_model(Path(cfg.blend_teacher)).networks  # its own architecture (a slimmer student's is not)
            if not teacher.generator.blend_source:
                raise ConfigError(f"blend_teacher {cfg.blend_teacher} has no source blend to hold the mask up to")
            self.blend_teacher = teacher.to(self.device).train().requires_grad_(False)
        self.val_batch = self._validation_batch(data_dir) if cfg.val_clips else None
        self.weight_average: WeightAverage | None = None
        """The validated and exported weights when ``cfg.ema_decay`` is on, from step ``cfg.ema_start``."""
        self.step = 0
        self.amp = cfg.amp and self.device.type == "cuda"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "networks": self.networks.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "sampler": {"seed": self.cfg.seed, "next_step": self.step},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
            "config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.weight_average is not None:
            state["weight_average"] = self.weight_average.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.networks.load_state_dict(state["networks"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.weight_average = None
        if "weight_average" in state and self.cfg.ema_decay:
            self.weight_average = WeightAverage(self.networks, self.cfg.ema_decay)
            self.weight_average.load_state_dict(state["weight_average"])
        elif self.cfg.ema_decay and self.step > self.cfg.ema_start:
            logger.info("the checkpoint holds no weight average: it starts from the weights of step %d", self.step)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save(self, path: Path) -> Path:
        """Atomic write: a temporary file in the same directory, then rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def load(self, path: Path) -> None:
        """Resume from ``path`` with weights_only: a crafted run directory must not run code. The numpy RNG
        state is the only thing beyond tensors and plain values, and its three types are all that is allowed."""
        check_archive(path)
        try:
            with torch.serialization.safe_globals(_RNG_STATE_GLOBALS):
                state = torch.load(path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path}: holds Python objects beyond a training state, refused (weights_only): "
                                  f"{str(exc).splitlines()[0][:200]}") from exc
        self.load_state_dict(state)

    def export(self, path: Path) -> Path:
        """Inference weights in our checkpoint format (config included)."""
        extra = {"training": {"step": self.step, "mode": self.cfg.mode, "seed": self.cfg.seed,
                              "train_clips": self.train_clips, "val_clips": list(self.cfg.val_clips),
                              "degradation_mode": self.degradation.mode}}
        was_training = self.networks.training
        with self.averaged_weights():
            self.networks.cpu()
            try:
                return save_checkpoint(path, self.networks, extra)
            finally:
                self.networks.to(self.device)
                self.networks.train(was_training)

    def averaged_weights(self) -> contextlib.AbstractContextManager[Any]:
        """The networks hold the weights that are validated and exported inside the block: the moving
        average once it runs, else the current ones."""
        if self.weight_average is None:
            return contextlib.nullcontext(self.networks)
        return self.weight_average.applied(self.networks)

    def _update_weight_average(self, step: int) -> None:
        """After the optimiser step of ``step``: start the average at ``ema_start`` (or on the first step of
        a resumed run whose checkpoint holds none), move it afterwards."""
        if not self.cfg.ema_decay or step < self.cfg.ema_start:
            return
        if self.weight_average is None:
            self.weight_average = WeightAverage(self.networks, self.cfg.ema_decay)
        else:
            self.weight_average.update(self.networks)

    # ------------------------------------------------------------------ one step
    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's share of the global batch of ``step`` on the device, plus the generator's (possibly
        degraded) source. The global batch and its degradation are drawn whole, so they do not depend on
        the number of ranks."""
        b = self.dataset.batch(step, self.cfg.batch_size)
        if self.cfg.mode == "adasr":
            gen = _step_generator(self.cfg.seed, step, 1)
            degraded = degrade(b["source"], gen, self.degradation)
            clean = torch.rand(len(degraded), generator=_step_generator(self.cfg.seed, step, 3)) \
                < self.cfg.clean_source_fraction
            b["generator_source"] = torch.where(clean[:, None, None, None], b["source"], degraded)
        else:
            b["generator_source"] = b["source"]
        return {k: v.to(self.device) for k, v in self.dist.shard(b).items()}

    def forward(self, b: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                      dict[str, torch.Tensor]]:
        """Generator-side forward: total loss, loss terms, and tensors for the discriminator/samples."""
        w = losses_at(self.cfg, step)
        nets = self.networks
        rig = self.rig_field(b)
        pair = render_pair(nets, b, rig)
        x_c, kp_s, kp_d = pair.canonical, pair.kp_source, pair.kp_driving
        prediction = pair.out.prediction.float()
        target = b["driving"]
        terms: dict[str, torch.Tensor] = {}
        if w.blend_floor:
            terms["blend_floor"] = w.blend_floor * self._blend_deficit(b, rig, pair.out.blend_mask)
        if w.reconstruction:
            terms["reconstruction"] = w.reconstruction * (prediction - target).abs().mean()
        if w.expression_regions:
            terms["expression_regions"] = w.expression_regions * region_l1(prediction, target, b["regions"])
        if w.landmark_flow:
            terms["landmark_flow"] = w.landmark_flow * landmark_flow_loss(
                kp_s, kp_d, b["source_landmarks"], b["driving_landmarks"], w.landmark_flow_sigma)
        if w.ssim:
            terms["ssim"] = w.ssim * (1 - ssim(prediction, target))
        if w.detail_energy:
            terms["detail_energy"] = w.detail_energy * detail_energy_loss(prediction, target)
        if w.perceptual:
            terms["perceptual"] = w.perceptual * self.perceptual(prediction, target)
        if self.identity is not None:
            terms["identity"] = w.identity * self.identity(prediction, target)
        gan_on = self._gan_on(step)
        if gan_on:
            fake = self.discriminator(self.disc_pyramid(prediction))
            with torch.no_grad():
                real = self.discriminator(self.disc_pyramid(target))
            if w.gan:
                terms["gan"] = w.gan * generator_gan_loss(fake)
            if w.feature_matching:
                terms["feature_matching"] = w.feature_matching * feature_matching_loss(real, fake)
        if w.equivariance:
            tf = RandomTransform(target.shape[0], self.cfg.transform, _step_generator(self.cfg.seed, step, 2),
                                 self.device)
            motion_t, _ = motion_of(nets, tf.transform_frame(target), b["driving_expression"])  # ratios: unmoved
            terms["equivariance"] = w.equivariance * equivariance_loss(kp_d, transform_keypoints(x_c, motion_t), tf)
        if w.keypoint_prior:
            terms["keypoint_prior"] = w.keypoint_prior * keypoint_prior_loss(kp_d)
        if w.head_pose:
            teacher = tracker_to_model_pose(torch.cat([b["source_pose"], b["driving_pose"]]))
            terms["head_pose"] = w.head_pose * head_pose_loss(pair.angles, teacher)
        if w.expression:
            terms["expression"] = w.expression * (expression_loss(pair.motion_source.delta)
                                                  + expression_loss(pair.motion_driving.delta)) / 2
        total = sum(terms.values(), prediction.new_zeros(()))
        return total, terms, {"prediction": prediction}

    def _gan_on(self, step: int) -> bool:
        """Whether the generator's adversarial and feature-matching terms count at ``step``."""
        w = losses_at(self.cfg, step)
        return step >= self.cfg.gan_start_step and (w.gan > 0 or w.feature_matching > 0)

    def _discriminator_on(self, step: int) -> bool:
        """Whether the discriminator trains at ``step``: from its warm-up before the GAN starts."""
        return self._gan_on(step + self.cfg.discriminator_warmup)

    def train_step(self) -> dict[str, float]:
        """One optimisation step of the generator side, then of the discriminator, each over this rank's
        ``micro_batches`` parts of the batch (gradients averaged over parts, then over ranks)."""
        step = self.step
        self.networks.train()
        self.discriminator.train()
        factor = lr_factor(self.cfg.lr_schedule, step)
        for opt, base in ((self.opt_g, self.cfg.lr), (self.opt_d, self.cfg.lr_discriminator)):
            for group in opt.param_groups:
                group["lr"] = base * factor * group.get("lr_factor", 1.0)
        b = self.batch(step)
        parts = split_batch(b, self.cfg.micro_batches)
        self.opt_g.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        predictions = []
        for part in _from_the_same_buffers((self.networks, self.discriminator), parts):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                total, terms, out = self.forward(part, step)
            (total / len(parts)).backward()
            for k, v in {**terms, "total": total}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            predictions.append(out["prediction"].detach())
        self.dist.average_gradients(self.networks)
        self.opt_g.step()
        logs = {k: v / len(parts) for k, v in sums.items()}
        logs["lr"] = self.cfg.lr * factor
        if self._discriminator_on(step):
            self.discriminator.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d_sum = 0.0
            for part, prediction in _from_the_same_buffers((self.discriminator,), list(zip(parts, predictions))):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    real = self.discriminator(self.disc_pyramid(part["driving"]))
                    fake = self.discriminator(self.disc_pyramid(prediction))
                    loss_d = discriminator_hinge_loss(real, fake)
                (loss_d / len(parts)).backward()
                loss_d_sum += float(loss_d.detach())
            self.dist.average_gradients(self.discriminator)
            self.opt_d.step()
            logs["discriminator"] = loss_d_sum / len(parts)
        self.dist.broadcast_buffers(self.networks)
        self.dist.broadcast_buffers(self.discriminator)
        self._update_weight_average(step)
        self.step += 1
        self._last = (b, torch.cat(predictions))
        return logs

    def _blend_deficit(self, b: dict[str, torch.Tensor], rig: RigField | None,
                       mask: torch.Tensor | None) -> torch.Tensor:
        """How far the source blend's mask falls below the teacher's (``blend_teacher``) on the same pairs, through
        the same rig: the mean of max(0, teacher − mask). Fine-tuning lowered it everywhere, and a lower mask is a
        blurrier frame (the decoded picture stands in for the photo); where the photo fits better it may rise."""
        assert self.blend_teacher is not None and mask is not None  # both checked when the trainer was built
        with torch.no_grad():
            teacher_mask = render_pair(self.blend_teacher, b, rig).out.blend_mask
        assert teacher_mask is not None
        return torch.relu(teacher_mask.float() - mask.float()).mean()

    def rig_field(self, b: dict[str, torch.Tensor]) -> RigField | None:
        """The expression rig's field for a batch that carries its inputs (``rig_anchors``, ``rig_change``)."""
        return None if self.rig is None else self.rig(b["rig_anchors"], b["rig_change"])

    # ------------------------------------------------------------------ validation and samples
    def _validation_batch(self, data_dir: Path) -> dict[str, torch.Tensor]:
        """Fixed same-identity pairs: each val clip's first frame drives from evenly spaced frames (with their
        expression vectors and mouth-and-eye regions)."""
        sources, drivings, expressions, regions = [], [], [], []
        rig_pairs: list[dict[str, torch.Tensor]] = []
        for name in self.cfg.val_clips:
            clip = load_clip(data_dir / name)
            first = np.flatnonzero(clip.shot == clip.shot[0])
            count = self.cfg.val_pairs_per_clip
            picks = (np.arange(1, len(first)) if count <= 0 or count >= len(first) - 1
                     else np.linspace(1, len(first) - 1, count).round().astype(int))
            features = expression_features(clip.landmarks)
            ratios = raw_ratios(clip.landmarks) if self.rig is not None else None
            size = clip.frames.shape[1]
            for j in picks:
                sources.append(clip.frames[first[0]])
                drivings.append(clip.frames[first[j]])
                expressions.append(features[[first[0], first[j]]])
                regions.append(pair_region_map(clip.landmarks[first[0]], clip.landmarks[first[j]], size))
                if ratios is not None:
                    rig_pairs.append(rig_pair(clip.landmarks[first[0]], ratios[first[0]], ratios[first[j]], size))

        def to_t(frames: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255

        pair_expressions = torch.from_numpy(np.stack(expressions))
        batch = {"source": to_t(sources), "driving": to_t(drivings), "source_expression": pair_expressions[:, 0],
                 "driving_expression": pair_expressions[:, 1], "regions": torch.from_numpy(np.stack(regions))}
        if self.rig is not None:
            batch.update({key: torch.stack([pair[key] for pair in rig_pairs]) for key in rig_pairs[0]})
        return batch

    @torch.no_grad()
    def validation_frames(self, chunk: int = 8) -> torch.Tensor:
        """The model's frames [N, 3, S, S] of the validation pairs (sharp source, eval mode, the validated weights),
        in [0, 1] on the CPU."""
        assert self.val_batch is not None
        vb = self.val_batch
        preds = []
        with self.averaged_weights() as nets:
            nets.eval()
            for i in range(0, len(vb["source"]), chunk):
                part = {k: v[i:i + chunk].to(self.device) for k, v in vb.items()}
                preds.append(render_pair(nets, part, self.rig_field(part)).out.prediction.float().clamp(0, 1).cpu())
            nets.train()
        return torch.cat(preds)

    def validate(self, chunk: int = 8) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM of the model (sharp source, eval mode) and of copying the source: the
        still photo is the bar a held-out face must beat; and the mean error on the mouth and eyes alone, where a
        still photo is wrong when the expression changes."""
        return self.validation_scores(self.validation_frames(chunk))

    def validation_scores(self, pred: torch.Tensor) -> dict[str, float]:
        """``validate``'s figures for frames ``validation_frames`` rendered."""
        assert self.val_batch is not None
        vb = self.val_batch
        drv, src = vb["driving"], vb["source"]
        return {"psnr_model": _psnr(pred, drv), "psnr_copy_source": _psnr(src, drv),
                "ssim_model": float(ssim(pred, drv)), "ssim_copy_source": float(ssim(src, drv)),
                "regions_l1_model": float(region_l1(pred, drv, vb["regions"])),
                "regions_l1_copy_source": float(region_l1(src, drv, vb["regions"]))}

    def write_samples(self, path: Path, count: int = 4) -> Path:
        """PNG grid, one row per sample: source, degraded source, driving, output."""
        b, pred = self._last
        rows = []
        for i in range(min(count, pred.shape[0])):
            tiles = [b["source"][i], b["generator_source"][i], b["driving"][i], pred[i].clamp(0, 1)]
            rows.append(torch.cat([t.float().cpu() for t in tiles], dim=2))
        grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        import cv2

        cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        return path


def _from_the_same_buffers(modules: tuple[torch.nn.Module, ...], parts: list[_Part]) -> Iterator[_Part]:
    """``parts`` one by one, each run from the modules' buffers as they were before the first (BatchNorm
    running statistics, spectral-norm power-iteration vectors); afterwards the first part's updates are
    kept. So micro-batches leave what ranks leave: every rank starts the step from the same buffers and
    rank 0's are broadcast. (Run one after another instead, the spectral-norm vectors would take one
    power iteration per part, and the later parts' normalised weights would differ.)"""
    buffers = [buf for module in modules for buf in module.buffers()]
    start = [buf.clone() for buf in buffers] if len(parts) > 1 else []
    first: list[torch.Tensor] = []
    for i, part in enumerate(parts):
        if i == 1:
            first = [buf.clone() for buf in buffers]
        if i:
            for buf, value in zip(buffers, start):
                buf.copy_(value)
        yield part
    for buf, value in zip(buffers, first):
        buf.copy_(value)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR in dB (images in [0, 1])."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def _outermost(modules: set[str]) -> list[str]:
    """Module names without those inside another listed one, sorted: what a log line should name."""
    return sorted(m for m in modules if not any(m.startswith(other + ".") for other in modules))


def init_from(networks: AdaSRNetworks, path: Path) -> None:
    """Load an inference checkpoint into ``networks``: every tensor both have must fit in shape; parts the
    configured model adds keep their fresh initialisation and parts it dropped are skipped (both logged)."""
    loaded = load_model(path).networks.state_dict()
    own = networks.state_dict()
    misfits = [k for k, v in loaded.items() if k in own and own[k].shape != v.shape]
    if misfits:
        raise CheckpointError(f"{path} does not fit the configured model: {', '.join(misfits[:4])}"
                              + (f" … {len(misfits) - 4} more" if len(misfits) > 4 else ""))
    networks.load_state_dict({k: v for k, v in loaded.items() if k in own}, strict=False)
    fresh = _outermost({k.rsplit(".", 2)[0] for k in own if k not in loaded})
    dropped = _outermost({k.rsplit(".", 2)[0] for k in loaded if k not in own})
    logger.info("initialised from %s%s%s", path, f"; new, freshly initialised: {', '.join(fresh)}" if fresh else "",
                f"; not in this model, skipped: {', '.join(dropped)}" if dropped else "")


def train(cfg: TrainConfig, resume: bool = False, steps: int | None = None, init: Path | None = None,
          progress: bool = True, model_cfg: ModelConfig | None = None) -> TrainResult:
    """Run (or resume) training up to ``steps`` (default ``cfg.steps``) total steps.

    ``resume``: continue from ``run_dir/checkpoint.pt`` when it exists. ``init``: start from the
    weights of an inference checkpoint (ours or official; ignored when resuming); parts the configured
    model adds to it (lite's detail path) keep their fresh initialisation. Under torchrun every rank
    trains on its share of each batch; rank 0 alone logs, validates, samples and writes files.
    """
    start = time.time()
    total_steps = cfg.steps if steps is None else steps
    trainer = Trainer(cfg, model_cfg)
    main = trainer.dist.is_main
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    export_path = Path(cfg.export_path)
    if resume and ckpt_path.is_file():
        trainer.load(ckpt_path)
        logger.info("resumed %s at step %d", ckpt_path, trainer.step)
    elif init is not None:
        init_from(trainer.networks, init)
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb")) if main else None
    except ImportError:  # tensorboard is the optional `train` extra
        logger.warning("tensorboard not installed; no TensorBoard logs")
    logs: dict[str, float] = {}
    val: dict[str, float] | None = None
    bar = tqdm(total=total_steps, initial=trainer.step, desc="train", unit="step", disable=not (progress and main),
               dynamic_ncols=True)
    try:
        while trainer.step < total_steps:
            t0 = time.time()
            logs = trainer.train_step()
            if not all(math.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"non-finite loss at step {trainer.step - 1}: {logs}")
            step = trainer.step
            logs["seconds_per_step"] = time.time() - t0
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("total", "reconstruction",
                                                                              "perceptual", "gan")})
            if writer is not None and (step % cfg.log_every == 0 or step == total_steps):
                for k, v in logs.items():
                    writer.add_scalar(f"train/{k}", v, step)
            if not main:
                continue
            if cfg.val_every and trainer.val_batch is not None and (step % cfg.val_every == 0
                                                                     or step == total_steps):
                val = trainer.validate()
                logger.info("step %d validation %s", step, {k: round(v, 3) for k, v in val.items()})
                if writer is not None:
                    for k, v in val.items():
                        writer.add_scalar(f"val/{k}", v, step)
            if cfg.sample_every and step % cfg.sample_every == 0:
                trainer.write_samples(run_dir / "samples" / f"step_{step:06d}.png")
            if step % cfg.checkpoint_every == 0 or step == total_steps:
                trainer.save(ckpt_path)
            if (cfg.export_every and step % cfg.export_every == 0) or step == total_steps:
                trainer.export(export_path)
            if step % cfg.log_every == 0:
                logger.info("step %d %s", step, {k: float(f"{v:.4g}") for k, v in logs.items()})
        trainer.dist.barrier()  # no rank leaves while rank 0 still writes
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        shutdown()
    return TrainResult(trainer.step, time.time() - start, export_path, ckpt_path, logs, val)
