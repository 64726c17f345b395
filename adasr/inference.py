"""The contract between the method and whatever runs it, and the state that crosses it.

``adasr`` imports no runtime: ``animate`` and ``evaluate`` drive a :class:`Head`, and ``engines``
implements it (``engines.talking_head.TalkingHead`` over any :class:`Backend`). The contract lives
with the method, so the dependency points one way: the engines build on the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from adasr.config import ModelConfig
from adasr.deployable import MotionTensors, SourceTensors
from adasr.keypoints import Motion, transform_keypoints


@dataclass(frozen=True)
class SourceState:
    """Everything the renderer needs from the source portrait, computed once."""

    f_s: torch.Tensor
    """Appearance feature volume [1, C, D, S/4, S/4]."""
    x_c: torch.Tensor
    """Canonical keypoints [1, K, 3]."""
    motion: Motion
    """The source's own head motion."""
    model_id: str
    """Identity of the weights that made it: another model cannot render from it."""
    anchors: torch.Tensor | None = None
    """The portrait's lip, lid and brow landmarks that the expression rig moves, [1, N, 2] normalised
    (``adasr.expression_rig``); None when no face was found in it (then mouth and eyes stay as they are)."""
    face_ratios: np.ndarray | None = None
    """The portrait's own mouth, eye and brow ratios [E] (None with no anchors)."""

    @property
    def kp_source(self) -> torch.Tensor:
        """x_s = R_s·x_c + t_s + δ_s, [1, K, 3]."""
        return transform_keypoints(self.x_c, self.motion)


class Backend(Protocol):
    """The three deployable networks' calls, the same whatever runs them (the runtimes are in ``engines``).

    Inputs and outputs are torch tensors on the backend's device (no host round trip between the
    keypoint math and the renderer); ``describe`` says what actually runs, so callers can report it.
    """

    config: ModelConfig
    """The model's configuration (image size, K, …)."""
    model_id: str
    """Identity of the weights (a SourceState made by other weights is refused)."""
    device: torch.device
    """Where inputs should live and outputs come back."""

    def encode_source(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> SourceTensors:
        """[1, 3, S, S] float32 in [0, 1] (+ expression [1, E] for a model with an expression mapper) →
        SourceTensors."""
        ...

    def extract_motion(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> MotionTensors:
        """[1, 3, S, S] float32 in [0, 1] (+ expression [1, E], as for ``encode_source``) → MotionTensors."""
        ...

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor, anchors: torch.Tensor,
               ratio_change: torch.Tensor) -> torch.Tensor:
        """f_s, x_s, x_d, the portrait's rig anchors [1, N, 2] and the face ratios' change [1, E] (zeros: none) →
        [1, 3, S, S] float32 in [0, 1]."""
        ...

    def describe(self) -> str:
        """One line: backend, device/provider actually used, precision."""
        ...


class Head(Protocol):
    """A talking head as animate and eval drive it: the source once, a motion per frame, a frame out.

    Images are RGB, HWC, uint8 (or float in [0, 1]), square face crops.
    """

    backend: Backend
    """What runs the networks (reported, and where tensors live)."""
    size: int
    """The model's image size."""

    def prepare_source(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> SourceState:
        """Run the source encoder once; ``landmarks`` [478, ≥2]: the tracker's, for the expression vector."""
        ...

    def extract_motion(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> Motion:
        """Run the motion extractor on one face crop (``landmarks`` as for ``prepare_source``)."""
        ...

    def render_image(self, state: SourceState, motion: Motion, reference: Motion | None = None) -> np.ndarray:
        """One frame as HWC uint8 RGB; motion relative to ``reference`` when given."""
        ...
