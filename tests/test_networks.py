"""Network structure: the official preset matches the released manifest; every preset runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from adasr.config import ModelConfig, load_model_config, preset_names
from adasr.deployable import MotionExtractor, Renderer, SourceEncoder
from adasr.discriminator import MultiScaleDiscriminator
from adasr.folding import fold_for_inference
from adasr.networks import AdaSRNetworks

MANIFEST = Path(__file__).parent / "data" / "official-512-manifest.json"


def test_official_preset_has_the_released_keys_order_and_shapes() -> None:
    manifest = json.loads(MANIFEST.read_text())["modules"]
    with torch.device("meta"):
        nets = AdaSRNetworks(load_model_config("official"))
    for part in AdaSRNetworks.PARTS:
        ours = {k: list(v.shape) for k, v in getattr(nets, part).state_dict().items()}
        released = manifest[part]["state_dict"]
        assert list(ours) == list(released), part
        assert ours == released, part
        assert sum(p.numel() for p in getattr(nets, part).parameters()) == manifest[part]["num_parameters"]


def test_official_preset_equals_the_defaults() -> None:
    assert load_model_config("official") == ModelConfig()


def test_discriminator_keys_of_the_release() -> None:
    disc = MultiScaleDiscriminator(ModelConfig().discriminator)
    keys = list(disc.state_dict())
    assert len(keys) == 26
    assert "discs.1.down_blocks.0.conv.weight_orig" in keys and "discs.1.conv.weight_v" in keys
    out = disc([torch.rand(1, 3, 64, 64)])[0]
    assert len(out.features) == 4 and out.prediction.shape[1] == 1


@pytest.mark.parametrize("preset", ["lite", "tiny-official"])
def test_presets_run_and_give_images(preset: str) -> None:
    cfg = load_model_config(preset)
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg).eval()
    image = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        src = SourceEncoder(nets)(image)
        motion = MotionExtractor(nets)(image)
        frame = Renderer(nets)(src.f_s, src.x_c, src.x_c + 0.05)
    h = cfg.image_size // 4
    assert src.f_s.shape == (1, cfg.feature_channel, cfg.generator.reshape_depth, h, h)
    assert src.x_c.shape == (1, cfg.num_kp, 3) and src.x_c.abs().max() <= 1
    assert motion.delta.shape == (1, cfg.num_kp, 3) and motion.yaw.shape == (1,)
    assert -99 <= motion.yaw.item() <= 96
    assert frame.shape == (1, 3, cfg.image_size, cfg.image_size)
    assert torch.isfinite(frame).all() and 0 <= frame.min() and frame.max() <= 1


def test_appearance_norm_none_drops_the_encoder_norms() -> None:
    cfg = load_model_config("tiny-official")
    cfg.generator.appearance_norm = "none"
    keys = AdaSRNetworks(cfg).generator.state_dict()
    assert not any(k.startswith(("first.norm", "down_blocks.0.norm", "resblocks_3d.3dr0.norm")) for k in keys)
    assert "third.norm.running_mean" in keys  # the warp path keeps its batch norm


def test_folding_changes_nothing_numerically(tiny_model, vectors) -> None:  # type: ignore[no-untyped-def]
    nets = copy.deepcopy(tiny_model.networks)
    with torch.no_grad():
        before_kp = nets.kp_detector(vectors["source"])
        before_he = nets.he_estimator(vectors["driving_1"])
        before = nets.generator(vectors["source"], vectors["kp_source"], vectors["kp_norm_1"]).prediction
        fold_for_inference(nets)
        after = nets.generator(vectors["source"], vectors["kp_source"], vectors["kp_norm_1"]).prediction
        after_he = nets.he_estimator(vectors["driving_1"])
        after_kp = nets.kp_detector(vectors["source"])
    left = [n for n, m in nets.named_modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d)]
    assert left and all("resblocks_3d" in n and n.endswith("norm1") for n in left)  # pre-activation: no conv before
    assert not any("weight_orig" in k for k in nets.state_dict())
    assert (after - before).abs().max() < 2e-5
    assert (after_kp - before_kp).abs().max() < 2e-5
    assert (after_he.yaw - before_he.yaw).abs().max() < 1e-3


def test_folding_refuses_training_mode() -> None:
    from adasr.folding import fold_batch_norms

    with pytest.raises(RuntimeError, match="eval"):
        fold_batch_norms(AdaSRNetworks(load_model_config("tiny-official")).train())


def test_every_preset_is_valid() -> None:
    assert {"official", "lite"} <= set(preset_names())
    for name in preset_names():
        load_model_config(name)
