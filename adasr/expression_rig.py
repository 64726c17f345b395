"""Mouth, eyes and brows moved by geometry: the driver's face ratios applied to the portrait's own landmarks.

The learned motion (15 keypoints, a 16×16 motion field) moves the head but is far too coarse for a lip
or an eyelid, and brief CPU training never taught it to (issue #24). The sender's tracker measures the
driver's mouth opening, lid gaps and brows exactly (``adasr.expression_signal.raw_ratios``), and the
portrait's own landmarks say where its lips and lids are. So the renderer moves them directly:

1. ``target_ratios``: the portrait's ratios plus the driver's change since its reference frame (the mouth,
   width, smile and brows additively, the mouth at least as wide as the driver's own, each eye's opening
   multiplicatively so that a blink closes any eye); without a reference, the driver's own ratios.
2. ``ExpressionRig`` (inside the renderer graph, no weights): each anchor (a lip, brow, chin point)
   moves by what its ratio's change asks, in units of the portrait's own eye-corner distance; a smooth
   backward flow through the moved anchors (normalised Gaussian weights, still anchors on the nose,
   cheeks and jaw keep it local) is composed with the learned warp, for the feature volume and for the
   full-resolution photo alike, so a lip moves by its true few pixels.
3. The eyelids are not left to that smooth field: a closing lid is a jump of the flow (the eyeball vanishes
   between the lids), which a field of a few pixels' cells blurs into a half-open eye. ``lid_flow`` remaps
   each eye's band: the lids are parabolas between the eye's corners, and along the face's down axis a
   piecewise-linear map takes the moved lids back to the portrait's. It is worked out on a fine field of its
   own over the two eyes (about 2 px a cell) and sampled like the smooth one, at every other pixel of the
   photo's grid (at every pixel it cost a fifth of the renderer); the feature volume, whose cells are as big
   as an eye, is moved by the smooth field alone.
4. A mouth that opens wider than the portrait's shows a dark interior (the space between the moved inner
   lips, an ellipse), which warping alone cannot make.

A change of zero (identity motion, a portrait without landmarks, a driver without a face) is exactly
the learned renderer's output.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adasr.expression_signal import FEATURE_NAMES

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}

# mediapipe FaceMesh indices of the anchors, by what moves them.
_RIGHT_EYE_CORNERS, _LEFT_EYE_CORNERS = (33, 133), (263, 362)
_RIGHT_UPPER_LID, _LEFT_UPPER_LID = (159, 158, 160, 157, 161), (386, 385, 387, 384, 388)
_RIGHT_LOWER_LID, _LEFT_LOWER_LID = (145, 144, 153), (374, 373, 380)
_INNER_UPPER_LIP, _INNER_LOWER_LIP = (82, 13, 312), (87, 14, 317)
_OUTER_UPPER_LIP, _OUTER_LOWER_LIP = (0, 37, 267), (17, 84, 314)
_MOUTH_CORNERS = (61, 291)
_JAW = (152, 148, 377, 176, 400)  # chin, then along the jaw towards the ears
_RIGHT_BROW, _LEFT_BROW = (52, 65, 105, 70, 46), (282, 295, 334, 300, 276)
_RIGHT_BROW_LOWER, _LEFT_BROW_LOWER = (52, 65, 46), (282, 295, 276)
_UNDER_EYES = (230, 450, 119, 348, 117, 346)
_STILL = (1, 2, 4, 6, 168, 205, 425, 50, 280, 172, 397, 234, 454, 10, *_UNDER_EYES)
"""Never moved: the nose, cheeks, the skin under the eyes, the jaw's corners, the face's sides and forehead (they
keep the flow local, and the lower lids where they are)."""

ANCHORS: tuple[int, ...] = (
    *_RIGHT_EYE_CORNERS, *_LEFT_EYE_CORNERS, *_RIGHT_UPPER_LID, *_LEFT_UPPER_LID, *_RIGHT_LOWER_LID,
    *_LEFT_LOWER_LID, *_INNER_UPPER_LIP,
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
#: Gaussian radius of each anchor's influence, in eye-corner distances (the still lids pin the field tightly).
_SIGMA_MOUTH, _SIGMA_LID, _SIGMA_BROW, _SIGMA_STILL, _SIGMA_TEETH = 0.13, 0.06, 0.12, 0.12, 0.05
#: Cells per side of the rig's field, and the margin its box leaves around the face's anchors (a share of their
#: extent): the flow fades to zero inside it.
FIELD_SIZE = 48
BOX_MARGIN = 0.2
#: How much more a moving anchor counts than a still one where their influences meet (a lid reaches its place).
_MOVING_WEIGHT = 3.0
#: Weight of "no motion" everywhere: far from every anchor the flow fades to zero.
_BACKGROUND = 0.05
#: Most an eye opens beyond the portrait's own (wider shows eyeball the portrait does not have).
MAX_EYE_WIDENING = 1.3
#: The smallest lid gap (over eye width) taken for a face's open eye: below it an eye is half shut.
EYE_OPEN_FLOOR = 0.2
#: Share of an eye's closing taken by its lower lid (the upper one does most of a blink).
LOWER_LID_SHARE = 0.2
#: How far the skin that stretches or folds with a moving lid reaches above the upper lid and below the lower one,
#: in eye half-widths; above, at most ``LID_REACH_TO_BROW`` of the way up to the brow's lower edge (the lid's fold
#: stretches, the brow stays where it is: low brows on a closing eye would otherwise be dragged into it).
LID_REACH_ABOVE, LID_REACH_BELOW, LID_REACH_TO_BROW = 1.0, 0.7, 0.7
#: The least bow (1 − u²) by which a lid's measured height is scaled to its curve's middle: lid anchors near a
#: corner do not blow up the curve.
_MIN_BOW = 0.3
#: How far past each lid's landmarks (the lid margin) the squeezed eye reaches, in eye half-widths: a shut eye
#: hides all of the eyeball, not just what lies between the landmarks.
LID_MARGIN = 0.12
#: Narrowest lid gap the eye's remap divides by (normalised coordinates, ~0.1 px): a shut eye's.
_SHUT = 1e-3
#: Rows and columns of the lids' field over the box around both eyes' bands (about 2 px a cell on a 256² face, as
#: fine as the full-resolution grid it is sampled at: every other pixel).
EYE_FIELD_ROWS, EYE_FIELD_COLUMNS = 24, 64
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
    (the portrait's own expression plus the driver's change), else the driver's own ratios.

    An eye's opening moves as a share of each face's open eye, so a blink closes any eye: the driver's share is
    its opening over its reference's (at least ``EYE_OPEN_FLOOR``: a reference caught mid-blink does not make
    every later frame look wide open), applied to the portrait's own (same floor). Eyes never open past
    ``MAX_EYE_WIDENING`` times the portrait's, a mouth never below closed.

    A mouth opens at least as wide as the driver's own (both over their eye-corner distance): a driver whose
    reference frame was caught talking would otherwise leave a closed-mouthed portrait shut for every opening
    smaller than that frame's; a portrait that smiles open keeps its smile (relative is wider there)."""
    source = np.asarray(source, np.float32)
    driving = np.asarray(driving, np.float32)
    if reference is None:
        target = driving.copy()
    else:
        reference = np.asarray(reference, np.float32)
        target = source + (driving - reference)
        for eye in ("right_eye_open", "left_eye_open"):
            i = _F[eye]
            share = np.maximum(driving[..., i], 0.0) / np.maximum(reference[..., i], EYE_OPEN_FLOOR)
            target[..., i] = share * np.maximum(source[..., i], EYE_OPEN_FLOOR)
    for eye in ("right_eye_open", "left_eye_open"):
        i = _F[eye]
        target[..., i] = np.clip(target[..., i], 0.0, source[..., i] * MAX_EYE_WIDENING)
    i = _F["mouth_open"]
    target[..., i] = np.maximum(target[..., i], np.maximum(driving[..., i], 0.0))
    return target.astype(np.float32)


def ratio_change(source: np.ndarray, driving: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """What the rig is asked [..., E]: ``target_ratios`` minus the portrait's own (``source``) ratios (the
    receiver's per-frame input, and training's on frame pairs)."""
    return (target_ratios(source, driving, reference) - np.asarray(source, np.float32)).astype(np.float32)


class FaceFrame(NamedTuple):
    """The face's own axes from the portrait's outer eye corners: x along them, y across (down), [B, 2] each; and
    their distance ``iod`` [B, 1], the rig's unit of length."""

    axis_x: torch.Tensor
    axis_y: torch.Tensor
    iod: torch.Tensor


def face_frame(anchors: torch.Tensor) -> FaceFrame:
    """The ``FaceFrame`` of anchors [B, N, 2]."""
    right, left = anchors[:, _AT[_RIGHT_EYE_CORNERS[0]]], anchors[:, _AT[_LEFT_EYE_CORNERS[0]]]
    across = left - right
    iod = across.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # B, 1
    axis_x = across / iod
    return FaceFrame(axis_x, torch.stack([-axis_x[:, 1], axis_x[:, 0]], dim=-1), iod)


class ExpressionRig(nn.Module):
    """Anchors [B, N, 2] and the ratio change [B, E] (target − portrait) → a backward flow and the mouth's
    interior, both as a field over the portrait's coordinates, and their use on the renderer's grids."""

    unit_points: torch.Tensor
    """The field's sample points [1, F·F, 2] in its box, 0 … 1 (cell centres)."""
    eye_points: torch.Tensor
    """The lids' field's sample points [1, R·C, 2] in its box, likewise."""
    sigma: torch.Tensor
    """Each anchor's radius of influence [N], in eye-corner distances."""
    strength: torch.Tensor
    """Each anchor's weight [N] (moving ones count more)."""

    def __init__(self, field_size: int = FIELD_SIZE) -> None:
        super().__init__()
        self.field_size = field_size
        steps = (torch.arange(field_size, dtype=torch.float32) + 0.5) / field_size
        y, x = torch.meshgrid(steps, steps, indexing="ij")
        self.register_buffer("unit_points", torch.stack([x, y], dim=-1).reshape(1, -1, 2), persistent=False)
        rows = (torch.arange(EYE_FIELD_ROWS, dtype=torch.float32) + 0.5) / EYE_FIELD_ROWS
        columns = (torch.arange(EYE_FIELD_COLUMNS, dtype=torch.float32) + 0.5) / EYE_FIELD_COLUMNS
        y, x = torch.meshgrid(rows, columns, indexing="ij")
        self.register_buffer("eye_points", torch.stack([x, y], dim=-1).reshape(1, -1, 2), persistent=False)
        sigma = torch.full((NUM_ANCHORS,), _SIGMA_STILL)
        sigma[_rows(_RIGHT_UPPER_LID + _LEFT_UPPER_LID + _RIGHT_LOWER_LID + _LEFT_LOWER_LID + _RIGHT_EYE_CORNERS
                    + _LEFT_EYE_CORNERS + _UNDER_EYES)] = _SIGMA_LID
        sigma[_rows(_INNER_UPPER_LIP + _INNER_LOWER_LIP + _OUTER_UPPER_LIP + _OUTER_LOWER_LIP + _MOUTH_CORNERS
                    + _JAW)] = _SIGMA_MOUTH
        sigma[_rows(_RIGHT_BROW + _LEFT_BROW)] = _SIGMA_BROW
        teeth = torch.full((2 * len(_INNER_UPPER_LIP),), _SIGMA_TEETH)  # the teeth edges follow the anchors
        self.register_buffer("sigma", torch.cat([sigma, teeth]), persistent=False)
        strength = torch.full((NUM_ANCHORS + len(teeth),), _MOVING_WEIGHT)
        strength[_rows(_STILL + _RIGHT_EYE_CORNERS + _LEFT_EYE_CORNERS)] = 1.0
        self.register_buffer("strength", strength, persistent=False)

    def displacements(self, anchors: torch.Tensor, change: torch.Tensor,
                      frame: FaceFrame | None = None) -> torch.Tensor:
        """Where each anchor moves [B, N, 2], forward (portrait → rendered face), in normalised coordinates;
        ``frame``: the anchors' ``face_frame``, when the caller has it already. The lids stay: they pin this smooth
        field around the eyes, whose opening ``eye_lids`` remaps exactly."""
        axis_x, axis_y, iod = face_frame(anchors) if frame is None else frame
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
        along[:, _rows(_RIGHT_BROW)] = -change[:, _F["right_brow"], None]
        along[:, _rows(_LEFT_BROW)] = -change[:, _F["left_brow"], None]
        return (along[..., None] * axis_y[:, None] + side[..., None] * axis_x[:, None]) * iod[:, :, None]

    def _teeth_edges(self, anchors: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the portrait's teeth meet (the middle of its inner-lip gap, [B, 3, 2]) moved once with the upper
        lip and once with the lower: an opening mouth parts there, so teeth stay with their jaw."""
        upper, lower = _rows(_INNER_UPPER_LIP), _rows(_INNER_LOWER_LIP)
        middle = (anchors[:, upper] + anchors[:, lower]) / 2
        return middle + displacement[:, upper], middle + displacement[:, lower]

    def _new_interior(self, frame: FaceFrame, moved: torch.Tensor, upper_edge: torch.Tensor,
                      lower_edge: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """How far ``points`` [B, P, 2] lie in the mouth's newly opened gap (between the parted teeth edges; the
        whole inner mouth for a portrait whose lips met): an ellipse, 0 … 1 [B, P], zero when the mouth did not
        open further."""
        axis_x, axis_y, iod = frame
        upper, lower = upper_edge.mean(dim=1), lower_edge.mean(dim=1)
        corners = moved[:, _rows(_MOUTH_CORNERS)]
        gap = ((lower - upper) * axis_y).sum(-1)  # B
        half_height = (gap / 2).clamp(min=1e-4)
        half_width = 0.42 * (corners[:, 1] - corners[:, 0]).norm(dim=-1).clamp(min=1e-4)
        offset = points - ((upper + lower) / 2)[:, None]
        u = (offset * axis_x[:, None]).sum(-1) / half_width[:, None]
        v = (offset * axis_y[:, None]).sum(-1) / half_height[:, None]
        opened = (gap / (0.02 * iod[:, 0])).clamp(0, 1)  # fades in over the first 2 % of an eye distance
        return torch.sigmoid(6.0 * (1 - u * u - v * v)) * opened[:, None]

    def forward(self, anchors: torch.Tensor, change: torch.Tensor) -> RigField:
        """The rig's field over the face's box in the portrait: the backward flow (x, y; rendered face → portrait)
        and the mouth's new interior (its opacity)."""
        frame = face_frame(anchors)
        displacement = self.displacements(anchors, change, frame)  # B, N, 2
        moved = anchors + displacement
        upper_edge, lower_edge = self._teeth_edges(anchors, displacement)
        low, high = anchors.amin(dim=1), anchors.amax(dim=1)  # the face's box (every anchor is on the face)
        margin = BOX_MARGIN * (high - low)
        low, span = low - margin, (high - low + 2 * margin).clamp(min=1e-3)
        points = low[:, None] + self.unit_points * span[:, None]  # B, P, 2
        iod = frame.iod
        upper, lower = _rows(_INNER_UPPER_LIP), _rows(_INNER_LOWER_LIP)
        targets = torch.cat([moved, upper_edge, lower_edge], dim=1)  # B, N + 6, 2
        motion = torch.cat([displacement, displacement[:, upper], displacement[:, lower]], dim=1)
        scale = 1 / (2 * (self.sigma[None] * iod) ** 2)  # B, N + 6
        # |p − m|² as |p|² + |m|² − 2 p·m: one small matmul instead of a [P, N, 2] difference
        distance2 = (points * points).sum(-1, keepdim=True) + (targets * targets).sum(-1)[:, None] \
            - 2 * points @ targets.transpose(1, 2)  # B, P, N + 6
        weight = self.strength * torch.exp(-distance2.clamp(min=0) * scale[:, None])
        flow = -(weight @ motion) / (weight.sum(-1, keepdim=True) + _BACKGROUND)  # B, P, 2
        opacity = self._new_interior(frame, moved, upper_edge, lower_edge, points) * CAVITY_OPACITY
        size = self.field_size
        values = torch.cat([flow, opacity[..., None]], dim=-1).reshape(-1, size, size, 3).permute(0, 3, 1, 2)
        return RigField(values, low, span, *self._eye_field(eye_lids(anchors, change, frame)))

    def _eye_field(self, lids: EyeLids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lids' flow [B, 2, R, C] on a field over the smallest box holding both eyes' bands, its ``low``
        corner and ``span`` [B, 2]."""
        along = lids.axis_x[:, None, None] * lids.half_width[:, :, None, None]  # B, eye, 1, 2
        extent = torch.stack([torch.minimum(lids.source[..., 0], lids.moved[..., 0]) - lids.reach_above,
                              lids.source[..., 1] + LID_REACH_BELOW * lids.half_width], dim=-1)  # B, eye, 2
        across = extent[..., None] * lids.axis_y[:, None, None]  # B, eye, 2 (top, bottom), 2
        corners = torch.cat([lids.centre[:, :, None] + across + along, lids.centre[:, :, None] + across - along],
                            dim=2).flatten(1, 2)  # B, 8, 2
        low, high = corners.amin(dim=1), corners.amax(dim=1)
        span = (high - low).clamp(min=1e-3)
        points = low[:, None] + self.eye_points * span[:, None]
        flow = lid_flow(lids, points).reshape(-1, EYE_FIELD_ROWS, EYE_FIELD_COLUMNS, 2).permute(0, 3, 1, 2)
        return flow, low, span


class EyeLids(NamedTuple):
    """Both eyes' lids (right, left), each lid a parabola between its eye's corners: ``centre`` [B, 2, 2] (the
    corners' midpoint), ``half_width`` [B, 2], how far above the upper lid the moving skin reaches
    (``reach_above`` [B, 2]), and each lid's height at the eye's middle along the face's down axis [B, 2, 2]
    (upper, lower; the upper is negative), in the portrait (``source``) and as the driver asks (``moved``); the
    face's axes [B, 2] each. Normalised portrait coordinates."""

    centre: torch.Tensor
    half_width: torch.Tensor
    reach_above: torch.Tensor
    source: torch.Tensor
    moved: torch.Tensor
    axis_x: torch.Tensor
    axis_y: torch.Tensor


def eye_lids(anchors: torch.Tensor, change: torch.Tensor, frame: FaceFrame) -> EyeLids:
    """The portrait's lids from its anchors (each ``LID_MARGIN`` past its landmarks), and where the ratio change
    [B, E] moves them: the gap between the landmarks changes by the eye's opening change times its width (as
    ``adasr.expression_signal`` measures an opening), the eye with its margins in proportion, the upper lid taking
    ``1 − LOWER_LID_SHARE`` of it; lids never cross. Both eyes at once (the eye is dimension 1)."""
    down, along = frame.axis_y[:, None], frame.axis_x[:, None]  # B, 1, 2

    def mean_of(indices: tuple[tuple[int, ...], tuple[int, ...]]) -> torch.Tensor:
        """Each eye's mean of its anchors ``indices`` (right's, left's) → [B, 2 eyes, 2]."""
        return torch.stack([anchors[:, _rows(side)].mean(dim=1) for side in indices], dim=1)

    outer, inner = mean_of(((_RIGHT_EYE_CORNERS[0],), (_LEFT_EYE_CORNERS[0],))), mean_of(
        ((_RIGHT_EYE_CORNERS[1],), (_LEFT_EYE_CORNERS[1],)))
    centre, half_width = (outer + inner) / 2, (outer - inner).norm(dim=-1) / 2  # B, 2, 2 and B, 2
    upper = mean_of((_RIGHT_UPPER_LID[:3], _LEFT_UPPER_LID[:3])) - centre  # the three the tracker's ratio measures
    lower = mean_of((_RIGHT_LOWER_LID, _LEFT_LOWER_LID)) - centre
    brow = mean_of((_RIGHT_BROW_LOWER, _LEFT_BROW_LOWER)) - centre
    across = ((upper + lower) / 2 * along).sum(-1) / half_width.clamp(min=1e-6)
    bow = (1 - across * across).clamp(min=_MIN_BOW)
    margin = LID_MARGIN * half_width
    reach = (torch.minimum(LID_REACH_TO_BROW * ((upper - brow) * down).sum(-1), LID_REACH_ABOVE * half_width)
             - margin).clamp(min=0.2 * half_width)  # above the lid's margin, at most part of the way to the brow
    top, bottom = (upper * down).sum(-1) / bow - margin, (lower * down).sum(-1) / bow + margin
    gap = (bottom - top - 2 * margin).clamp(min=_SHUT)  # between the landmarks
    eyes = change[:, [_F["right_eye_open"], _F["left_eye_open"]]]
    new_gap = (gap + eyes * 2 * half_width / bow).clamp(min=0)
    widening = (bottom - top) * (new_gap / gap - 1)  # the eye with its margins, to scale
    new_top = torch.maximum(top - (1 - LOWER_LID_SHARE) * widening, top - 0.9 * reach)
    new_bottom = torch.minimum(bottom + LOWER_LID_SHARE * widening, bottom + 0.9 * LID_REACH_BELOW * half_width)
    return EyeLids(centre, half_width, reach, torch.stack([top, bottom], dim=-1),
                   torch.stack([new_top, torch.maximum(new_bottom, new_top)], dim=-1), frame.axis_x, frame.axis_y)


def lid_flow(lids: EyeLids, points: torch.Tensor) -> torch.Tensor:
    """The backward flow [B, P, 2] that moves the lids at points [B, P, 2] (portrait coordinates): within each eye's
    band (from ``reach_above`` over the upper lid to ``LID_REACH_BELOW`` under the lower), a piecewise-linear
    remap along the face's down axis takes the moved lids back to the portrait's, so the skin above stretches or
    folds, the eye between them shows squeezed (or spread) and a shut eye is the skin above meeting the skin
    below. Exact where a smooth field blurs: a closing lid is a jump of the flow. Zero outside the bands and with
    the lids unmoved. Both eyes at once: their bands do not overlap."""
    offset = points[:, None] - lids.centre[:, :, None]  # B, 2 eyes, P, 2
    half_width = lids.half_width[..., None]  # B, 2, 1
    u = (offset * lids.axis_x[:, None, None]).sum(-1) / half_width.clamp(min=1e-6)
    v = (offset * lids.axis_y[:, None, None]).sum(-1)
    bow = (1 - u * u).clamp(min=0)  # the lids' curves meet at the corners; beyond them nothing moves
    upper, lower = lids.source[..., 0, None] * bow, lids.source[..., 1, None] * bow
    new_upper, new_lower = lids.moved[..., 0, None] * bow, lids.moved[..., 1, None] * bow
    top, bottom = upper - lids.reach_above[..., None], lower + LID_REACH_BELOW * half_width
    # each branch is (where the portrait's point lies − v), written so that unmoved lids give exactly zero
    above = (v - top) * (upper - new_upper) / (new_upper - top)
    between = (upper - new_upper) + (v - new_upper) * ((lower - upper) - (new_lower - new_upper)) / (
        new_lower - new_upper).clamp(min=_SHUT)
    below = (bottom - v) * (lower - new_lower) / (bottom - new_lower)
    shift = torch.where(v < new_upper, above, torch.where(v < new_lower, between, below))
    shift = torch.where((v > top) & (v < bottom), shift, torch.zeros_like(shift))
    return shift.sum(dim=1)[..., None] * lids.axis_y[:, None]


class RigField(NamedTuple):
    """The rig's smooth field [B, 3, F, F] (flow x, y and the interior's opacity) over the box from ``low`` [B, 2]
    spanning ``span`` [B, 2], and the lids' flow [B, 2, R, C] over the eyes' box (``eye_low``, ``eye_span``);
    normalised portrait coordinates, zero outside the boxes."""

    values: torch.Tensor
    low: torch.Tensor
    span: torch.Tensor
    eye_values: torch.Tensor
    eye_low: torch.Tensor
    eye_span: torch.Tensor


def _in_box(values: torch.Tensor, low: torch.Tensor, span: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """A field [B, C, h, w] over the box from ``low`` spanning ``span`` [B, 2], at grid points [B, H, W, 2] →
    [B, C, H, W] (zero outside the box)."""
    scale = 2 / span
    inside_box = grid * scale[:, None, None] - (low * scale + 1)[:, None, None]  # two ops on the grid, not four
    return F.grid_sample(values, inside_box.to(values.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def sample_field(field: RigField, grid: torch.Tensor, lids: bool = True) -> torch.Tensor:
    """The rig at grid points [B, H, W, 2] (portrait coordinates) → [B, 3, H, W]: flow x, y (the smooth field's plus,
    with ``lids``, the lids') and the interior's opacity."""
    smooth = _in_box(field.values, field.low, field.span, grid)
    if not lids:
        return smooth
    return torch.cat([smooth[:, :2] + _in_box(field.eye_values, field.eye_low, field.eye_span, grid), smooth[:, 2:]],
                     dim=1)


def field_on_grid(field: RigField, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rig's flow [B, H, W, 2] and interior opacity [B, 1, H, W] at a full-resolution grid [B, H, W, 2]: sampled
    at every other point and upsampled (a quarter of the samples; a shut eye's jump is spread over two pixels)."""
    coarse = sample_field(field, grid[:, ::2, ::2])
    fine = F.interpolate(coarse, size=grid.shape[1:3], mode="bilinear", align_corners=False)
    return fine[:, :2].permute(0, 2, 3, 1), fine[:, 2:]


def paint_cavity(frame: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """The rendered frame [B, 3, S, S] with the mouth's new interior [B, 1, S, S] painted in."""
    colour = torch.tensor(CAVITY_RGB, device=frame.device, dtype=frame.dtype).view(1, 3, 1, 1)
    return frame + opacity * (colour - frame)

