"""Inference-time folding: spectral norm and batch norm baked into the conv weights.

Both are exact in eval mode: spectral norm divides by σ = uᵀ·W·v with the stored u, v (eval does
no power iteration), and a batch norm after a conv is an affine map per channel. Folding removes
a per-forward σ computation and one memory pass per norm, and gives exporters plain convs. Then the
SPADE decoder's blocks are rewritten to run their segmentation convs at low resolution
(``adasr.spade_folding``), also exact.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

from adasr.spade_decoder import SPADEDecoder
from adasr.spade_folding import fold_spade_blocks

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def fold_spectral_norms(model: nn.Module) -> int:
    """Replace every old-style spectral-norm hook by its current weight; returns how many."""
    count = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                nn.utils.remove_spectral_norm(module, hook.name)
                count += 1
    return count


def _fold_pair(conv: nn.Module, norm: nn.Module) -> bool:
    if not isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm3d)) or not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        return False
    if norm.running_mean is None or norm.running_var is None:
        return False
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # C
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        conv.weight.mul_(scale.view(shape))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        new_bias = (bias - norm.running_mean) * scale + norm.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)
    return True


def fold_batch_norms(model: nn.Module) -> int:
    """Fold each (conv, norm) pair a block lists in ``FOLDABLE``; the norm becomes Identity."""
    if model.training:
        raise RuntimeError("fold batch norms only in eval mode: training updates the running statistics")
    count = 0
    for module in model.modules():
        for conv_name, norm_name in getattr(module, "FOLDABLE", ()):
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if conv is not None and norm is not None and _fold_pair(conv, norm):
                setattr(module, norm_name, nn.Identity())
                count += 1
    return count


def fold_for_inference(model: ModuleT) -> ModuleT:
    """Eval mode, then fold spectral norms, batch norms and the SPADE blocks in place; returns the model."""
    model.eval()
    fold_spectral_norms(model)
    fold_batch_norms(model)
    for module in list(model.modules()):
        if isinstance(module, SPADEDecoder):
            fold_spade_blocks(module)
    return model
