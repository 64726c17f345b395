"""Cached one-shot inference: a SourceState once per source, then motion → keypoints → frame.

The official demo re-encodes the source every frame; here everything that depends only on the
source (f_s, x_c, the source's motion and x_s) is computed once and reused, which is what lets the
call send the source once and only motion afterwards.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from adasr.expression_rig import NUM_ANCHORS, anchors_from_landmarks, ratio_change
from adasr.expression_signal import NUM_FEATURES, expression_features, neutral_features, raw_ratios
from adasr.image_ops import image_to_tensor, tensor_to_image
from adasr.inference import Backend, SourceState
from adasr.keypoints import Motion, relative_keypoints, transform_keypoints


class TalkingHead:
    """The per-call inference pipeline over any backend (the method's ``adasr.inference.Head``).

    Images are RGB, HWC, uint8 (or float in [0, 1]), square face crops; they are resized to the
    model's size when they differ.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.size = backend.config.image_size
        self.uses_expression = backend.config.he_estimator.expression_inputs > 0

    def to_input(self, image: np.ndarray) -> torch.Tensor:
        """HWC RGB image → [1, 3, S, S] float32 in [0, 1] on the backend's device."""
        return image_to_tensor(image, self.size).to(self.backend.device)

    def expression_input(self, landmarks: np.ndarray | None) -> torch.Tensor | None:
        """The expression vector [1, E] from the tracker's landmarks [478, ≥2] (any pixel frame: the features are
        ratios) for a model that takes one, else None. Without landmarks (no face found) the neutral vector: in
        relative motion a constant expression moves nothing."""
        if not self.uses_expression:
            return None
        features = neutral_features() if landmarks is None else expression_features(landmarks)
        return torch.from_numpy(features)[None].to(self.backend.device)

    def prepare_source(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> SourceState:
        """Run the source encoder once; ``landmarks``: the tracker's, in ``image``'s pixels (the expression rig's
        anchors and the portrait's own face ratios, and the expression input of a model that takes one)."""
        out = self.backend.encode_source(self.to_input(image), self.expression_input(landmarks))
        anchors, ratios = None, None
        if landmarks is not None:
            anchors = torch.from_numpy(anchors_from_landmarks(landmarks, image.shape[1], image.shape[0]))[None]
            ratios = raw_ratios(landmarks)
        return SourceState(out.f_s, out.x_c, Motion(out.yaw, out.pitch, out.roll, out.t, out.delta),
                           self.backend.model_id, anchors, ratios)

    def extract_motion(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> Motion:
        """Run the motion extractor on one face crop (``landmarks`` as for ``prepare_source``)."""
        motion = Motion(*self.backend.extract_motion(self.to_input(image), self.expression_input(landmarks)))
        return motion if landmarks is None else dataclasses.replace(motion, face_ratios=raw_ratios(landmarks))

    def driving_keypoints(self, state: SourceState, motion: Motion, reference: Motion | None) -> torch.Tensor:
        """x_d from the source's x_c and a driving motion; relative to ``reference`` when given.

        Relative: x_s + (x_d − x_ref), the released demo's ``--relative`` with the first driving
        frame as reference; absolute (``reference=None``): x_d itself.
        """
        device = state.x_c.device
        kp_driving = transform_keypoints(state.x_c, motion.to(device))
        if reference is None:
            return kp_driving
        return relative_keypoints(kp_driving, transform_keypoints(state.x_c, reference.to(device)), state.kp_source)

    def rig_inputs(self, state: SourceState, motion: Motion, reference: Motion | None) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
        """The expression rig's anchors [1, N, 2] and ratio change [1, E]: what the driver's face ratios (relative to
        ``reference``'s, when it has them) ask of the portrait's. Zeros, which move nothing, when the portrait
        or the frame has no landmarks."""
        device = state.x_c.device
        change = np.zeros(NUM_FEATURES, np.float32)
        if state.anchors is None or state.face_ratios is None:
            return torch.zeros(1, NUM_ANCHORS, 2, device=device), torch.from_numpy(change)[None].to(device)
        if motion.face_ratios is not None:
            reference_ratios = None if reference is None else reference.face_ratios
            change = ratio_change(state.face_ratios, motion.face_ratios, reference_ratios)
        return state.anchors.to(device), torch.from_numpy(change)[None].to(device)

    def render(self, state: SourceState, motion: Motion, reference: Motion | None = None) -> torch.Tensor:
        """One frame [1, 3, S, S] float32 in [0, 1]."""
        return self.backend.render(state.f_s, state.kp_source, self.driving_keypoints(state, motion, reference),
                                   *self.rig_inputs(state, motion, reference))

    def render_image(self, state: SourceState, motion: Motion, reference: Motion | None = None) -> np.ndarray:
        """One frame as HWC uint8 RGB."""
        return tensor_to_image(self.render(state, motion, reference))


def astronaut_state(head: TalkingHead) -> SourceState:
    """The astronaut's face as a source state with its rig anchors, without mediapipe (export checks, benchmarks)."""
    from adasr.demo_media import ASTRONAUT_FACE_ANCHORS, ASTRONAUT_FACE_RATIOS, astronaut_face

    state = head.prepare_source(astronaut_face(head.size))
    return dataclasses.replace(state, anchors=torch.from_numpy(ASTRONAUT_FACE_ANCHORS)[None].to(state.x_c.device),
                               face_ratios=ASTRONAUT_FACE_RATIOS.copy())
