"""Network structure: the official preset matches the released manifest; every preset runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adasr.config import ModelConfig, load_model_config, preset_names
from adasr.deployable import MotionExtractor, Renderer, SourceEncoder
from adasr.blocks import SPADE
from adasr.detail_path import (catmull_rom, catmull_rom_weights, pack_detail, pixel_centre_grid, sample_border,
                               second_differences, unpack_detail)
from adasr.discriminator import MultiScaleDiscriminator
from adasr.errors import ConfigError
from adasr.expression_rig import NUM_ANCHORS
from adasr.expression_signal import NUM_FEATURES
from adasr.folding import fold_for_inference
from adasr.networks import AdaSRNetworks
from adasr.spade_folding import FoldedSPADEResnetBlock, subpixel_conv_weight

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
    expression = torch.zeros(1, cfg.he_estimator.expression_inputs) if cfg.he_estimator.expression_inputs else None
    with torch.no_grad():
        src = SourceEncoder(nets)(image, expression)
        motion = MotionExtractor(nets)(image, expression)
        frame = Renderer(nets)(src.f_s, src.x_c, src.x_c + 0.05, torch.zeros(1, NUM_ANCHORS, 2),
                               torch.zeros(1, NUM_FEATURES))
    assert src.f_s.shape == (1, *cfg.source_volume_shape())
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
    decoder = nets.generator.decoder
    assert all(isinstance(getattr(decoder, name), FoldedSPADEResnetBlock) for name in ("G_middle_0", "up_0", "up_1"))
    assert (after - before).abs().max() < 2e-5
    assert (after_kp - before_kp).abs().max() < 2e-5
    assert (after_he.yaw - before_he.yaw).abs().max() < 1e-3


def test_subpixel_conv_equals_a_conv_after_nearest_upsampling() -> None:
    """The identity behind the SPADE fold, borders included, for every factor the decoder uses."""
    torch.manual_seed(0)
    seg, weight, bias = torch.randn(2, 5, 7, 6), torch.randn(4, 5, 3, 3), torch.randn(4)
    for k in (1, 2, 4):
        direct = F.conv2d(F.interpolate(seg, scale_factor=k, mode="nearest"), weight, bias, padding=1)
        folded = F.pixel_shuffle(F.conv2d(seg, subpixel_conv_weight(weight, k), bias.repeat_interleave(k * k),
                                          padding=1), k)
        assert (folded - direct).abs().max() < 1e-5


def test_folded_lite_renderer_renders_the_same_frame(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """Lite with its detail path and source blend: every SPADE block folded, the frame unchanged."""
    from adasr.folding import fold_batch_norms, fold_spectral_norms
    from adasr.image_ops import image_to_tensor
    from adasr.spade_folding import fold_spade_blocks

    cfg = load_model_config("lite")
    cfg.image_size = 128
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg).eval()
    for module in nets.modules():  # trained-like weights: SPADE's γ/β and the zero-initialised parts count
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            torch.nn.init.normal_(module.bias, std=0.1)
    fold_spectral_norms(nets)
    fold_batch_norms(nets)
    source = image_to_tensor(astronaut_face, 128)
    with torch.no_grad():
        f_s, kp = nets.generator.encode(source), nets.kp_detector(source)
        kp_d = kp + torch.tensor([0.05, -0.02, 0.0])
        before = nets.generator.render(f_s, kp, kp_d).prediction
        assert fold_spade_blocks(nets.generator.decoder) == 2  # one middle block, one up block (coarse γ, β)
        after = nets.generator.render(f_s, kp, kp_d).prediction
    assert before.std() > 0.01
    assert (after - before).abs().max() < 2e-5


def test_folded_parts_stay_where_the_model_is() -> None:
    """A backend moves the model first (CUDA, another dtype), then folds: the new convs must follow it."""
    nets = AdaSRNetworks(load_model_config("lite")).to(torch.float64)
    fold_for_inference(nets)
    assert isinstance(nets.generator.decoder.up_0, FoldedSPADEResnetBlock)
    assert {p.dtype for p in nets.parameters()} == {torch.float64}


def test_folding_refuses_training_mode() -> None:
    from adasr.folding import fold_batch_norms

    with pytest.raises(RuntimeError, match="eval"):
        fold_batch_norms(AdaSRNetworks(load_model_config("tiny-official")).train())


def test_every_preset_is_valid() -> None:
    assert {"official", "lite"} <= set(preset_names())
    for name in preset_names():
        load_model_config(name)


def test_coarse_modulation_convolves_at_the_map_resolution_and_resizes() -> None:
    """Coarse SPADE: γ and β from the 16² map, resized to the 64² input; same parameters as the released kind."""
    torch.manual_seed(0)
    fine, coarse = SPADE(4, 6, 5), SPADE(4, 6, 5, coarse=True)
    coarse.load_state_dict(fine.state_dict())
    x, seg = torch.randn(1, 4, 64, 64), torch.randn(1, 6, 16, 16)
    actv = coarse.mlp_shared(seg)
    gamma = F.interpolate(coarse.mlp_gamma(actv), size=(64, 64), mode="bilinear", align_corners=False)
    beta = F.interpolate(coarse.mlp_beta(actv), size=(64, 64), mode="bilinear", align_corners=False)
    expected = F.instance_norm(x, eps=1e-5) * (1 + gamma) + beta
    assert (coarse(x, seg) - expected).abs().max() < 1e-5
    assert (fine(x, seg) - expected).abs().max() > 1e-2


def test_one_up_block_needs_matching_widths() -> None:
    cfg = load_model_config("lite")
    assert cfg.generator.decoder.num_up_blocks == 1
    assert AdaSRNetworks(cfg).generator.decoder.up_1 is None
    cfg.generator.decoder.up_channels = 16
    with pytest.raises(ConfigError, match="num_up_blocks"):
        cfg.validate()


def test_border_sampling_by_clamping_equals_border_padding() -> None:
    """``sample_border`` (clamp, then zero padding: ONNX Runtime's fast path) is grid_sample's border mode."""
    torch.manual_seed(0)
    image = torch.rand(2, 5, 32, 32, dtype=torch.float64)
    grid = torch.rand(2, 40, 24, 2, dtype=torch.float64) * 3 - 1.5  # far outside on every side
    border = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (sample_border(image, grid) - border).abs().max() < 1e-12
    with pytest.raises(ValueError, match="square"):
        sample_border(image[..., :16], grid)


def _catmull_rom_by_taps(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Reference: the 4 × 4 Catmull-Rom taps of each sampling point, edge pixels repeated (border padding)."""
    size = image.shape[-1]
    pixel = (grid.clamp(-1 + 1 / size, 1 - 1 / size) + 1) * size / 2 - 0.5
    base, f = pixel.floor(), pixel - pixel.floor()
    taps = torch.stack([(-f**3 + 2 * f**2 - f) / 2, (3 * f**3 - 5 * f**2 + 2) / 2,
                        (-3 * f**3 + 4 * f**2 + f) / 2, (f**3 - f**2) / 2], dim=-1)  # B, S', S', 2, 4
    out = torch.zeros(image.shape[0], image.shape[1], *grid.shape[1:3], dtype=image.dtype)
    for i in range(4):
        for j in range(4):
            x = (base[0, ..., 0] - 1 + i).long().clamp(0, size - 1)
            y = (base[0, ..., 1] - 1 + j).long().clamp(0, size - 1)
            out += (taps[..., 0, i] * taps[..., 1, j]).unsqueeze(1) * image[:, :, y, x]
    return out


def _cubic_sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """What the renderer does: bilinear samples of the photo and its second differences, then Catmull-Rom."""
    size = image.shape[-1]
    samples = sample_border(torch.cat([image, second_differences(image)], dim=1), grid)
    return catmull_rom(samples, *catmull_rom_weights(grid, size))


def test_catmull_rom_from_second_differences_equals_the_sixteen_taps() -> None:
    """Bilinear samples of the photo and its second differences, weighted by f(1 − f)/2, are Catmull-Rom
    exactly, borders included."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    grid = torch.rand(1, 20, 20, 2, dtype=torch.float64) * 2.2 - 1.1  # some points outside the image
    assert (_cubic_sample(image, grid) - _catmull_rom_by_taps(image, grid)).abs().max() < 1e-12


def test_cubic_photo_warp_keeps_detail_a_bilinear_warp_loses(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """The astronaut moved by half a pixel: the truth is the same photo filmed half a pixel over (box-filtered
    from twice the resolution at the other phase). Catmull-Rom lands nearer the truth and keeps its fine
    detail; bilinear averages neighbours and loses it. On pixel centres both give the photo back exactly."""
    from adasr.evaluation.metrics import detail
    from adasr.image_ops import image_to_tensor

    fine = image_to_tensor(astronaut_face, 256).double()
    photo = F.avg_pool2d(fine, 2)
    truth = F.avg_pool2d(fine[..., 1:-1], 2)[..., 1:-1]  # one fine pixel = half a coarse pixel to the right
    grid = pixel_centre_grid(128, photo).unsqueeze(0)
    assert torch.equal(_cubic_sample(photo, grid), photo)
    shifted = grid + torch.tensor([1 / 128, 0.0], dtype=photo.dtype)  # half a pixel in normalised units
    results = {"bilinear": sample_border(photo, shifted), "cubic": _cubic_sample(photo, shifted)}
    as_uint8 = {k: (v[0, :, :, 1:-2].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
                for k, v in results.items()}
    truth_uint8 = (truth[0].permute(1, 2, 0) * 255).round().byte().numpy()
    error = {k: float((v[..., 1:-2] - truth).abs().mean()) for k, v in results.items()}
    kept = {k: detail(v, truth_uint8) for k, v in as_uint8.items()}
    assert error["cubic"] < 0.8 * error["bilinear"]  # measured 0.74×
    assert kept["bilinear"] < 0.9 and kept["cubic"] > kept["bilinear"] + 0.05  # measured 0.85 and 0.92


def test_cubic_source_interpolation_needs_the_source_blend() -> None:
    cfg = load_model_config("lite")
    cfg.generator.blend_source = False
    with pytest.raises(ConfigError, match="'cubic' needs blend_source"):
        cfg.validate()


def test_detail_map_packs_into_the_volume_and_back() -> None:
    detail = torch.rand(2, 8, 64, 64)
    packed = pack_detail(detail, depth=8)
    assert packed.shape == (2, 16, 8, 16, 16)
    assert torch.equal(unpack_detail(packed), detail)


def test_lite_detail_path_gives_the_source_detail_back_under_identity_motion(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """Driving = source: the 2-D flow is the identity, so the warped detail map is the encoded one, pixel for pixel;
    any other motion moves it. And the detail that rides in f_s reaches the frame."""

    from adasr.image_ops import image_to_tensor

    cfg = load_model_config("lite")
    cfg.image_size = 128
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg).eval()
    torch.nn.init.normal_(nets.generator.decoder.detail_fusion.out.weight, std=0.1)  # zero at init: make it count
    gen = nets.generator
    with torch.no_grad():
        f_s = gen.encode(image_to_tensor(astronaut_face, 128))
        assert f_s.shape == (1, *cfg.source_volume_shape())
        kp = nets.kp_detector(image_to_tensor(astronaut_face, 128))
        detail = unpack_detail(f_s[:, cfg.feature_channel:])
        grids = {}
        for name, kp_d in (("identity", kp), ("moved", kp + torch.tensor([0.1, 0.0, 0.0]))):
            motion = gen.dense_motion_network(f_s[:, :cfg.feature_channel], kp, kp_d)
            grids[name], _ = gen.detail_flow(motion.features, motion.deformation, 128)
        same = F.grid_sample(detail, grids["identity"], align_corners=False)
        assert (same - detail).abs().max() < 1e-4
        assert (grids["identity"] - pixel_centre_grid(128, detail)).abs().max() < 1e-5
        assert (grids["moved"] - grids["identity"]).abs().mean() > 1e-2
        frame = gen.render(f_s, kp, kp).prediction
        without = f_s.clone()
        without[:, cfg.feature_channel:] = 0
        assert (gen.render(without, kp, kp).prediction - frame).abs().max() > 1e-3


def test_lite_source_blend_gives_the_photo_back_under_identity_motion(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """The source RGB rides in f_s after the detail map; with driving = source its warp is the identity, so a
    mask of one renders the photo itself, a mask of zero the decoder alone, and a real mask lies between."""
    from adasr.image_ops import image_to_tensor

    cfg = load_model_config("lite")
    cfg.image_size = 128
    assert cfg.generator.blend_source
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg).eval()
    gen = nets.generator
    blend = gen.decoder.source_blend
    source = image_to_tensor(astronaut_face, 128)
    with torch.no_grad():
        f_s = gen.encode(source)
        assert cfg.generator.source_interpolation == "cubic"  # the photo, then its three second differences
        assert f_s.shape == (1, cfg.feature_channel + (8 + 3 * 4) * 16 // 8, 8, 32, 32)
        assert torch.equal(unpack_detail(f_s[:, cfg.feature_channel:])[:, 8:11], source)
        kp = nets.kp_detector(source)
        renders, masks = {}, {}
        for bias in (30.0, -30.0, 0.0):
            torch.nn.init.constant_(blend.mask.bias, bias)
            renders[bias], masks[bias] = gen.render(f_s, kp, kp)[::5]  # prediction, blend_mask
        torch.nn.init.constant_(blend.mask.bias, 0.0)
        moved = gen.render(f_s, kp, kp + torch.tensor([0.1, 0.0, 0.0])).prediction
    assert (renders[30.0] - source).abs().max() < 1e-4
    decoded = renders[-30.0]
    assert (decoded - source).abs().mean() > 0.05  # random weights: the decoder alone is far from the photo
    assert torch.allclose(renders[0.0], (decoded + source) / 2, atol=1e-5)
    assert masks[0.0].shape == (1, 1, 128, 128) and torch.allclose(masks[0.0], torch.full_like(masks[0.0], 0.5))
    assert masks[30.0].min() > 0.999 and masks[-30.0].max() < 1e-3  # the mask the frame was blended with
    # a shut eye: over its lids the frame is the warped photo alone (the decoded picture's eye stays open)
    from adasr.demo_media import ASTRONAUT_FACE_ANCHORS, ASTRONAUT_FACE_RATIOS
    from adasr.expression_rig import ANCHORS, ExpressionRig
    from adasr.expression_signal import FEATURE_NAMES, NUM_FEATURES

    anchors = torch.from_numpy(ASTRONAUT_FACE_ANCHORS.copy())[None]
    change = torch.zeros(1, NUM_FEATURES)
    right_eye = FEATURE_NAMES.index("right_eye_open")
    change[0, right_eye] = -float(ASTRONAUT_FACE_RATIOS[right_eye])
    with torch.no_grad():
        shut = gen.render(f_s, kp, kp, rig=ExpressionRig()(anchors, change)).blend_mask
    assert shut is not None
    lid_x, lid_y = ((anchors[0, [ANCHORS.index(i) for i in (159, 158, 160)]].mean(0) + 1) / 2 * 128).long().tolist()
    assert float(shut[0, 0, lid_y, lid_x]) > 0.95  # a learned mask of 0.5 there
    assert torch.allclose(shut[..., 100:, :], masks[0.0][..., 100:, :])  # below the eyes: the learned mask
    assert (moved - renders[0.0]).abs().mean() > 1e-3


def test_source_blend_needs_the_detail_path() -> None:
    cfg = load_model_config("lite")
    cfg.generator.detail_channels = 0
    with pytest.raises(ConfigError, match="blend_source needs detail_channels"):
        cfg.validate()
