"""The cached pipeline on real faces: SourceState once, then motion → keypoints → frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasr import motion_layout
from adasr.errors import ConfigError
from adasr.keypoints import Motion
from engines.talking_head import TalkingHead
from engines.torch_backend import TorchBackend, TorchOptions


@pytest.fixture(scope="module")
def head(tiny_model) -> TalkingHead:  # type: ignore[no-untyped-def]
    return TalkingHead(TorchBackend(tiny_model))


def test_cached_source_equals_the_uncached_generator(head, tiny_model, astronaut_face, carphone_frames) -> None:  # type: ignore[no-untyped-def]
    state = head.prepare_source(astronaut_face)
    motion = head.extract_motion(carphone_frames[10])
    frame = head.render(state, motion)
    src = head.to_input(astronaut_face)
    kp_d = head.driving_keypoints(state, motion, None)
    with torch.no_grad():
        direct = tiny_model.networks.generator(src, state.kp_source, kp_d).prediction
    assert (frame - direct).abs().max() < 1e-4


def test_relative_mode_reproduces_the_source_pose_on_the_reference_frame(head, astronaut_face, carphone_frames) -> None:  # type: ignore[no-untyped-def]
    state = head.prepare_source(astronaut_face)
    reference = head.extract_motion(carphone_frames[0])
    kp = head.driving_keypoints(state, reference, reference)
    assert torch.allclose(kp, state.kp_source, atol=1e-6)
    moved = head.driving_keypoints(state, head.extract_motion(carphone_frames[30]), reference)
    assert (moved - state.kp_source).abs().max() > 1e-3  # the driver's motion reaches the keypoints


def test_motion_vector_round_trip(head, carphone_frames) -> None:  # type: ignore[no-untyped-def]
    motion = head.extract_motion(carphone_frames[5])
    vec = motion.to_vector()
    assert vec.shape == (6 + 3 * 15,) and vec.dtype == np.float32
    back = Motion.from_vector(vec)
    assert torch.allclose(back.delta, motion.delta) and torch.allclose(back.yaw, motion.yaw)
    with pytest.raises(ValueError):
        Motion.from_vector(np.zeros(7, np.float32))


def test_motion_vector_layout_and_round_trip() -> None:
    """Sizes and group positions of the flat 6 + 3K vector come from adasr.motion_layout; Motion follows them."""
    k = 4
    vec = np.arange(motion_layout.vector_size(k), dtype=np.float32)
    assert vec.size == 6 + 3 * k and motion_layout.keypoint_count(vec.size) == k
    motion = Motion.from_vector(vec)
    assert motion.num_kp == k
    assert (motion.yaw.item(), motion.pitch.item(), motion.roll.item()) == (0.0, 1.0, 2.0)
    assert motion.t[0].tolist() == [3.0, 4.0, 5.0] and motion.delta[0, 0].tolist() == [6.0, 7.0, 8.0]
    assert np.array_equal(vec[motion_layout.ANGLES], motion.pose_degrees()[0].numpy())
    assert np.array_equal(vec[motion_layout.TRANSLATION], motion.t[0].numpy())
    assert np.array_equal(vec[motion_layout.EXPRESSION], motion.delta[0].flatten().numpy())
    assert np.array_equal(motion.to_vector(), vec)
    for bad in (0, 6, 7, 8, 50):
        with pytest.raises(ValueError, match="6 \\+ 3K"):
            motion_layout.keypoint_count(bad)


def test_render_image_is_uint8_of_the_model_size(head, astronaut_face, carphone_frames) -> None:  # type: ignore[no-untyped-def]
    state = head.prepare_source(astronaut_face)
    image = head.render_image(state, head.extract_motion(carphone_frames[1]))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.std() > 1


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model, astronaut_face, carphone_frames) -> None:  # type: ignore[no-untyped-def]
    fp32 = TalkingHead(TorchBackend(tiny_model))
    bf16 = TalkingHead(TorchBackend(tiny_model, TorchOptions(precision="bf16")))
    a = fp32.render(fp32.prepare_source(astronaut_face), fp32.extract_motion(carphone_frames[3]))
    b = bf16.render(bf16.prepare_source(astronaut_face), bf16.extract_motion(carphone_frames[3]))
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() < 0.03  # measured 0.015 with these deliberately sharp test weights


def test_unavailable_precision_or_device_is_refused(tiny_model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        TorchBackend(tiny_model, TorchOptions(precision="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            TorchBackend(tiny_model, TorchOptions(device="cuda"))


def test_frames_convert_exactly_both_ways(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """A face crop becomes uint8 / 255 and comes back the same bytes; a frame outside [0, 1] is clipped and rounded
    half up, from a batch of one or a bare image."""
    from adasr.image_ops import image_to_tensor, tensor_to_image

    tensor = image_to_tensor(astronaut_face, astronaut_face.shape[0])
    assert tensor.shape == (1, 3, *astronaut_face.shape[:2]) and tensor.dtype == torch.float32
    assert torch.equal(tensor[0], torch.from_numpy(astronaut_face).permute(2, 0, 1).float() / 255)
    assert np.array_equal(tensor_to_image(tensor), astronaut_face)
    frame = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 7.0]).view(1, 3, 1, 2)
    image = tensor_to_image(frame)
    assert image.shape == (1, 2, 3) and image.flags.c_contiguous
    assert image.transpose(2, 0, 1).ravel().tolist() == [0, 0, 1, 1, 255, 255]
    assert np.array_equal(tensor_to_image(frame[0]), image)
