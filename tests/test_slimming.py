"""A slimmer model's starting weights from a trained one (adasr.training.slimming): half the volume's depth planes,
the decoder's middle blocks dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adasr.checkpoint import LoadedModel
from adasr.config import ModelConfig, load_model_config
from adasr.errors import ConfigError
from adasr.networks import AdaSRNetworks
from adasr.training.slimming import _pair_planes, check_slimmable, slim_model

from .training_fixtures import TINY_MODEL, narrow_encoder, shallower


def _wide(block_expansion: int = 2) -> ModelConfig:
    """The tiny training preset with lite's full-resolution path (detail map, source blend), its 2-D widths under
    both depths' ``max_features`` (as lite's are) unless told otherwise."""
    cfg = load_model_config(TINY_MODEL)
    cfg.generator.detail_channels, cfg.generator.blend_source = 4, True
    return narrow_encoder(cfg, block_expansion)


def test_a_conv_reading_paired_planes_answers_as_before_where_the_pairs_agree() -> None:
    """The convs that read the volume's planes as channels (c·D + d) get each pair's weights summed: on a volume
    whose paired planes are equal, the merged volume gives the same response."""
    torch.manual_seed(0)
    c, d, k = 3, 4, 5
    weight = torch.randn(k, c * d, 3, 3)
    half = torch.randn(1, c, d // 2, 6, 6)
    volume = half.repeat_interleave(2, dim=2)  # planes 2j and 2j+1 equal
    before = F.conv2d(volume.flatten(1, 2), weight, padding=1)
    after = F.conv2d(half.flatten(1, 2), _pair_planes(weight, 1, d, 2, "sum"), padding=1)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_a_slimmed_model_loads_strictly_its_planes_the_mean_of_the_old_pairs() -> None:
    wide = _wide()
    torch.manual_seed(1)
    trained = AdaSRNetworks(wide).eval()
    slim = slim_model(LoadedModel(trained, wide, "tiny", Path("random")), shallower(wide, 2, 0))
    assert slim.generator.decoder.num_middle_blocks == 0
    x = torch.randn(1, trained.generator.second.in_channels, 5, 5)
    old = trained.generator.second(x).view(1, wide.generator.reshape_channel, 4, 5, 5)
    new = slim.generator.second(x).view(1, wide.generator.reshape_channel, 2, 5, 5)
    torch.testing.assert_close(new, (old[:, :, 0::2] + old[:, :, 1::2]) / 2, rtol=1e-5, atol=1e-5)
    head = slim.generator.detail_flow.head  # one logit per new plane, and the occlusion's, kept
    assert head is not None and head.out_channels == 3
    torch.testing.assert_close(head.bias[2], trained.generator.detail_flow.head.bias[4])


def test_slimming_refuses_what_it_cannot_start_from() -> None:
    wide = _wide()
    with pytest.raises(ConfigError, match="more decoder middle blocks"):
        check_slimmable(wide, shallower(wide, 2, 2))
    capped = _wide(block_expansion=4)  # the encoder's widths hit max_features, which the depth sets
    with pytest.raises(ConfigError, match="beyond the volume's depth"):
        slim_model(LoadedModel(AdaSRNetworks(capped), capped, "tiny", Path("random")), shallower(capped, 2, 0))
