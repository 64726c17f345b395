"""Mouth, eyes and brows moved by geometry: the driver's face ratios applied to the portrait's own landmarks.

The learned motion (15 keypoints, a 16×16 motion field) moves the head but is far too coarse for a lip
or an eyelid, and brief CPU training never taught it to (issue #24). The sender's tracker measures the
driver's mouth opening, lid gaps and brows exactly (``adasr.expression_signal.raw_ratios``), and the
portrait's own landmarks say where its lips and lids are. So the renderer moves them directly:

1. ``target_ratios``: the portrait's ratios plus the driver's change since its reference frame (the mouth,
   width, smile and brows additively, each eye's opening multiplicatively so that a blink closes any eye);
   without a reference, the driver's own ratios.
2. ``ExpressionRig`` (inside the renderer graph, no weights): each anchor (a lip, lid, brow, chin point)
   moves by what its ratio's change asks, in units of the portrait's own eye-corner distance; a smooth
   backward flow through the moved anchors (normalised Gaussian weights, still anchors on the nose,
   cheeks and jaw keep it local) is composed with the learned warp, for the feature volume and for the
   full-resolution photo alike, so a lip moves by its true few pixels.
3. A mouth that opens wider than the portrait's shows a dark interior (the space between the moved inner
   lips, an ellipse), which warping alone cannot make.

A change of zero (identity motion, a portrait without landmarks, a driver without a face) is exactly
the learned renderer's output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from adasr.expression_signal import FEATURE_NAMES

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}

# mediapipe FaceMesh indices of the anchors, by what moves them.
_RIGHT_EYE_CORNERS, _LEFT_EYE_CORNERS = (33, 133), (263, 362)
_RIGHT_UPPER_LID, _LEFT_UPPER_LID = (159, 158, 160, 157, 161), (386, 385, 387, 384, 388)
_INNER_UPPER_LIP, _INNER_LOWER_LIP = (82, 13, 312), (87, 14, 317)
_OUTER_UPPER_LIP, _OUTER_LOWER_LIP = (0, 37, 267), (17, 84, 314)
_MOUTH_CORNERS = (61, 291)
_JAW = (152, 148, 377, 176, 400)  # chin, then along the jaw towards the ears
_RIGHT_BROW, _LEFT_BROW = (52, 65, 105, 70, 46), (282, 295, 334, 300, 276)
_UNDER_EYES = (230, 450, 119, 348, 117, 346)
_STILL = (1, 2, 4, 6, 168, 205, 425, 50, 280, 172, 397, 234, 454, 10, *_UNDER_EYES)
"""Never moved: the nose, cheeks, the skin under the eyes, the jaw's corners, the face's sides and forehead (they
keep the flow local, and the lower lids where they are)."""

ANCHORS: tuple[int, ...] = (
    *_RIGHT_EYE_CORNERS, *_LEFT_EYE_CORNERS, *_RIGHT_UPPER_LID, *_LEFT_UPPER_LID, *_INNER_UPPER_LIP,
    *_INNER_LOWER_LIP, *_OUTER_UPPER_LIP, *_OUTER_LOWER_LIP, *_MOUTH_CORNERS, *_JAW, *_RIGHT_BROW, *_LEFT_BROW,
    *_STILL)
NUM_ANCHORS = len(ANCHORS)
_AT = {index: i for i, index in enumerate(ANCHORS)}


def _rows(indices: tuple[int, ...]) -> list[int]:
    return [_AT[i] for i in indices]


#: Share of a mouth-opening change taken by the lower lip and jaw (the rest lifts the upper lip).
LOWER_LIP_SHARE = 0.8
#: How far each jaw anchor follows the lower lip (chin fully, the jaw's sides less).
_JAW_FOLLOW = (1.0, 0.7, 0.7, 0.4, 0.4)
#: Gaussian radius of each anchor's influence, in eye-corner distances (lids need a tight one).
_SIGMA_MOUTH, _SIGMA_LID, _SIGMA_BROW, _SIGMA_STILL = 0.13, 0.06, 0.12, 0.12
#: How much more a moving anchor counts than a still one where their influences meet (a lid reaches its place).
_MOVING_WEIGHT = 3.0
#: Weight of "no motion" everywhere: far from every anchor the flow fades to zero.
_BACKGROUND = 0.05
#: Most an eye opens beyond the portrait's own (wider shows eyeball the portrait does not have).
MAX_EYE_WIDENING = 1.15
#: Colour of a mouth's dark interior (linear RGB in [0, 1]) and how much of the pixel it takes.
CAVITY_RGB = (0.16, 0.06, 0.06)
CAVITY_OPACITY = 0.85


def anchors_from_landmarks(landmarks: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """The tracker's landmarks [478, ≥2] in pixels of a ``width``×``height`` crop → anchors [NUM_ANCHORS, 2]
    float32 in the renderer's normalised coordinates (−1 … 1, x right, y down)."""
    height = width if height is None else height
    points = np.asarray(landmarks, np.float32)[list(ANCHORS), :2]
    return (points * np.array([2.0 / width, 2.0 / height], np.float32) - 1.0).astype(np.float32)


def target_ratios(source: np.ndarray, driving: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """The ratios the rendered face should show [..., E]: relative to the driver's ``reference`` frame when given
    (the portrait's own expression plus the driver's change; each eye opening scaled by the driver's, so a
    blink closes it whatever its size), else the driver's own ratios. Eyes never open past
    ``MAX_EYE_WIDENING`` times the portrait's, a mouth never below closed."""
    source = np.asarray(source, np.float32)
    driving = np.asarray(driving, np.float32)
    if reference is None:
        target = driving.copy()
    else:
        reference = np.asarray(reference, np.float32)
        target = source + (driving - reference)
        for eye in ("right_eye_open", "left_eye_open"):
            i = _F[eye]
            target[..., i] = source[..., i] * driving[..., i] / np.maximum(reference[..., i], 0.05)
    for eye in ("right_eye_open", "left_eye_open"):
        i = _F[eye]
        target[..., i] = np.clip(target[..., i], 0.0, source[..., i] * MAX_EYE_WIDENING)
    i = _F["mouth_open"]
    target[..., i] = np.maximum(target[..., i], 0.0)
    return target.astype(np.float32)


class ExpressionRig(nn.Module):
    """Anchors [B, N, 2] and the ratio change [B, E] (target − portrait) → a backward flow and the mouth's
    interior, both as a field over the portrait's coordinates, and their use on the renderer's grids."""

    points: torch.Tensor
    """The field's sample points [1, F·F, 2] (pixel centres, normalised)."""
    sigma: torch.Tensor
    """Each anchor's radius of influence [N], in eye-corner distances."""
    strength: torch.Tensor
    """Each anchor's weight [N] (moving ones count more)."""

    def __init__(self, field_size: int = 128) -> None:
        super().__init__()
        self.field_size = field_size
        steps = (torch.arange(field_size, dtype=torch.float32) * 2 + 1) / field_size - 1
        y, x = torch.meshgrid(steps, steps, indexing="ij")
        self.register_buffer("points", torch.stack([x, y], dim=-1).reshape(1, -1, 2), persistent=False)
        sigma = torch.full((NUM_ANCHORS,), _SIGMA_STILL)
        sigma[_rows(_RIGHT_UPPER_LID + _LEFT_UPPER_LID + _RIGHT_EYE_CORNERS + _LEFT_EYE_CORNERS
                    + _UNDER_EYES)] = _SIGMA_LID
        sigma[_rows(_INNER_UPPER_LIP + _INNER_LOWER_LIP + _OUTER_UPPER_LIP + _OUTER_LOWER_LIP + _MOUTH_CORNERS
                    + _JAW)] = _SIGMA_MOUTH
        sigma[_rows(_RIGHT_BROW + _LEFT_BROW)] = _SIGMA_BROW
        self.register_buffer("sigma", sigma, persistent=False)
        strength = torch.full((NUM_ANCHORS,), _MOVING_WEIGHT)
        strength[_rows(_STILL + _RIGHT_EYE_CORNERS + _LEFT_EYE_CORNERS)] = 1.0
        self.register_buffer("strength", strength, persistent=False)

    @staticmethod
    def _frame(anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The face's own axes from the outer eye corners: x along them, y across (down); and their distance."""
        right, left = anchors[:, _AT[_RIGHT_EYE_CORNERS[0]]], anchors[:, _AT[_LEFT_EYE_CORNERS[0]]]
        across = left - right
        iod = across.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # B, 1
        axis_x = across / iod
        axis_y = torch.stack([-axis_x[:, 1], axis_x[:, 0]], dim=-1)
        return axis_x, axis_y, iod

    def displacements(self, anchors: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """Where each anchor moves [B, N, 2], forward (portrait → rendered face), in normalised coordinates."""
        axis_x, axis_y, iod = self._frame(anchors)
        b = anchors.shape[0]
        along = torch.zeros(b, NUM_ANCHORS, device=anchors.device, dtype=anchors.dtype)  # in iod, along axis_y
        side = torch.zeros_like(along)  # in iod, along axis_x
        gap = change[:, _F["mouth_open"]]
        lower = LOWER_LIP_SHARE * gap
        along[:, _rows(_INNER_LOWER_LIP + _OUTER_LOWER_LIP)] = lower[:, None]
        along[:, _rows(_INNER_UPPER_LIP + _OUTER_UPPER_LIP)] = (lower - gap)[:, None]
        along[:, _rows(_JAW)] = lower[:, None] * torch.tensor(_JAW_FOLLOW, device=anchors.device,
                                                              dtype=anchors.dtype)
        half_width = change[:, _F["mouth_width"]] / 2
        corners = _rows(_MOUTH_CORNERS)
        along[:, corners] = (lower / 2 - change[:, _F["smile"]])[:, None]
        side[:, corners[0]] = -half_width
        side[:, corners[1]] = half_width
        for lid, corner_pair, eye in ((_RIGHT_UPPER_LID, _RIGHT_EYE_CORNERS, "right_eye_open"),
                                      (_LEFT_UPPER_LID, _LEFT_EYE_CORNERS, "left_eye_open")):
            eye_width = (anchors[:, _AT[corner_pair[0]]] - anchors[:, _AT[corner_pair[1]]]).norm(dim=-1) / iod[:, 0]
            along[:, _rows(lid)] = (-change[:, _F[eye]] * eye_width)[:, None]
        along[:, _rows(_RIGHT_BROW)] = -change[:, _F["right_brow"], None]
        along[:, _rows(_LEFT_BROW)] = -change[:, _F["left_brow"], None]
        return (along[..., None] * axis_y[:, None] + side[..., None] * axis_x[:, None]) * iod[:, :, None]

    def _inside_mouth(self, lips: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """How far ``points`` [B, P, 2] lie inside the mouth between ``lips`` (anchors, moved or not) [B, N, 2]:
        an ellipse spanning the inner-lip gap and most of the corners' distance; 0 … 1, [B, P]."""
        axis_x, axis_y, _ = self._frame(lips)
        upper = lips[:, _rows(_INNER_UPPER_LIP)].mean(dim=1)
        lower = lips[:, _rows(_INNER_LOWER_LIP)].mean(dim=1)
        corners = lips[:, _rows(_MOUTH_CORNERS)]
        half_height = (((lower - upper) * axis_y).sum(-1) / 2).clamp(min=1e-4)
        half_width = 0.42 * (corners[:, 1] - corners[:, 0]).norm(dim=-1).clamp(min=1e-4)
        offset = points - ((upper + lower) / 2)[:, None]
        u = (offset * axis_x[:, None]).sum(-1) / half_width[:, None]
        v = (offset * axis_y[:, None]).sum(-1) / half_height[:, None]
        return torch.sigmoid(6.0 * (1 - u * u - v * v))

    def forward(self, anchors: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """The rig's field over the portrait's coordinates [B, 3, F, F]: the backward flow (x, y; rendered face →
        portrait) and the mouth's new interior (its opacity)."""
        displacement = self.displacements(anchors, change)  # B, N, 2
        moved = anchors + displacement
        _, _, iod = self._frame(anchors)
        sigma = self.sigma[None] * iod  # B, N
        distance2 = ((self.points[:, :, None] - moved[:, None]) ** 2).sum(-1)  # B, P, N
        weight = self.strength * torch.exp(-distance2 / (2 * sigma[:, None] ** 2))
        flow = -(weight @ displacement) / (weight.sum(-1, keepdim=True) + _BACKGROUND)  # B, P, 2
        # inside the moved lips, what the warp brings from outside the portrait's own mouth (closed lips,
        # stretched) is painted dark; what it brings from inside (the portrait's teeth) is kept
        points = self.points.expand(anchors.shape[0], -1, -1)
        brought_from = points + flow
        opacity = (self._inside_mouth(moved, points) - self._inside_mouth(anchors, brought_from)).clamp(min=0)
        opacity = opacity * CAVITY_OPACITY  # exactly zero when nothing moved
        size = self.field_size
        return torch.cat([flow, opacity[..., None]], dim=-1).reshape(-1, size, size, 3).permute(0, 3, 1, 2)


def sample_field(field: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The rig's field [B, 3, F, F] at grid points [B, H, W, 2] (portrait coordinates) → [B, H, W, 3]."""
    return torch.nn.functional.grid_sample(field, grid.to(field.dtype), mode="bilinear", padding_mode="zeros",
                                           align_corners=False).permute(0, 2, 3, 1)


def paint_cavity(frame: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """The rendered frame [B, 3, S, S] with the mouth's new interior [B, 1, S, S] painted in."""
    colour = torch.tensor(CAVITY_RGB, device=frame.device, dtype=frame.dtype).view(1, 3, 1, 1)
    return frame + opacity * (colour - frame)

