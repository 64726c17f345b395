"""Tests of the AdaSR training degradation: shapes, seeding, each stage's measurable effect, config I/O."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, special
from skimage import data as skdata

from adasr.training.degradation import (
    BlurKernelConfig,
    DegradationConfig,
    DegradationConfigError,
    HalfConfig,
    JpegConfig,
    KernelMix,
    NoiseConfig,
    ResizeConfig,
    SincConfig,
    Stage1Config,
    Stage2Config,
    blur_kernels,
    degrade,
    draw_grid,
    filter2d,
    jpeg_compress,
    sinc_kernels,
)

REPO = Path(__file__).resolve().parents[1]
KEEP = ResizeConfig(up_prob=0.0, down_prob=0.0, keep_prob=1.0)


def _astronaut(size: int) -> torch.Tensor:
    """A real face, [1, 3, size, size], on the 8-bit grid so an identity pipeline returns it exactly."""
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float() / 255
    img = F.interpolate(img, size=(size, size), mode="area")
    return (img * 255).round() / 255


@pytest.fixture(scope="module")
def face128() -> torch.Tensor:
    return _astronaut(128)


@pytest.fixture(scope="module")
def face256() -> torch.Tensor:
    return _astronaut(256)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quiet(**stage1: object) -> DegradationConfig:
    """Every step off (stage 2 disabled, identity resize back); keyword args re-enable stage-1 parts."""
    s1 = Stage1Config(blur_prob=0.0, resize=KEEP, noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0))
    s2 = Stage2Config(enabled=False, resize_back_modes=("bicubic",))
    return DegradationConfig(stage1=replace(s1, **stage1), stage2=s2)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def _laplacian_var(x: torch.Tensor) -> float:
    """Variance of the Laplacian of the luma: a standard sharpness / high-frequency energy measure."""
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(luma, lap).var())


# ------------------------------------------------------------------------------------------------ output


def test_default_output_shape_dtype_range_and_8bit(face128: torch.Tensor) -> None:
    x = face128.repeat(4, 1, 1, 1)
    y = degrade(x, _gen(0))
    assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    levels = y * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert not y.requires_grad
    # AdaSR's settings are harsh: every sample must be visibly damaged, none destroyed.
    for i in range(4):
        assert 15.0 < _psnr(y[i], x[i]) < 30.0


@pytest.mark.parametrize("sinc_first_prob", [0.0, 1.0])
def test_both_stage2_orders_end_on_the_8bit_grid(face128: torch.Tensor, sinc_first_prob: float) -> None:
    cfg = DegradationConfig(stage2=replace(Stage2Config(), sinc_first_prob=sinc_first_prob))
    y = degrade(face128.repeat(2, 1, 1, 1), _gen(4), cfg)
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_preserves_non_square_odd_shape_and_dtype() -> None:
    x = torch.rand(2, 3, 101, 67, dtype=torch.float64)
    y = degrade(x, _gen(3))
    assert y.shape == x.shape and y.dtype == torch.float64


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        degrade(torch.rand(2, 1, 32, 32), _gen(0))
    with pytest.raises(TypeError):
        degrade(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), _gen(0))


def test_everything_disabled_is_identity(face128: torch.Tensor) -> None:
    assert torch.equal(degrade(face128, _gen(0), _quiet()), face128)


# ------------------------------------------------------------------------------------------------ seeding


def test_same_seed_same_output_different_seed_different(face128: torch.Tensor) -> None:
    x = face128.repeat(3, 1, 1, 1)
    for seed in (0, 1):
        a = degrade(x, _gen(seed))
        b = degrade(x, _gen(seed))
        c = degrade(x, _gen(seed + 100))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_samples_in_a_batch_differ(face128: torch.Tensor) -> None:
    y = degrade(face128.repeat(2, 1, 1, 1), _gen(5))
    assert not torch.equal(y[0], y[1])


# ------------------------------------------------------------------------------------------------ stages


def test_jpeg_quality_10_damages_more_than_90(face128: torch.Tensor) -> None:
    x = face128.repeat(2, 1, 1, 1)
    low = degrade(x, _gen(0), _quiet(jpeg=JpegConfig(quality=(10, 10))))
    high = degrade(x, _gen(0), _quiet(jpeg=JpegConfig(quality=(90, 90))))
    assert _psnr(high, x) > 30.0
    assert _psnr(low, x) < _psnr(high, x) - 6.0


def test_jpeg_compress_matches_opencv_directly(face128: torch.Tensor) -> None:
    got = jpeg_compress(face128, [20])
    rgb = (face128[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), 20])
    want = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255
    assert np.array_equal(got[0].permute(1, 2, 0).numpy(), want)


def test_resize_down_by_half_removes_high_frequencies(face128: torch.Tensor) -> None:
    down = ResizeConfig(up_prob=0.0, down_prob=1.0, keep_prob=0.0, scale=(0.5, 0.5), modes=("bilinear",))
    shrunk = degrade(face128, _gen(0), _quiet(resize=down))
    kept = degrade(face128, _gen(0), _quiet(resize=replace(down, scale=(1.0, 1.0))))
    assert torch.equal(kept, face128)
    assert _laplacian_var(shrunk) < 0.5 * _laplacian_var(kept)


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_gaussian_noise_std_matches_sigma(sigma: float) -> None:
    flat = torch.full((4, 3, 128, 128), 128 / 255)
    noise = NoiseConfig(gaussian_prob=1.0, gaussian_sigma=(sigma, sigma), gray_prob=0.0)
    residual = degrade(flat, _gen(0), _quiet(noise=noise)) - flat
    assert abs(float(residual.mean())) < 0.002
    assert float(residual.std()) == pytest.approx(sigma / 255, rel=0.05)
    # Colour noise: independent channels.
    r, g = residual[:, 0].flatten(), residual[:, 1].flatten()
    assert abs(float(torch.corrcoef(torch.stack([r, g]))[0, 1])) < 0.05


def test_gray_noise_is_identical_across_channels() -> None:
    flat = torch.full((2, 3, 64, 64), 0.5)
    for gaussian_prob in (0.0, 1.0):
        noise = NoiseConfig(gaussian_prob=gaussian_prob, gray_prob=1.0, poisson_scale=(1.0, 1.0))
        y = degrade(flat, _gen(1), _quiet(noise=noise))
        assert not torch.equal(y, flat)
        assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


@pytest.mark.parametrize(("levels", "scale"), [(256, 1.0), (16, 0.25)])
def test_poisson_noise_std_matches_shot_noise_model(levels: int, scale: float) -> None:
    # An image with `levels` distinct values counts photons in `levels` steps: variance at value v is v / levels.
    values = torch.linspace(0, 1, levels).mul(255).round().div(255)
    img = values.repeat_interleave(256 // levels).view(1, 1, 1, 256).expand(2, 3, 128, 256)
    noise = NoiseConfig(gaussian_prob=0.0, poisson_scale=(scale, scale), gray_prob=0.0)
    residual = degrade(img, _gen(0), _quiet(noise=noise)) - img
    expected = scale * math.sqrt(float(img.mean()) / levels)
    assert float(residual.std()) == pytest.approx(expected, rel=0.1)


def test_half_mode_lowers_laplacian_variance_deterministically(face256: torch.Tensor) -> None:
    cfg = DegradationConfig(mode="half")
    y = degrade(face256, _gen(0), cfg)
    assert torch.equal(y, degrade(face256, _gen(1), cfg))
    assert _laplacian_var(y) < 0.6 * _laplacian_var(face256)
    assert _psnr(y, face256) > 25.0
    # A milder factor keeps more detail.
    mild = degrade(face256, _gen(0), replace(cfg, half=HalfConfig(factor=0.8)))
    assert _laplacian_var(y) < _laplacian_var(mild)


# ------------------------------------------------------------------------------------------------ kernels


def test_blur_kernels_sum_to_one_with_right_size_and_support() -> None:
    k = blur_kernels(256, BlurKernelConfig(), _gen(0))
    assert k.shape == (256, 21, 21)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(256), atol=1e-5)
    outside = k.clone()
    outside[:, 8:13, 8:13] = 0  # the centred 5×5 square
    assert float(outside.abs().max()) == 0.0
    assert torch.allclose(k, k.flip(1, 2), atol=1e-6)  # every family is point-symmetric
    three = blur_kernels(16, BlurKernelConfig(sizes=(3,)), _gen(0))
    assert float(three[:, 9:12, 9:12].sum(dim=(1, 2)).sub(1).abs().max()) < 1e-5


def test_isotropic_gaussian_matches_formula() -> None:
    cfg = BlurKernelConfig(
        sizes=(5,), sinc_prob=0.0, sigma=(0.5, 0.5), mix=KernelMix(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    )
    k = blur_kernels(3, cfg, _gen(0))[:, 8:13, 8:13]
    ax = np.arange(-2, 3)
    g = np.exp(-(ax[None, :] ** 2 + ax[:, None] ** 2) / (2 * 0.5**2))
    assert np.allclose(k.numpy(), np.broadcast_to(g / g.sum(), (3, 5, 5)), atol=1e-6)


def _only(family: str) -> KernelMix:
    families = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
    weights = dict.fromkeys(families, 0.0)
    weights[family] = 1.0
    return KernelMix(**weights)


@pytest.mark.parametrize(("family", "beta"), [("generalized_iso", 0.5), ("plateau_iso", 0.7), ("plateau_iso", 1.1)])
def test_shaped_kernels_match_formulas(family: str, beta: float) -> None:
    sigma = 0.4
    cfg = BlurKernelConfig(
        sizes=(5,), sinc_prob=0.0, mix=_only(family), sigma=(sigma, sigma),
        beta_gaussian=(beta, beta), beta_plateau=(beta, beta),
    )
    k = blur_kernels(4, cfg, _gen(0))[:, 8:13, 8:13].numpy()
    ax = np.arange(-2, 3, dtype=np.float64)
    q = (ax[None, :] ** 2 + ax[:, None] ** 2) / sigma**2
    ref = np.exp(-0.5 * q**beta) if family.startswith("generalized") else 1 / (1 + q**beta)
    assert np.allclose(k, np.broadcast_to(ref / ref.sum(), k.shape), atol=1e-6)


def test_anisotropic_gaussians_have_covariances_in_range() -> None:
    # log k = -1/2 x^T S^-1 x + c exactly; fit S^-1 by least squares and check its eigenvalues.
    low, high = 0.3, 0.6
    cfg = BlurKernelConfig(sizes=(5,), sinc_prob=0.0, mix=_only("aniso"), sigma=(low, high))
    k = blur_kernels(32, cfg, _gen(0))[:, 8:13, 8:13].double().numpy()
    ax = np.arange(-2, 3, dtype=np.float64)
    x, y = (a.ravel() for a in np.meshgrid(ax, ax))
    design = np.stack([x * x, 2 * x * y, y * y, np.ones_like(x)], 1)
    rotated = 0
    for kernel in k:
        coef, res, *_ = np.linalg.lstsq(design, np.log(kernel.ravel()), rcond=None)
        assert float(res[0]) < 1e-6  # really a Gaussian
        inv = -2 * np.array([[coef[0], coef[1]], [coef[1], coef[2]]])
        sig = np.sqrt(1 / np.linalg.eigvalsh(inv))
        assert np.all(sig > low - 1e-3) and np.all(sig < high + 1e-3)
        rotated += abs(coef[1]) > 1e-3
    assert rotated > 16  # rotations are random, so most kernels are tilted


def test_sinc_kernel_matches_circular_lowpass() -> None:
    omega = math.pi / 2
    k = blur_kernels(2, BlurKernelConfig(sizes=(5,), sinc_prob=1.0, sinc_omega=(omega, omega)), _gen(0))
    ax = np.arange(-2, 3, dtype=np.float64)
    r = np.hypot(ax[None, :], ax[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(r > 0, omega * special.j1(omega * r) / (2 * np.pi * r), omega**2 / (4 * np.pi))
    assert np.allclose(k[0, 8:13, 8:13].numpy(), ref / ref.sum(), atol=1e-5)


def test_final_sinc_kernels() -> None:
    k = sinc_kernels(64, SincConfig(), _gen(0))
    assert k.shape == (64, 11, 11)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(64), atol=1e-5)
    pulses = int((k[:, 5, 5] == 1).sum())
    assert 3 <= pulses <= 25  # about 20% identity pulses
    off = sinc_kernels(8, SincConfig(prob=0.0), _gen(0))
    assert float(off[:, 5, 5].min()) == 1.0 and float(off.sum()) == 8.0


def test_filter2d_is_a_per_sample_convolution_with_reflect_padding() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((2, 3, 20, 17), dtype=np.float32))
    kernels = torch.zeros(2, 21, 21)
    kernels[:, 8:13, 8:13] = torch.from_numpy(rng.random((2, 5, 5), dtype=np.float32))  # not symmetric
    got = filter2d(images, kernels).numpy()
    for b in range(2):
        for c in range(3):
            want = ndimage.convolve(images[b, c].numpy(), kernels[b, 8:13, 8:13].numpy(), mode="mirror")
            assert np.allclose(got[b, c], want, atol=1e-5)


# ------------------------------------------------------------------------------------------------ config


def test_yaml_file_holds_the_defaults() -> None:
    assert DegradationConfig.from_yaml(REPO / "configs" / "degradation.yaml") == DegradationConfig()


def test_defaults_are_adasr_values() -> None:
    cfg = DegradationConfig()
    assert cfg.stage1.kernel.sizes == (3, 5) and cfg.stage1.kernel.pad_to == 21
    assert cfg.stage1.jpeg.quality == (10, 25) and cfg.stage2.jpeg.quality == (10, 25)
    assert cfg.stage2.kernel.beta_plateau == (1.0, 1.2) and cfg.stage1.kernel.beta_plateau == (0.5, 1.2)
    assert (cfg.stage2.resize.up_prob, cfg.stage2.resize.down_prob) == (0.3, 0.4)
    assert cfg.stage2.blur_prob == 0.8 and cfg.stage2.final_sinc.pad_to == 11


def test_dict_round_trip_and_partial_override() -> None:
    cfg = DegradationConfig.from_dict({"mode": "half", "stage1": {"jpeg": {"quality": [30, 40]}}})
    assert cfg.mode == "half" and cfg.stage1.jpeg.quality == (30, 40)
    assert cfg.stage2 == DegradationConfig().stage2
    assert DegradationConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"stage1": {"noise": {"sigma": [1, 2]}}}, "degradation.stage1.noise: unknown key(s) ['sigma']"),
        ({"stage3": {}}, "unknown key(s) ['stage3']"),
        ({"mode": "quarter"}, "degradation.mode"),
        ({"stage2": {"blur_prob": 1.5}}, "degradation.stage2: blur_prob"),
        ({"stage1": {"jpeg": {"quality": [25, 10]}}}, "degradation.stage1.jpeg: quality"),
        ({"stage1": {"jpeg": {"quality": [10.5, 20]}}}, "degradation.stage1.jpeg.quality[0]"),
        ({"stage1": {"kernel": {"sizes": [4]}}}, "sizes must be odd"),
        ({"stage1": {"resize": {"modes": ["lanczos"]}}}, "modes"),
        ({"stage2": "yes"}, "degradation.stage2: expected a mapping"),
    ],
)
def test_bad_config_is_rejected_with_its_path(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(DegradationConfigError) as err:
        DegradationConfig.from_dict(data)
    assert fragment in str(err.value)


# ------------------------------------------------------------------------------------------------ grid


def test_draw_grid_writes_a_png_of_the_expected_layout(face128: torch.Tensor, tmp_path: Path) -> None:
    images = torch.cat([face128, face128.flip(-1)])
    path = draw_grid(images, DegradationConfig(), seed=0, out_path=tmp_path / "sub" / "grid.png", samples=3)
    img = cv2.imread(str(path))
    assert img.shape == (2 * 128 + 3 * 4, 4 * 128 + 5 * 4, 3)
    clean = img[4 : 4 + 128, 4 : 4 + 128, ::-1].astype(np.float32) / 255
    assert np.allclose(clean, face128[0].permute(1, 2, 0).numpy(), atol=1 / 255)
    first, second = img[4 : 4 + 128, 136 : 136 + 128], img[4 : 4 + 128, 268 : 268 + 128]
    assert not np.array_equal(first, second)  # the columns are independent draws


# ------------------------------------------------------------------------------------------------ device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator(face128: torch.Tensor) -> None:
    x = face128.repeat(4, 1, 1, 1)
    on_gpu = degrade(x.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == x.shape
    cpu = degrade(x, _gen(7))
    mixed = degrade(x.cuda(), _gen(7)).cpu()
    assert float((cpu - mixed).abs().mean()) < 2 / 255
