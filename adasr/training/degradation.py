"""Source-image degradation for AdaSR training (official-architecture.md §7, paper §3).

AdaSR's one training change to face-vid2vid: the generator gets a *degraded* source frame and must
still reconstruct the clean driving frame, so its appearance encoder learns to bring back high
frequencies. The official code uses the second-order degradation of Real-ESRGAN (blur, resize, noise,
JPEG, twice, then a sinc filter) with much stronger settings (JPEG quality 10–25); the paper also
describes the simpler "down to half, back up". Both are here: ``mode: realesrgan | half``.

Everything except JPEG runs batched in torch on the images' device. Every random draw comes from the
``torch.Generator`` passed to :func:`degrade` (no numpy or Python RNG), so a seed reproduces a batch.
Written from the published description of the method; no code is taken from Real-ESRGAN or basicsr.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from adasr.dataclass_io import build_dataclass, to_plain
from adasr.errors import ConfigError
from adasr.image_ops import luma

__all__ = [
    "KERNEL_TYPES",
    "BlurKernelConfig",
    "DegradationConfig",
    "DegradationConfigError",
    "HalfConfig",
    "JpegConfig",
    "KernelMix",
    "NoiseConfig",
    "ResizeConfig",
    "SincConfig",
    "Stage1Config",
    "Stage2Config",
    "blur_kernels",
    "degrade",
    "draw_grid",
    "filter2d",
    "jpeg_compress",
    "sinc_kernels",
]

#: The six non-sinc blur kernel families, in the order of :class:`KernelMix`'s fields.
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")

#: Interpolation modes accepted anywhere a resize mode is configured (torch ``F.interpolate`` names).
_INTERP_MODES = ("nearest", "area", "bilinear", "bicubic")

_PI = math.pi


class DegradationConfigError(ConfigError):
    """A degradation config value or key is invalid; the message names the offending field."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _fail(msg: str) -> typing.NoReturn:
    raise DegradationConfigError(msg)


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        _fail(f"{name} must be a probability in [0, 1], got {p}")


def _check_range(name: str, r: tuple[float, float], low: float | None = None, positive: bool = False) -> None:
    if len(r) != 2 or r[0] > r[1]:
        _fail(f"{name} must be a [low, high] pair with low <= high, got {list(r)}")
    if positive and r[0] <= 0:
        _fail(f"{name} must be positive, got {list(r)}")
    if low is not None and r[0] < low:
        _fail(f"{name} must be >= {low}, got {list(r)}")


def _check_weights(name: str, weights: Sequence[float]) -> None:
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        _fail(f"{name} must be non-negative weights with a positive sum, got {list(weights)}")


def _check_modes(name: str, modes: Sequence[str]) -> None:
    if not modes or any(m not in _INTERP_MODES for m in modes):
        _fail(f"{name} must be a non-empty list drawn from {list(_INTERP_MODES)}, got {list(modes)}")


def _check_sizes(name: str, sizes: Sequence[int], pad_to: int) -> None:
    if pad_to < 1 or pad_to % 2 == 0:
        _fail(f"{name}: pad_to must be a positive odd number, got {pad_to}")
    if not sizes or any(s < 1 or s % 2 == 0 or s > pad_to for s in sizes):
        _fail(f"{name}: sizes must be odd, >= 1 and <= pad_to={pad_to}, got {list(sizes)}")


@dataclass(frozen=True)
class KernelMix:
    """Relative weights of the six non-sinc kernel families (normalised; AdaSR = Real-ESRGAN's mix)."""

    iso: float = 0.45
    """Isotropic Gaussian."""
    aniso: float = 0.25
    """Anisotropic (rotated, two σ) Gaussian."""
    generalized_iso: float = 0.12
    """Isotropic generalized Gaussian exp(-½ q^β_g): β_g < 1 gives heavy tails."""
    generalized_aniso: float = 0.03
    """Anisotropic generalized Gaussian."""
    plateau_iso: float = 0.12
    """Isotropic plateau 1 / (1 + q^β_p)."""
    plateau_aniso: float = 0.03
    """Anisotropic plateau."""

    def __post_init__(self) -> None:
        _check_weights("mix", self.weights())

    def weights(self) -> tuple[float, ...]:
        """Weights in :data:`KERNEL_TYPES` order."""
        return tuple(float(getattr(self, name)) for name in KERNEL_TYPES)


@dataclass(frozen=True)
class BlurKernelConfig:
    """Ranges of one random blur kernel per sample (§7 "kernel 1" / "kernel 2")."""

    sizes: tuple[int, ...] = (3, 5)
    """Odd kernel sizes, drawn uniformly; AdaSR uses only {3, 5} (Real-ESRGAN: 7–21)."""
    pad_to: int = 21
    """Kernels are zero-padded to this size (it does not change the result, only the tensor shape)."""
    sinc_prob: float = 0.1
    """Probability that the kernel is a circular low-pass (sinc) instead of the mixed families."""
    sinc_omega: tuple[float, float] = (_PI / 3, _PI)
    """Cut-off frequency ω_c range of that sinc, in radians per pixel."""
    mix: KernelMix = field(default_factory=KernelMix)
    """Weights of the non-sinc families."""
    sigma: tuple[float, float] = (0.1, 0.5)
    """σ range in pixels (each axis drawn independently for anisotropic kernels)."""
    rotation: tuple[float, float] = (-_PI, _PI)
    """Rotation angle range of anisotropic kernels, radians."""
    beta_gaussian: tuple[float, float] = (0.2, 1.0)
    """Shape β_g range of generalized Gaussians."""
    beta_plateau: tuple[float, float] = (0.5, 1.2)
    """Shape β_p range of plateau kernels."""
    beta_split_at_one: bool = True
    """Real-ESRGAN convention: when a β range straddles 1, draw below/above 1 with equal odds."""

    def __post_init__(self) -> None:
        _check_sizes("kernel", self.sizes, self.pad_to)
        _check_prob("sinc_prob", self.sinc_prob)
        _check_range("sinc_omega", self.sinc_omega, positive=True)
        _check_range("sigma", self.sigma, positive=True)
        _check_range("rotation", self.rotation)
        _check_range("beta_gaussian", self.beta_gaussian, positive=True)
        _check_range("beta_plateau", self.beta_plateau, positive=True)


@dataclass(frozen=True)
class SincConfig:
    """The final sinc filter of stage 2 (§7): simulates the ringing and overshoot of real codecs and scalers."""

    prob: float = 0.8
    """Probability of a sinc per sample; otherwise an identity pulse."""
    sizes: tuple[int, ...] = (3, 5)
    """Odd sinc sizes, drawn uniformly."""
    omega: tuple[float, float] = (_PI / 3, _PI)
    """Cut-off frequency ω_c range, radians per pixel."""
    pad_to: int = 11
    """Zero-padded kernel size."""

    def __post_init__(self) -> None:
        _check_prob("prob", self.prob)
        _check_sizes("final_sinc", self.sizes, self.pad_to)
        _check_range("omega", self.omega, positive=True)


@dataclass(frozen=True)
class ResizeConfig:
    """Random resize of one stage, one draw per batch (all samples must share a size)."""

    up_prob: float = 0.2
    """Relative weight of enlarging (scale drawn in [max(1, low), max(1, high)])."""
    down_prob: float = 0.7
    """Relative weight of shrinking (scale drawn in [min(1, low), min(1, high)])."""
    keep_prob: float = 0.1
    """Relative weight of keeping the size (scale 1)."""
    scale: tuple[float, float] = (0.5, 1.2)
    """Scale range, relative to the *input* image size of :func:`degrade`."""
    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    """Interpolation modes, drawn uniformly."""

    def __post_init__(self) -> None:
        _check_weights("up_prob/down_prob/keep_prob", (self.up_prob, self.down_prob, self.keep_prob))
        _check_range("scale", self.scale, positive=True)
        _check_modes("modes", self.modes)


@dataclass(frozen=True)
class NoiseConfig:
    """Additive noise of one stage, drawn per sample."""

    prob: float = 1.0
    """Probability that a sample gets noise at all (0 disables the step)."""
    gaussian_prob: float = 0.5
    """Probability of Gaussian noise; otherwise Poisson."""
    gaussian_sigma: tuple[float, float] = (1.0, 10.0)
    """Gaussian σ range on the 0–255 scale."""
    poisson_scale: tuple[float, float] = (0.05, 1.0)
    """Multiplier range of the Poisson (shot) noise."""
    gray_prob: float = 0.4
    """Probability that the noise is grey (same on all channels) rather than per channel."""

    def __post_init__(self) -> None:
        _check_prob("prob", self.prob)
        _check_prob("gaussian_prob", self.gaussian_prob)
        _check_prob("gray_prob", self.gray_prob)
        _check_range("gaussian_sigma", self.gaussian_sigma, low=0.0)
        _check_range("poisson_scale", self.poisson_scale, low=0.0)


@dataclass(frozen=True)
class JpegConfig:
    """JPEG compression of one stage, drawn per sample."""

    prob: float = 1.0
    """Probability that a sample is compressed (0 disables the step)."""
    quality: tuple[int, int] = (10, 25)
    """Quality range, inclusive integers; AdaSR's 10–25 is far stronger than Real-ESRGAN's 30–95."""

    def __post_init__(self) -> None:
        _check_prob("prob", self.prob)
        _check_range("quality", self.quality)
        if self.quality[0] < 1 or self.quality[1] > 100:
            _fail(f"quality must lie in [1, 100], got {list(self.quality)}")


@dataclass(frozen=True)
class Stage1Config:
    """First degradation: blur → resize → noise → clamp → JPEG."""

    enabled: bool = True
    """False skips the whole stage."""
    blur_prob: float = 1.0
    """Probability of blurring a sample with its kernel (0 disables the step)."""
    kernel: BlurKernelConfig = field(default_factory=BlurKernelConfig)
    """Blur kernel ranges ("kernel 1")."""
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    """Random resize."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Gaussian or Poisson noise."""
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    """JPEG compression."""

    def __post_init__(self) -> None:
        _check_prob("blur_prob", self.blur_prob)


@dataclass(frozen=True)
class Stage2Config:
    """Second degradation: blur → resize → noise → {resize back + sinc, JPEG} in random order."""

    enabled: bool = True
    """False skips the stage; the image is still resized back to the input size."""
    blur_prob: float = 0.8
    """Probability of blurring a sample with its kernel (0 disables the step)."""
    kernel: BlurKernelConfig = field(default_factory=lambda: BlurKernelConfig(beta_plateau=(1.0, 1.2)))
    """Blur kernel ranges ("kernel 2": as kernel 1 but β_p in [1, 1.2])."""
    resize: ResizeConfig = field(default_factory=lambda: ResizeConfig(up_prob=0.3, down_prob=0.4, keep_prob=0.3))
    """Random resize, relative to the input size."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Gaussian or Poisson noise."""
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    """JPEG compression."""
    sinc_first_prob: float = 0.5
    """Probability (per batch) of (resize back + sinc) → JPEG; otherwise JPEG → (resize back + sinc)."""
    resize_back_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    """Modes for the resize back to the input size, drawn uniformly per batch."""
    final_sinc: SincConfig = field(default_factory=SincConfig)
    """The final sinc filter applied after resizing back."""

    def __post_init__(self) -> None:
        _check_prob("blur_prob", self.blur_prob)
        _check_prob("sinc_first_prob", self.sinc_first_prob)
        _check_modes("resize_back_modes", self.resize_back_modes)


@dataclass(frozen=True)
class HalfConfig:
    """The paper's simple mode: shrink by ``factor`` and enlarge back (512 → 256 → 512)."""

    factor: float = 0.5
    """Downscale factor in (0, 1]."""
    down_mode: str = "bicubic"
    """Interpolation used to shrink."""
    up_mode: str = "bicubic"
    """Interpolation used to enlarge back."""
    antialias: bool = True
    """Low-pass before shrinking (bilinear/bicubic only), i.e. a clean downsample, not an aliased one."""

    def __post_init__(self) -> None:
        if not 0.0 < self.factor <= 1.0:
            _fail(f"factor must be in (0, 1], got {self.factor}")
        _check_modes("down_mode", (self.down_mode,))
        _check_modes("up_mode", (self.up_mode,))


@dataclass(frozen=True)
class DegradationConfig:
    """All ranges of the training degradation; the defaults are AdaSR's (official-architecture.md §7)."""

    mode: Literal["realesrgan", "half"] = "realesrgan"
    """``realesrgan``: the two-stage pipeline of the official code; ``half``: the paper's down/up."""
    quantize: bool = True
    """Round the result to 8-bit levels, as a real decoded frame would be."""
    stage1: Stage1Config = field(default_factory=Stage1Config)
    """First degradation stage."""
    stage2: Stage2Config = field(default_factory=Stage2Config)
    """Second degradation stage, resize back and final sinc."""
    half: HalfConfig = field(default_factory=HalfConfig)
    """Settings of ``mode: half``."""

    def __post_init__(self) -> None:
        if self.mode not in ("realesrgan", "half"):
            _fail(f"mode must be 'realesrgan' or 'half', got {self.mode!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DegradationConfig:
        """Build from a nested mapping (missing keys keep defaults; unknown keys are an error)."""
        return build_dataclass(cls, {} if data is None else data, "degradation", DegradationConfigError)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DegradationConfig:
        """Load a YAML file whose top level is this config (see configs/degradation.yaml)."""
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples), e.g. for logging next to a training run."""
        return typing.cast(dict[str, Any], to_plain(self))


# --------------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------------


class _Random:
    """Every draw of one call, taken from the caller's generator only, so a seed reproduces it.

    Draws happen on the generator's device and move to the images' device: a generator on the images'
    device is fastest; a CPU generator gives the same numbers whatever the images' device.
    """

    def __init__(self, generator: torch.Generator, device: torch.device) -> None:
        self.gen = generator
        self.src = generator.device
        self.dst = device

    def rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.gen, device=self.src).to(self.dst)

    def uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self.rand(n)

    def bernoulli(self, n: int, p: float) -> torch.Tensor:
        return self.rand(n) < p

    def scalar(self, low: float = 0.0, high: float = 1.0) -> float:
        u = float(torch.rand((), generator=self.gen, device=self.src))
        return low + (high - low) * u

    def choice(self, n: int, weights: Sequence[float]) -> torch.Tensor:
        w = torch.tensor(list(weights), dtype=torch.float32, device=self.src)
        return torch.multinomial(w, n, replacement=True, generator=self.gen).to(self.dst)

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.choice(1, [1.0] * len(options))[0])]

    def randint(self, n: int, low: int, high_inclusive: int) -> torch.Tensor:
        return torch.randint(low, high_inclusive + 1, (n,), generator=self.gen, device=self.src).to(self.dst)

    def normal(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.gen, device=self.src).to(self.dst)

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rate.to(self.src), generator=self.gen).to(self.dst)


def _draw_beta(rnd: _Random, n: int, r: tuple[float, float], split: bool) -> torch.Tensor:
    """β per sample; with ``split`` and low <= 1 <= high, half the draws are in [low, 1], half in [1, high]."""
    low, high = r
    if not (split and low <= 1.0 <= high):
        return rnd.uniform(n, low, high)
    below = rnd.uniform(n, low, 1.0)
    above = rnd.uniform(n, 1.0, high)
    return torch.where(rnd.bernoulli(n, 0.5), below, above)


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets from the centre of a size×size kernel: x along columns, y along rows."""
    ax = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def _support(sizes: torch.Tensor, pad_to: int) -> torch.Tensor:
    """[n, pad_to, pad_to] mask of each sample's centred size×size square (the zero padding outside)."""
    x, y = _grid(pad_to, sizes.device)
    half = (sizes // 2).to(torch.float32).view(-1, 1, 1)
    return (x.abs() <= half) & (y.abs() <= half)


def _circular_lowpass(omega: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Ideal circular low-pass (2D sinc, "jinc") ω·J1(ω r) / (2π r), unnormalised, [n, pad_to, pad_to]."""
    x, y = _grid(pad_to, omega.device)
    r = torch.sqrt(x * x + y * y)
    w = omega.view(-1, 1, 1)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    k = w * torch.special.bessel_j1(w * safe_r) / (2 * _PI * safe_r)
    return torch.where(r > 0, k, w * w / (4 * _PI))


def _normalise(k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    k = torch.where(mask, k, torch.zeros_like(k))
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _pulse(n: int, size: int, device: torch.device) -> torch.Tensor:
    k = torch.zeros(n, size, size, device=device)
    k[:, size // 2, size // 2] = 1.0
    return k


def _blur_kernels(n: int, cfg: BlurKernelConfig, rnd: _Random) -> torch.Tensor:
    dev = rnd.dst
    sizes = torch.tensor(cfg.sizes, device=dev)[rnd.choice(n, [1.0] * len(cfg.sizes))]
    kind = rnd.choice(n, cfg.mix.weights())
    sigma_x = rnd.uniform(n, *cfg.sigma)
    sigma_y = rnd.uniform(n, *cfg.sigma)
    theta = rnd.uniform(n, *cfg.rotation)
    beta_g = _draw_beta(rnd, n, cfg.beta_gaussian, cfg.beta_split_at_one)
    beta_p = _draw_beta(rnd, n, cfg.beta_plateau, cfg.beta_split_at_one)
    is_sinc = rnd.bernoulli(n, cfg.sinc_prob)
    omega = rnd.uniform(n, *cfg.sinc_omega)

    isotropic = kind % 2 == 0  # iso, generalized_iso, plateau_iso
    family = kind // 2  # 0 Gaussian, 1 generalized Gaussian, 2 plateau
    sigma_y = torch.where(isotropic, sigma_x, sigma_y)
    theta = torch.where(isotropic, torch.zeros_like(theta), theta)

    # Quadratic form q = xᵀ Σ⁻¹ x with Σ = R diag(σx², σy²) Rᵀ, i.e. rotate then scale the axes.
    x, y = _grid(cfg.pad_to, dev)
    c, s = theta.cos().view(-1, 1, 1), theta.sin().view(-1, 1, 1)
    u = c * x + s * y
    v = -s * x + c * y
    q = (u / sigma_x.view(-1, 1, 1)) ** 2 + (v / sigma_y.view(-1, 1, 1)) ** 2
    beta = torch.where(family == 0, torch.ones_like(beta_g), torch.where(family == 1, beta_g, beta_p))
    qb = q.pow(beta.view(-1, 1, 1))
    k = torch.where((family == 2).view(-1, 1, 1), 1.0 / (1.0 + qb), torch.exp(-0.5 * qb))
    k = torch.where(is_sinc.view(-1, 1, 1), _circular_lowpass(omega, cfg.pad_to), k)
    return _normalise(k, _support(sizes, cfg.pad_to))


def _sinc_kernels(n: int, cfg: SincConfig, rnd: _Random) -> torch.Tensor:
    dev = rnd.dst
    sizes = torch.tensor(cfg.sizes, device=dev)[rnd.choice(n, [1.0] * len(cfg.sizes))]
    omega = rnd.uniform(n, *cfg.omega)
    use = rnd.bernoulli(n, cfg.prob)
    k = _normalise(_circular_lowpass(omega, cfg.pad_to), _support(sizes, cfg.pad_to))
    return torch.where(use.view(-1, 1, 1), k, _pulse(n, cfg.pad_to, dev))


def blur_kernels(
    n: int, cfg: BlurKernelConfig, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` random blur kernels [n, pad_to, pad_to], each summing to 1 (mixed families or sinc)."""
    dev = torch.device(device) if device is not None else generator.device
    return _blur_kernels(n, cfg, _Random(generator, dev))


def sinc_kernels(
    n: int, cfg: SincConfig, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` final-sinc kernels [n, pad_to, pad_to] (identity pulses with probability 1 - prob)."""
    dev = torch.device(device) if device is not None else generator.device
    return _sinc_kernels(n, cfg, _Random(generator, dev))


def _crop_zero_border(kernels: torch.Tensor) -> torch.Tensor:
    """Drop the zero rings every kernel of the batch shares (AdaSR pads 3×3/5×5 kernels to 21×21)."""
    size = kernels.shape[-1]
    centre = size // 2
    nonzero = (kernels != 0).flatten(0, -3).any(0).nonzero()
    if nonzero.numel() == 0:
        return kernels
    r = int((nonzero - centre).abs().max())
    return kernels[..., centre - r : centre + r + 1, centre - r : centre + r + 1]


def filter2d(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each sample with its own kernel: images [B, C, H, W], kernels [B, k, k] or [k, k], odd k.

    One grouped convolution for the whole batch, reflect padding (replicate on images too small to
    reflect). Zero borders are cropped first: convolving a 5×5 kernel padded to 21×21 costs ~17× more
    for the same result.
    """
    b, c, h, w = images.shape
    if kernels.dim() == 2:
        kernels = kernels.expand(b, *kernels.shape)
    if kernels.shape[0] != b or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise ValueError(f"kernels must be [B, k, k] with odd k for B={b}, got {tuple(kernels.shape)}")
    kernels = _crop_zero_border(kernels.to(images.device, images.dtype)).flip(-2, -1)  # a true convolution
    k = kernels.shape[-1]
    pad = k // 2
    if pad == 0:
        return images * kernels.view(b, 1, 1, 1)
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = F.pad(images, (pad, pad, pad, pad), mode=mode)
    weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # [B·C, 1, k, k]
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.view(b, c, h, w)


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=size, mode=mode)


def _random_resize(x: torch.Tensor, cfg: ResizeConfig, base_hw: tuple[int, int], rnd: _Random) -> torch.Tensor:
    """One up/down/keep choice, scale and mode for the whole batch, relative to the input size."""
    direction = int(rnd.choice(1, (cfg.up_prob, cfg.down_prob, cfg.keep_prob))[0])
    low, high = cfg.scale
    if direction == 0:
        scale = rnd.scalar(max(1.0, low), max(1.0, high))
    elif direction == 1:
        scale = rnd.scalar(min(1.0, low), min(1.0, high))
    else:
        scale = 1.0
    mode = rnd.pick(cfg.modes)
    size = (max(1, int(base_hw[0] * scale)), max(1, int(base_hw[1] * scale)))
    return _resize(x, size, mode)


def _shot_noise(src: torch.Tensor, rnd: _Random) -> torch.Tensor:
    """Unit-scale shot noise of ``src`` [n, c, H, W]: 8-bit levels count photons in 2^⌈log2(#levels)⌉ steps."""
    levels = (src * 255).round().clamp(0, 255)
    present = torch.zeros(src.shape[0], 256, device=src.device).scatter_(1, levels.flatten(1).long(), 1.0)
    vals = torch.exp2(torch.ceil(torch.log2(present.sum(1)))).view(-1, 1, 1, 1)
    img = levels / 255
    return rnd.poisson(img * vals) / vals - img


def _poisson_noise(x: torch.Tensor, gray: torch.Tensor, rnd: _Random) -> torch.Tensor:
    """Poisson noise [n, 3, H, W]: per channel, or drawn once on the luma for grey samples."""
    noise = torch.empty_like(x)
    idx = (~gray).nonzero().flatten()
    if idx.numel():
        noise[idx] = _shot_noise(x[idx], rnd)
    idx = gray.nonzero().flatten()
    if idx.numel():
        noise[idx] = _shot_noise(luma(x[idx]), rnd).expand(-1, 3, -1, -1)
    return noise


def _random_noise(x: torch.Tensor, cfg: NoiseConfig, rnd: _Random) -> torch.Tensor:
    """Per sample: Gaussian (σ on the 0–255 scale) or Poisson, colour or grey, then clamp to [0, 1]."""
    if cfg.prob <= 0:
        return x
    n = x.shape[0]
    apply = rnd.bernoulli(n, cfg.prob)
    gaussian = rnd.bernoulli(n, cfg.gaussian_prob)
    gray = rnd.bernoulli(n, cfg.gray_prob)
    sigma = rnd.uniform(n, *cfg.gaussian_sigma) / 255
    scale = rnd.uniform(n, *cfg.poisson_scale)
    noise = torch.zeros_like(x)
    idx = (apply & gaussian).nonzero().flatten()
    if idx.numel():
        g = rnd.normal((idx.numel(), *x.shape[1:]))
        g = torch.where(gray[idx].view(-1, 1, 1, 1), g[:, :1].expand_as(g), g)
        noise[idx] = g * sigma[idx].view(-1, 1, 1, 1)
    idx = (apply & ~gaussian).nonzero().flatten()
    if idx.numel():
        noise[idx] = _poisson_noise(x[idx], gray[idx], rnd) * scale[idx].view(-1, 1, 1, 1)
    return (x + noise).clamp(0, 1)


def jpeg_compress(images: torch.Tensor, quality: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Real JPEG (libjpeg through OpenCV, 4:2:0) per sample at its own quality; same device and dtype.

    Real-ESRGAN uses a differentiable JPEG on the GPU. Nothing backpropagates through AdaSR's
    degradation (it only makes the generator's input), so the exact codec is both simpler and more
    faithful; it costs a device→CPU→device copy and a few ms per 512² image. Output is on the 1/255 grid.
    """
    qs = [int(q) for q in (quality.tolist() if isinstance(quality, torch.Tensor) else quality)]
    if len(qs) != images.shape[0]:
        raise ValueError(f"need one quality per image: {len(qs)} for {images.shape[0]} images")
    arr = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, q in enumerate(qs):
        bgr = np.ascontiguousarray(arr[i, :, :, ::-1])  # OpenCV expects BGR for its YCbCr conversion
        ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), q])
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode a JPEG at quality {q}")
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError(f"OpenCV failed to decode its own JPEG at quality {q}")
        out[i] = decoded[:, :, ::-1]
    back = torch.from_numpy(out).to(images.device).permute(0, 3, 1, 2)
    return back.to(images.dtype) / 255


def _random_jpeg(x: torch.Tensor, cfg: JpegConfig, rnd: _Random) -> torch.Tensor:
    if cfg.prob <= 0:
        return x
    n = x.shape[0]
    apply = rnd.bernoulli(n, cfg.prob)
    quality = rnd.randint(n, *cfg.quality)
    x = x.clamp(0, 1)
    idx = apply.nonzero().flatten()
    if idx.numel():
        x[idx] = jpeg_compress(x[idx], quality[idx])
    return x


def _random_blur(x: torch.Tensor, prob: float, cfg: BlurKernelConfig, rnd: _Random) -> torch.Tensor:
    if prob <= 0:
        return x
    n = x.shape[0]
    kernels = _blur_kernels(n, cfg, rnd)
    apply = rnd.bernoulli(n, prob)
    kernels = torch.where(apply.view(-1, 1, 1), kernels, _pulse(n, cfg.pad_to, rnd.dst))
    return filter2d(x, kernels)


def _resize_back_and_sinc(x: torch.Tensor, cfg: Stage2Config, base_hw: tuple[int, int], rnd: _Random) -> torch.Tensor:
    x = _resize(x, base_hw, rnd.pick(cfg.resize_back_modes))
    if cfg.final_sinc.prob <= 0:
        return x
    return filter2d(x, _sinc_kernels(x.shape[0], cfg.final_sinc, rnd))


def _stage1(x: torch.Tensor, cfg: Stage1Config, base_hw: tuple[int, int], rnd: _Random) -> torch.Tensor:
    x = _random_blur(x, cfg.blur_prob, cfg.kernel, rnd)
    x = _random_resize(x, cfg.resize, base_hw, rnd)
    x = _random_noise(x, cfg.noise, rnd)
    return _random_jpeg(x, cfg.jpeg, rnd)


def _stage2(x: torch.Tensor, cfg: Stage2Config, base_hw: tuple[int, int], rnd: _Random) -> torch.Tensor:
    x = _random_blur(x, cfg.blur_prob, cfg.kernel, rnd)
    x = _random_resize(x, cfg.resize, base_hw, rnd)
    x = _random_noise(x, cfg.noise, rnd)
    if rnd.scalar() < cfg.sinc_first_prob:
        x = _resize_back_and_sinc(x, cfg, base_hw, rnd)
        return _random_jpeg(x, cfg.jpeg, rnd)
    x = _random_jpeg(x, cfg.jpeg, rnd)
    return _resize_back_and_sinc(x, cfg, base_hw, rnd)


def _half(x: torch.Tensor, cfg: HalfConfig) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (max(1, round(h * cfg.factor)), max(1, round(w * cfg.factor)))
    x = _resize(x, small, cfg.down_mode, antialias=cfg.antialias)
    return _resize(x, (h, w), cfg.up_mode)


def degrade(
    images: torch.Tensor, generator: torch.Generator, cfg: DegradationConfig | None = None
) -> torch.Tensor:
    """Degrade a batch [B, 3, H, W] in [0, 1]; same shape, device and dtype, reproducible from ``generator``.

    All randomness comes from ``generator`` (on the images' device for speed, or on the CPU to get the
    same draws on any device). No gradient flows through the result.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [0, 1], got {images.dtype}")
    cfg = cfg if cfg is not None else DegradationConfig()
    base_hw = (int(images.shape[2]), int(images.shape[3]))
    with torch.no_grad():
        x = images.detach().to(torch.float32)
        if cfg.mode == "half":
            x = _half(x, cfg.half)
        else:
            rnd = _Random(generator, x.device)
            if cfg.stage1.enabled:
                x = _stage1(x, cfg.stage1, base_hw, rnd)
            if cfg.stage2.enabled:
                x = _stage2(x, cfg.stage2, base_hw, rnd)
            else:
                x = _resize(x, base_hw, rnd.pick(cfg.stage2.resize_back_modes))
        x = (x * 255).round().clamp(0, 255) / 255 if cfg.quantize else x.clamp(0, 1)
    return x.to(images.dtype)


def draw_grid(
    images: torch.Tensor,
    cfg: DegradationConfig,
    seed: int,
    out_path: str | Path,
    samples: int = 4,
    gap: int = 4,
) -> Path:
    """Write a PNG with one row per image: clean, then ``samples`` independent degradations.

    It shows at a glance what the generator is trained on (and whether a config is too harsh).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    generator = torch.Generator(device=images.device).manual_seed(seed)
    columns = [images.detach().float().clamp(0, 1)]
    columns += [degrade(images, generator, cfg).float() for _ in range(samples)]
    b, _, h, w = images.shape
    ncol = len(columns)
    canvas = torch.ones(3, b * h + (b + 1) * gap, ncol * w + (ncol + 1) * gap)
    for col, batch in enumerate(columns):
        for row in range(b):
            top, left = gap + row * (h + gap), gap + col * (w + gap)
            canvas[:, top : top + h, left : left + w] = batch[row].cpu()
    rgb = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"could not write {path}")
    return path
