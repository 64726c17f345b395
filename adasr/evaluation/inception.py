"""Inception-v3 feature extractor for FID, loading user-supplied weights (no download, no torchvision).

The network is written out here so that FID needs nothing beyond torch; the parameter names follow
torchvision's ``Inception3`` state-dict layout (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1…``),
which is also the layout of pytorch-fid's port of the TensorFlow FID network. Two variants:

* ``torchvision``: ImageNet weights saved from ``torchvision.models.inception_v3`` (1000 classes);
* ``tf-fid``: pytorch-fid's ``pt_inception-2015-12-05`` weights (1008 classes), with the TF graph's
  pooling quirks (average pools that ignore padding, a max pool in the last block). Only this one
  gives numbers comparable with published FIDs.

The variant is picked from the classifier's size in the file. Features are the 2048-d average pool
before the classifier, computed on 299×299 bilinear resizes scaled to [-1, 1] (the net effect of
torchvision's ``transform_input`` on ImageNet-normalised input, and what pytorch-fid feeds).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Variant = Literal["torchvision", "tf-fid"]
#: Classifier sizes that identify the variant.
TF_FID_CLASSES = 1008
INPUT_SIZE = 299
FEATURE_DIM = 2048


class _Conv(nn.Module):
    """conv (no bias) → batch norm (eps 1e-3) → ReLU, named ``conv``/``bn`` as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor, tf: bool) -> torch.Tensor:
    """3×3 stride-1 average pool; the TF graph divides by the in-image count only."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not tf)


class _BlockA(nn.Module):
    def __init__(self, cin: int, pool_features: int, tf: bool) -> None:
        super().__init__()
        self.tf = tf
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x, self.tf)),
        ], 1)


class _BlockB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    def __init__(self, cin: int, c7: int, tf: bool) -> None:
        super().__init__()
        self.tf = tf
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg3(x, self.tf)),
        ], 1)


class _BlockD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    def __init__(self, cin: int, pool: Literal["avg", "avg-tf", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = _avg3(x, self.pool == "avg-tf")
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], 1)


class InceptionFeatures(nn.Module):
    """Inception-v3 up to the 2048-d global average pool; input [N, 3, H, W] in [0, 1]."""

    def __init__(self, variant: Variant = "torchvision") -> None:
        super().__init__()
        tf = variant == "tf-fid"
        self.variant = variant
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32, tf)
        self.Mixed_5c = _BlockA(256, 64, tf)
        self.Mixed_5d = _BlockA(288, 64, tf)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128, tf)
        self.Mixed_6c = _BlockC(768, 160, tf)
        self.Mixed_6d = _BlockC(768, 160, tf)
        self.Mixed_6e = _BlockC(768, 192, tf)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, "avg-tf" if tf else "avg")
        self.Mixed_7c = _BlockE(2048, "max" if tf else "avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def variant_of(state: dict[str, torch.Tensor]) -> Variant:
    """``tf-fid`` when the file's classifier has pytorch-fid's 1008 classes, else ``torchvision``."""
    fc = state.get("fc.weight")
    return "tf-fid" if fc is not None and fc.shape[0] == TF_FID_CLASSES else "torchvision"


def load_inception(state: dict[str, torch.Tensor]) -> InceptionFeatures:
    """The feature network with ``state`` loaded (classifier and auxiliary head ignored), in eval mode.

    Raises KeyError/RuntimeError (with torch's message) when a feature layer is missing or misshapen.
    """
    net = InceptionFeatures(variant_of(state))
    features = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    net.load_state_dict(features, strict=True)
    return net.eval()
