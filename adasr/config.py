"""Model configuration: one dataclass tree, loaded from a preset name, our YAML, or an official YAML.

YAML holds numbers; code holds structure. Unknown keys are errors (a misspelt option must not pass
silently). Every width the released code hard-codes is a field here, with the released value as
its default, so the official configuration is simply ``ModelConfig()``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adasr import resources
from adasr.dataclass_io import build_dataclass, to_plain
from adasr.errors import ConfigError
from adasr.expression_signal import NUM_FEATURES

CONFIG_DIR = resources.config_dir()
#: Bounds of image_size: below, the networks have no room for their down-sampling; above, one frame
#: already asks for gigabytes (the released model is 512).
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 2048


@dataclass
class KPDetectorConfig:
    """Canonical 3-D keypoint detector (x_c): 2-D encoder, lift to 3-D, 3-D decoder, soft-argmax."""

    temperature: float = 0.1
    """Softmax temperature of the keypoint heatmaps."""
    block_expansion: int = 32
    """Base width; block i has min(max_features, block_expansion·2^(i+1)) channels."""
    max_features: int = 1024
    """Width cap of the hourglass."""
    scale_factor: float = 0.25
    """Anti-aliased downscale of the input before the hourglass."""
    num_blocks: int = 5
    """Down (2-D) and up (3-D) blocks."""
    reshape_channel: int = 16384
    """Channels of the 1×1 lift conv: (2-D width at the bottom)·reshape_depth."""
    reshape_depth: int = 16
    """Depth of the lifted 3-D volume."""


@dataclass
class HEEstimatorConfig:
    """Head pose (66-bin yaw/pitch/roll), translation t and expression δ (Hopenet-like ResNet)."""

    block_expansion: int = 64
    """Stem width (7×7 conv)."""
    max_features: int = 2048
    """Kept for the official schema; the official code does not read it."""
    num_bins: int = 66
    """Angle bins of 3° from −99°."""
    widths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    """Stage widths (hard-coded in the official code); bottleneck width is w // 4."""
    blocks: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    """Bottleneck blocks per stage (stages 2–4 open with a stride-2 block)."""
    expression_inputs: int = 0
    """Length of the tracker's expression vector (``adasr.expression_signal``) that a small network turns into
    keypoint offsets added to δ; 0: none (the released design)."""
    expression_hidden: int = 64
    """Width of that network's two hidden layers."""


@dataclass
class DenseMotionConfig:
    """Dense motion network: sparse motions + heatmaps → 3-D hourglass → mask and occlusion."""

    block_expansion: int = 32
    """Base width of the 3-D hourglass."""
    max_features: int = 1024
    """Width cap of the 3-D hourglass."""
    num_blocks: int = 5
    """Hourglass depth (each halves H and W)."""
    reshape_depth: int = 16
    """Depth of the feature volume (must equal the generator's)."""
    compress: int = 4
    """Channels the feature volume is compressed to before warping it K+1 times."""
    mask_kernel_size: int = 7
    """Kernel of the 3-D conv predicting the K+1 motion mask (7 as released)."""
    occlusion_kernel_size: int = 7
    """Kernel of the 2-D conv predicting the occlusion map (7 as released)."""
    motion_scale: float = 1.0
    """Spatial scale at which motion is estimated (1 as released); the deformation and
    occlusion are upsampled back to the feature size, which the released warp already supports."""


@dataclass
class SPADEDecoderConfig:
    """SPADE decoder: occluded feature → image (all hard-coded widths in the release)."""

    in_channels: int = 256
    """ic: channels of the occluded feature (= generator block_expansion·2^num_down_blocks)."""
    label_nc: int = 256
    """Channels of the SPADE segmentation map (the same occluded feature, so = in_channels)."""
    out_channels: int = 64
    """oc: channels before the final RGB conv."""
    spade_hidden: int = 128
    """Hidden width of each SPADE modulation MLP."""
    middle_channels: int = 512
    """Width of the middle blocks (2·ic as released)."""
    up_channels: int = 256
    """Output width of the first ×2 up block (ic as released)."""
    num_middle_blocks: int = 6
    """SPADE resnet blocks at the feature resolution."""
    num_up_blocks: int = 2
    """×2 SPADE up blocks (1 or 2). With 1 (lite), the last ×2 is a bilinear resize and the detail path's
    fusion does the full-resolution work; up_channels must then equal out_channels."""
    coarse_modulation: bool = False
    """Up blocks compute SPADE's γ and β at the feature resolution and resize them bilinearly, instead
    of convolving the resized feature at 2× and 4× (lite: those convs were most of the renderer's time)."""


@dataclass
class GeneratorConfig:
    """Appearance encoder, dense motion, warp, occlusion and SPADE decoder."""

    block_expansion: int = 64
    """Width of the first appearance-encoder block."""
    max_features: int = 512
    """Channels of the lift conv (= reshape_channel·reshape_depth)."""
    num_down_blocks: int = 2
    """2-D down blocks of the appearance encoder (the decoder upsamples by 2^this)."""
    reshape_channel: int = 32
    """Channels C of the feature volume f_s [C, D, H/4, W/4] (= feature_channel)."""
    reshape_depth: int = 16
    """Depth D of the feature volume."""
    num_resblocks: int = 6
    """Pre-activation 3-D resblocks on f_s."""
    estimate_occlusion_map: bool = True
    """Predict and apply the occlusion map."""
    appearance_norm: Literal["batch", "none"] = "batch"
    """Normalisation of the appearance encoder: batch norm as released, none as in the paper."""
    detail_channels: int = 0
    """Channels of a full-resolution 2-D appearance map (lite; 0 as released). It is warped by the 2-D
    projection of the 3-D motion and fused before the last conv, so the source's fine detail reaches the
    output instead of being re-invented from the S/4 volume. It travels inside f_s, space-to-depth, as
    detail_channels·16 / reshape_depth extra volume channels (see ``ModelConfig.source_volume_shape``)."""
    blend_source: bool = False
    """Lite: carry the source RGB beside the detail map, warp it the same way and blend it into the output
    through a learned mask (the decoder paints only where the warped photo is wrong). With driving = source
    the photo comes back exactly, and fine detail (eyes, glasses, hair) is the photo's, not re-invented.
    Needs detail_channels; adds 3·16 / reshape_depth volume channels."""
    source_interpolation: Literal["bilinear", "cubic"] = "bilinear"
    """How the blended source photo is resampled under the motion. Bilinear sampling between pixel centres
    is a low-pass filter: the photo came back softer the further the head moved. ``cubic`` (Catmull-Rom)
    keeps its fine detail: f_s also carries the photo's second differences (9 more channels before
    packing), sampled with the photo; identity motion still returns the photo exactly. Needs blend_source."""
    dense_motion_params: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    """Dense motion network."""
    decoder: SPADEDecoderConfig = field(default_factory=SPADEDecoderConfig)
    """SPADE decoder."""

    @property
    def photo_differences_channels(self) -> int:
        """Map channels of the source RGB's three second differences, which a cubic source warp samples (else 0)."""
        return 3 * 3 if self.blend_source and self.source_interpolation == "cubic" else 0

    @property
    def detail_map_channels(self) -> int:
        """Channels of the full-resolution map packed into f_s: the learned detail, then the source RGB and,
        for a cubic source warp, its three second differences."""
        return self.detail_channels + (3 if self.blend_source else 0) + self.photo_differences_channels


@dataclass
class DiscriminatorConfig:
    """Multi-scale patch discriminator (training only)."""

    scales: list[float] = field(default_factory=lambda: [1.0])
    """Image scales, one discriminator each."""
    block_expansion: int = 32
    """Width of the first block (×2 per block)."""
    max_features: int = 512
    """Width cap."""
    num_blocks: int = 4
    """Conv 4×4 blocks."""
    sn: bool = True
    """Spectral norm on every conv."""


@dataclass
class ModelConfig:
    """Everything needed to build the three inference networks (and the discriminator)."""

    name: str = "official"
    """Preset name, recorded in checkpoints and in the model identity."""
    image_size: int = 512
    """Square input/output resolution S."""
    num_kp: int = 15
    """K implicit 3-D keypoints."""
    image_channel: int = 3
    """RGB."""
    feature_channel: int = 32
    """C of the feature volume."""
    estimate_jacobian: bool = False
    """Must be False: the released model has no Jacobians."""
    kp_detector: KPDetectorConfig = field(default_factory=KPDetectorConfig)
    he_estimator: HEEstimatorConfig = field(default_factory=HEEstimatorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    @property
    def detail_volume_channels(self) -> int:
        """Extra f_s channels that carry the full-resolution detail map (space-to-depth, 4×4 → S/4)."""
        return self.generator.detail_map_channels * 16 // self.generator.reshape_depth

    @property
    def derived_volume_channels(self) -> int:
        """The last f_s channels, which a receiver derives from the photo before them (a cubic source warp's
        second differences): a sent state leaves them out (``realtime.source_state_codec``)."""
        return self.generator.photo_differences_channels * 16 // self.generator.reshape_depth

    def sent_volume_shape(self) -> tuple[int, int, int, int]:
        """(C, D, H, W) of the f_s a sender puts on the wire: ``source_volume_shape`` less the derived channels."""
        c, d, h, w = self.source_volume_shape()
        return (c - self.derived_volume_channels, d, h, w)

    def source_volume_shape(self) -> tuple[int, int, int, int]:
        """(C, D, H, W) of the f_s this model's source encoder makes: the one shape a renderer accepts."""
        g = self.generator
        side = self.image_size // 2**g.num_down_blocks
        return (self.feature_channel + self.detail_volume_channels, g.reshape_depth, side, side)

    def validate(self) -> ModelConfig:
        """Check the structural constraints the networks rely on; raise ConfigError naming the fix."""
        g, kp, dm, dec = self.generator, self.kp_detector, self.generator.dense_motion_params, self.generator.decoder
        checks = [
            (isinstance(self.image_size, int) and MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE
             and self.image_size % 4 == 0,
             f"image_size must be a multiple of 4 in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {self.image_size!r}"),
            (not self.estimate_jacobian, "estimate_jacobian must be False (no Jacobians in this model)"),
            (g.reshape_channel == self.feature_channel, "generator.reshape_channel must equal feature_channel"),
            (g.max_features == g.reshape_channel * g.reshape_depth,
             "generator.max_features must equal reshape_channel × reshape_depth"),
            (dm.reshape_depth == g.reshape_depth,
             "dense_motion_params.reshape_depth must equal generator.reshape_depth"),
            (dec.in_channels == g.block_expansion * 2**g.num_down_blocks,
             "decoder.in_channels must equal generator.block_expansion × 2^num_down_blocks"),
            (dec.label_nc == dec.in_channels, "decoder.label_nc must equal decoder.in_channels"),
            (g.num_down_blocks == 2, "num_down_blocks must be 2: the SPADE decoder upsamples by 4"),
            (kp.reshape_channel == min(kp.max_features, kp.block_expansion * 2**kp.num_blocks) * kp.reshape_depth,
             "kp_detector.reshape_channel must be min(max_features, block_expansion·2^num_blocks)·reshape_depth"),
            (self.image_size % (4 * 2**dm.num_blocks) == 0 or dm.motion_scale != 1.0,
             f"image_size {self.image_size} must be divisible by 4·2^num_blocks of the dense-motion hourglass"),
            (len(self.he_estimator.widths) == 4 and len(self.he_estimator.blocks) == 4,
             "he_estimator.widths and blocks need 4 stages"),
            (self.he_estimator.expression_inputs in (0, NUM_FEATURES) and self.he_estimator.expression_hidden > 0,
             f"he_estimator.expression_inputs must be 0 or {NUM_FEATURES} (adasr.expression_signal's features), "
             "expression_hidden > 0"),
            (g.detail_channels >= 0 and (g.detail_map_channels * 16) % g.reshape_depth == 0,
             "generator.detail_map_channels·16 must be a non-negative multiple of reshape_depth"),
            (not g.blend_source or g.detail_channels > 0, "generator.blend_source needs detail_channels > 0"),
            (g.source_interpolation in ("bilinear", "cubic"),
             f"generator.source_interpolation must be 'bilinear' or 'cubic', got '{g.source_interpolation}'"),
            (g.source_interpolation == "bilinear" or g.blend_source,
             "generator.source_interpolation 'cubic' needs blend_source"),
            (dec.num_up_blocks == 2 or (dec.num_up_blocks == 1 and dec.up_channels == dec.out_channels),
             "decoder.num_up_blocks must be 2, or 1 with up_channels equal to out_channels"),
            (0 < dm.motion_scale <= 1 and (1 / dm.motion_scale).is_integer(),
             "dense_motion_params.motion_scale must be 1/n for an integer n"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"config '{self.name}': {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], to_plain(self))


def model_config_from_dict(data: dict[str, Any], where: str = "config") -> ModelConfig:
    """Our own schema (``model:`` section of a preset YAML, or a checkpoint's stored config)."""
    return build_dataclass(ModelConfig, data, where).validate()


def _official_to_ours(doc: dict[str, Any], name: str) -> ModelConfig:
    """Map the released schema (``model_params`` + optional ``hardcoded_overrides``) to ModelConfig."""
    mp = doc["model_params"]
    common = dict(mp.get("common_params", {}))
    cfg = ModelConfig(name=name)
    cfg.num_kp = common.pop("num_kp", cfg.num_kp)
    cfg.image_channel = common.pop("image_channel", cfg.image_channel)
    cfg.feature_channel = common.pop("feature_channel", cfg.feature_channel)
    cfg.estimate_jacobian = common.pop("estimate_jacobian", cfg.estimate_jacobian)
    if common:
        raise ConfigError(f"{name}: unknown common_params {sorted(common)}")
    cfg.kp_detector = build_dataclass(KPDetectorConfig, mp.get("kp_detector_params", {}), f"{name}.kp_detector_params")
    cfg.he_estimator = build_dataclass(HEEstimatorConfig, mp.get("he_estimator_params", {}),
                                       f"{name}.he_estimator_params")
    gen = dict(mp.get("generator_params", {}))
    dense = gen.pop("dense_motion_params", {})
    cfg.generator = build_dataclass(GeneratorConfig, gen, f"{name}.generator_params")
    cfg.generator.dense_motion_params = build_dataclass(DenseMotionConfig, dense, f"{name}.dense_motion_params")
    if "discriminator_params" in mp:
        cfg.discriminator = build_dataclass(DiscriminatorConfig, mp["discriminator_params"],
                                            f"{name}.discriminator_params")
    frame_shape = doc.get("dataset_params", {}).get("frame_shape")
    if frame_shape:
        cfg.image_size = int(frame_shape[0])
    overrides = doc.get("hardcoded_overrides", {}) or {}
    unknown = sorted(set(overrides) - {"he_estimator_widths", "spade_decoder"})
    if unknown:
        raise ConfigError(f"{name}: unknown hardcoded_overrides {unknown}")
    if "he_estimator_widths" in overrides:
        cfg.he_estimator.widths = list(overrides["he_estimator_widths"])
    dec = overrides.get("spade_decoder")
    if dec:
        cfg.generator.decoder = build_dataclass(SPADEDecoderConfig, dec, f"{name}.hardcoded_overrides.spade_decoder")
        cfg.generator.decoder.middle_channels = 2 * cfg.generator.decoder.in_channels
        cfg.generator.decoder.up_channels = cfg.generator.decoder.in_channels
    return cfg.validate()


def load_model_config(spec: str | Path) -> ModelConfig:
    """A preset name (``official``, ``lite``, …), our YAML, or a YAML in the official schema."""
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{spec}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset '{spec}'; presets: {preset_names()}, or give a YAML path")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    doc = _read_yaml(path)
    if "model_params" in doc:
        return _official_to_ours(doc, path.stem)
    if isinstance(doc.get("model"), dict):
        data = dict(doc["model"])
        data.setdefault("name", path.stem)
        return model_config_from_dict(data, str(path))
    raise ConfigError(f"{path}: neither our schema (a 'model' section) nor the official one ('model_params')")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return doc


def preset_names() -> list[str]:
    """Names of the model presets shipped in ``configs/`` (our schema or the official one)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if _is_model_config(_read_yaml(p)))


def _is_model_config(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("model"), dict) or isinstance(doc.get("model_params"), dict)
