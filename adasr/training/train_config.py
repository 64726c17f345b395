"""Training configuration (``configs/train_lite.yaml``): one dataclass tree, unknown keys rejected.

Relative paths in it (data, run and export folders, model and degradation YAML) are relative to the
current directory, as every path on the command line is: the shipped ``configs/train_lite.yaml`` is run
from the checkout's root, and ``--run-dir``/``--export`` overrides mean the same thing as its keys.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adasr.dataclass_io import build_dataclass, to_plain
from adasr.errors import ConfigError
from adasr.training.data import AugmentConfig
from adasr.training.losses import LossWeights, TransformConfig


@dataclass
class LrCycle:
    """One cosine segment of the learning-rate schedule, from ``peak_factor``·lr at ``start`` down to
    ``final_factor``·lr at ``end`` (and flat after it until the next cycle). Small, noisy batches settle
    into a minimum instead of wandering around it (validation PSNR swings by ~1.5 dB at a constant
    rate); a later cycle with a lower peak is a warm restart for a resumed run."""

    start: int = 0
    end: int = 0
    peak_factor: float = 1.0
    final_factor: float = 0.05

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rates at ``step`` inside this cycle."""
        progress = min(max((step - self.start) / (self.end - self.start), 0.0), 1.0)
        return self.final_factor + (self.peak_factor - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(schedule: list[LrCycle], step: int) -> float:
    """Multiplier of the base learning rates at ``step``: 1 before the first cycle, then the cycle that
    began last. A function of the step alone, so a resumed run follows the same curve."""
    begun = [cycle for cycle in schedule if cycle.start <= step]
    return begun[-1].factor(step) if begun else 1.0


#: Loss weights a stage may change: every term whose module is built whatever its weight (the SFace identity
#: network is loaded only when ``losses.identity`` starts above zero).
STAGED_LOSSES = ("reconstruction", "ssim", "detail_energy", "expression_regions", "perceptual", "gan",
                 "feature_matching", "equivariance", "keypoint_prior", "head_pose", "expression")


@dataclass
class LossStage:
    """From step ``start`` on, these loss weights replace those of the ``losses`` section and of earlier
    stages: a recipe whose weights changed along the way replays from one file, resumed or not."""

    start: int = 0
    losses: dict[str, float] = field(default_factory=dict)


def losses_at(cfg: TrainConfig, step: int) -> LossWeights:
    """The loss weights in force at ``step``: ``losses`` with every begun stage's changes applied in order."""
    weights = cfg.losses
    for stage in cfg.loss_stages:
        if stage.start <= step:
            changes: dict[str, Any] = dict(stage.losses)  # names checked against STAGED_LOSSES on loading
            weights = dataclasses.replace(weights, **changes)
    return weights


@dataclass
class TrainConfig:
    """Everything a training run depends on; relative paths are relative to the current directory."""

    model: str = "lite"
    """Model preset name or model YAML (adasr.config.load_model_config)."""
    data_dir: str = "runs/data/lite256"
    """Output directory of ``adasr prepare`` (one sub-directory per clip)."""
    train_clips: list[str] = field(default_factory=list)
    """Clip names to train on; empty: every prepared clip not in ``val_clips``."""
    val_clips: list[str] = field(default_factory=list)
    """Whole clips held out for validation."""
    clean_source_fraction: float = 0.0
    """In ``adasr`` mode, share of sources that reach the encoder undegraded: the renderer then learns to
    carry detail through when the source has it, and to restore it when it has not."""
    identity_pair_fraction: float = 0.0
    """Share of training pairs whose driving frame is the source frame itself (identity motion)."""
    expression_pair_fraction: float = 0.0
    """Share of the other pairs whose driving frame is, of ``expression_candidates`` frames of the shot, the one
    whose mouth and eyes differ most from the source's (``adasr.training.data.PairDataset``)."""
    expression_candidates: int = 8
    """Frames looked at for each such pair."""
    expression_mapper_lr_factor: float = 1.0
    """The expression mapper's learning rate as a multiple of ``lr`` (a fresh network beside trained ones)."""
    frozen_modules: list[str] = field(default_factory=list)
    """Modules of the networks (dotted names, e.g. ``generator.decoder``) whose weights stay as ``--init`` gave them:
    a fine-tune that must not move them."""
    expression_rig: bool = False
    """Render training pairs through the expression rig (``adasr.expression_rig``), as the receiver does: the
    networks learn around the rig's moved lips and lids instead of being asked to move them. Needs
    ``augment.flip`` off (mirrored landmarks keep their indices)."""
    blend_teacher: str | None = None
    """Weights (our checkpoint format) whose source-blend mask ``losses.blend_floor`` holds the trained one's up to,
    usually the ``--init`` weights: a path, not the run's start, so a resumed run holds the same mask."""
    run_dir: str = "runs/train_lite"
    """Training checkpoint, TensorBoard logs and sample grids."""
    export_path: str = "weights/adasr-lite.pth"
    """Where the inference weights (our checkpoint format) are exported."""
    mode: Literal["adasr", "plain"] = "adasr"
    """``adasr``: degraded source into the generator, keypoints from the clean source; ``plain``: clean."""
    degradation_config: str | None = None
    """DegradationConfig YAML (None: its defaults, which the shipped ``configs/degradation.yaml`` spells out)."""
    degradation_mode: Literal["realesrgan", "half"] | None = None
    """Overrides the YAML's ``mode`` when set."""
    seed: int = 0
    """Seeds the weights, the pair sampler, the degradation and the equivariance warps."""
    batch_size: int = 4
    micro_batches: int = 1
    """Gradient accumulation: each rank's share of a batch in this many equal parts, one forward/backward
    each, gradients averaged before the step — the memory of one part. The result is exactly that of that
    many times more ranks (BatchNorm batch statistics are per part, as they are per rank)."""
    steps: int = 2000
    """Total optimisation steps of the run (``--steps`` overrides)."""
    lr: float = 2e-4
    """Adam learning rate of generator + kp detector + head-pose estimator."""
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: list[LrCycle] = field(default_factory=list)
    """Cosine cycles in step order (empty: constant learning rates)."""
    discriminator_scales: list[float] | None = None
    """Image scales of the multi-scale patch discriminator (e.g. [1, 0.5]); None: the model config's
    ``discriminator.scales``. Training-only, so the exported model is unaffected."""
    gan_start_step: int = 0
    """GAN and feature-matching terms start at this step: a reconstruction-only warm-up gives quick PSNR
    gains on a small budget."""
    discriminator_warmup: int = 0
    """The discriminator alone trains (real vs generated frames) this many steps before ``gan_start_step``,
    so the generator's first adversarial gradients come from a critic that has learnt something (a fresh
    one's features are noise, and feature matching against them pulls toward noise)."""
    ema_decay: float = 0.0
    """Validate and export an exponential moving average of the generator side's weights with this decay
    (e.g. 0.99: about the last 100 steps; 0: off, the weights of the last step)."""
    ema_start: int = 0
    """The average starts as the weights after this step: a stage that adds it to a resumed recipe replays."""
    checkpoint_every: int = 100
    """Training checkpoint (networks, optimizers, step, RNG states) interval, in steps."""
    export_every: int = 100
    """Export interval of the inference weights to ``export_path`` (0: only at the end)."""
    sample_every: int = 100
    """Sample grid PNG interval (0: never)."""
    log_every: int = 10
    """TensorBoard scalar interval."""
    val_every: int = 200
    """Validation PSNR (model vs copy-source) interval (0: never)."""
    val_pairs_per_clip: int = 8
    """Driving frames per validation clip, evenly spaced (source: the clip's first prepared frame);
    0: every frame, the evaluation protocol (slow on a CPU; 8 pairs are a noisy estimate)."""
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``…"""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    loss_stages: list[LossStage] = field(default_factory=list)
    """Changes of loss weights from given steps on, in step order (:class:`LossStage`)."""
    transform: TransformConfig = field(default_factory=TransformConfig)

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], to_plain(self))


def train_config_from_dict(data: dict[str, Any], where: str = "train config") -> TrainConfig:
    """Build a TrainConfig from a mapping (missing keys keep defaults; unknown keys are an error)."""
    cfg = build_dataclass(TrainConfig, data, where)
    overlap = sorted(set(cfg.train_clips) & set(cfg.val_clips))
    if overlap:
        raise ConfigError(f"{where}: clips both in train_clips and val_clips: {overlap}")
    if cfg.micro_batches < 1 or cfg.batch_size % cfg.micro_batches:
        raise ConfigError(f"{where}: batch_size {cfg.batch_size} is not divisible into micro_batches "
                          f"{cfg.micro_batches}")
    if cfg.expression_rig and cfg.augment.flip:
        raise ConfigError(f"{where}: expression_rig needs augment.flip false (mirrored landmarks keep their indices, "
                          "so the rig's face axes would point up)")
    if cfg.losses.blend_floor and not cfg.blend_teacher:
        raise ConfigError(f"{where}: losses.blend_floor needs blend_teacher (the weights whose source-blend mask to "
                          "hold the trained one's up to)")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"{where}: ema_decay must lie in [0, 1), got {cfg.ema_decay}")
    previous_end = 0
    for i, cycle in enumerate(cfg.lr_schedule):
        if not (previous_end <= cycle.start < cycle.end and cycle.peak_factor > 0 and cycle.final_factor > 0):
            raise ConfigError(f"{where}: lr_schedule[{i}] needs start < end, cycles in step order without overlap "
                              f"and positive factors, got {cycle}")
        previous_end = cycle.end
    previous_start = -1
    for i, stage in enumerate(cfg.loss_stages):
        unknown = sorted(set(stage.losses) - set(STAGED_LOSSES))
        if stage.start <= previous_start or unknown or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in stage.losses.values()):
            raise ConfigError(f"{where}: loss_stages[{i}] needs stages in step order and non-negative weights of "
                              f"{', '.join(STAGED_LOSSES)}; got {stage}")
        stage.losses = {k: float(v) for k, v in stage.losses.items()}
        previous_start = stage.start
    return cfg


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read training config ({exc})") from exc
    return train_config_from_dict(doc or {}, str(path))
