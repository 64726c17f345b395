"""Keypoint math outside the graphs: angle decoding, rotation, x = R·x_c + t + δ, normalisation.

These are a few hundred flops per frame, so they run on the receiver, never inside an exported
network. Conventions follow the released model exactly (see official-architecture.md §3.3):
degrees to radians with 3.14 (not π) and R = Rx(pitch)·Ry(yaw)·Rz(roll).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adasr import motion_layout

#: The released code converts degrees with 3.14, not π; the weights were trained with it.
OFFICIAL_PI = 3.14


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Angle logits [B, num_bins] → degrees [B]: expectation over bins, ×3 − 99 (Hopenet binning)."""
    num_bins = logits.shape[1]
    idx = torch.arange(num_bins, dtype=logits.dtype, device=logits.device)
    prob = torch.softmax(logits, dim=1)
    return (prob * idx).sum(dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees [B] each → R = Rx(pitch)·Ry(yaw)·Rz(roll), [B, 3, 3]."""
    y, p, r = (a / 180 * OFFICIAL_PI for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return rx @ ry @ rz


@dataclass(frozen=True)
class Motion:
    """Head motion of one or more frames: the per-frame message of a call.

    The vector layout (``to_vector``) is ``adasr.motion_layout``'s: yaw, pitch, roll (degrees),
    t (3), δ (K·3, row-major): 3 + 3 + 3K numbers, 51 for K = 15.
    """

    yaw: torch.Tensor
    """Yaw in degrees, [B]."""
    pitch: torch.Tensor
    """Pitch in degrees, [B]."""
    roll: torch.Tensor
    """Roll in degrees, [B]."""
    t: torch.Tensor
    """Translation in normalised keypoint units, [B, 3]."""
    delta: torch.Tensor
    """Expression offsets δ, [B, K, 3]."""
    face_ratios: np.ndarray | None = None
    """The tracker's mouth, eye and brow ratios of the frame (``adasr.expression_signal.raw_ratios``, [E]), which
    the expression rig applies to the portrait; None without landmarks. Not part of ``to_vector``."""

    @property
    def num_kp(self) -> int:
        return int(self.delta.shape[1])

    def pose_degrees(self) -> torch.Tensor:
        """(yaw, pitch, roll) in degrees, [B, 3]."""
        return torch.stack([self.yaw, self.pitch, self.roll], dim=1)

    def rotation(self) -> torch.Tensor:
        """R(yaw, pitch, roll), [B, 3, 3]."""
        return rotation_matrix(self.yaw, self.pitch, self.roll)

    def to_vector(self) -> np.ndarray:
        """Flat float32 numpy vector of the first frame, length 6 + 3K (the wire order)."""
        parts = [self.yaw[:1, None], self.pitch[:1, None], self.roll[:1, None], self.t[:1], self.delta[:1].flatten(1)]
        return torch.cat([p.detach().float().cpu() for p in parts], dim=1)[0].numpy()

    @staticmethod
    def from_vector(vector: np.ndarray, device: torch.device | str = "cpu") -> Motion:
        """Inverse of ``to_vector``; the number of keypoints follows from the length."""
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        motion_layout.keypoint_count(vec.size)  # refuses a length that is not 6 + 3K
        v = torch.from_numpy(vec.copy()).to(device)[None]
        angles = v[:, motion_layout.ANGLES]
        return Motion(yaw=angles[:, 0], pitch=angles[:, 1], roll=angles[:, 2], t=v[:, motion_layout.TRANSLATION],
                      delta=v[:, motion_layout.EXPRESSION].reshape(1, -1, 3))

    def with_pose(self, pose_degrees: torch.Tensor) -> Motion:
        """The same motion with (yaw, pitch, roll) replaced, [B, 3] or [3] degrees (e.g. the face tracker's)."""
        pose = pose_degrees.to(self.yaw).reshape(-1, 3).expand(self.yaw.shape[0], 3)
        return Motion(pose[:, 0], pose[:, 1], pose[:, 2], self.t, self.delta, self.face_ratios)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Motion:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype or x.dtype)

        return Motion(move(self.yaw), move(self.pitch), move(self.roll), move(self.t), move(self.delta),
                      self.face_ratios)


def transform_keypoints(x_c: torch.Tensor, motion: Motion) -> torch.Tensor:
    """x = R·x_c + t + δ. x_c [B, K, 3] canonical keypoints (always the source's) → [B, K, 3]."""
    rotated = torch.einsum("bij,bkj->bki", motion.rotation().to(x_c.dtype), x_c)
    return rotated + motion.t[:, None, :].to(x_c.dtype) + motion.delta.to(x_c.dtype)


def relative_keypoints(kp_driving: torch.Tensor, kp_reference: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """Relative motion transfer, as the released demo's ``--relative``: x_d − x_d0 + x_s."""
    return kp_driving - kp_reference + kp_source
