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
#: Shortest stretch of an eye's band the lids' remap divides by: a shut eye's (zero long) is a step.
_FLAT = 1e-12
#: Rows and columns of the lids' field over the box around both eyes' bands (about 2 px a cell on a 256² face, as
#: fine as the full-resolution grid it is sampled at: every other pixel).
EYE_FIELD_ROWS, EYE_FIELD_COLUMNS = 24, 64
#: How far (normalised coordinates, ~1.3 px of a 256² face) the lids' remap must move a point for the frame to show
#: the warped photo there alone: the decoded picture comes from the feature volume, whose eyes the lids' remap does
#: not reach (an eye is two of its cells), so any share of it lays the portrait's open eye over a shut one.
LID_PHOTO_SHIFT = 0.01
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


def _anchor_weights(*groups: tuple[tuple[int, ...], float]) -> list[float]:
    """Weights over the anchors [N] that sum each group of landmarks' mean times its factor: a point derived from the
    anchors as one column of a matrix product (in the graph one MatMul for all of them, not a gather and a mean
    each)."""
    column = [0.0] * NUM_ANCHORS
    for indices, factor in groups:
        for index in indices:
            column[_AT[index]] += factor / len(indices)
    return column


#: Each eye's landmarks (right, left): its corners (outer, inner), the three of the upper lid that the tracker's ratio
#: measures, its lower lid and its brow's lower edge.
_EYES = ((_RIGHT_EYE_CORNERS, _RIGHT_UPPER_LID[:3], _RIGHT_LOWER_LID, _RIGHT_BROW_LOWER),
         (_LEFT_EYE_CORNERS, _LEFT_UPPER_LID[:3], _LEFT_LOWER_LID, _LEFT_BROW_LOWER))
#: The smooth field's targets: the anchors, then where the portrait's teeth meet (the middle of each inner-lip pair)
#: twice, once moved with the upper lip and once with the lower: an opening mouth parts there.
NUM_TARGETS = NUM_ANCHORS + 2 * len(_INNER_UPPER_LIP)
_UPPER_TEETH, _LOWER_TEETH = list(range(NUM_ANCHORS, NUM_ANCHORS + 3)), list(range(NUM_ANCHORS + 3, NUM_TARGETS))
#: Columns of ``_points_of_anchors`` after the targets: the outer corners' vector, then per eye (right, left) its
#: centre, its half vector and four points relative to its centre (upper lid, lower lid, brow, the lids' middle).
_EYE_COLUMNS = 12


def _points_of_anchors() -> torch.Tensor:
    """The matrix [N, M + 1 + 12] that takes the anchors (x, y as rows) to the smooth field's targets at rest, the
    vector from the right outer eye corner to the left (the face's frame) and the points the lids are measured
    from (``_EYE_COLUMNS``)."""
    teeth = [_anchor_weights(((upper, lower), 1.0)) for upper, lower in zip(_INNER_UPPER_LIP, _INNER_LOWER_LIP)]
    columns = [*torch.eye(NUM_ANCHORS).tolist(), *teeth, *teeth,
               _anchor_weights(((_LEFT_EYE_CORNERS[0],), 1.0), ((_RIGHT_EYE_CORNERS[0],), -1.0))]
    columns += [_anchor_weights((corners, 1.0)) for corners, *_ in _EYES]
    columns += [_anchor_weights(((corners[0],), 0.5), ((corners[1],), -0.5)) for corners, *_ in _EYES]
    for part in (1, 2, 3):  # upper lid, lower lid, brow
        columns += [_anchor_weights((eye[part], 1.0), (eye[0], -1.0)) for eye in _EYES]
    columns += [_anchor_weights((upper, 0.5), (lower, 0.5), (corners, -1.0)) for corners, upper, lower, _ in _EYES]
    return torch.tensor(columns).T


def _moves_of_change() -> torch.Tensor:
    """The matrix [E, 2·M] that takes the ratio change to each target's move in the face's frame, in eye-corner
    distances: along the eyes' axis for the M targets, then along the face's down axis. Every move is linear in the
    change, so all of them are one matrix product."""
    side, along = torch.zeros(len(FEATURE_NAMES), NUM_TARGETS), torch.zeros(len(FEATURE_NAMES), NUM_TARGETS)
    mouth, corners = _F["mouth_open"], _rows(_MOUTH_CORNERS)
    along[mouth, _rows(_INNER_LOWER_LIP + _OUTER_LOWER_LIP) + _LOWER_TEETH] = LOWER_LIP_SHARE
    along[mouth, _rows(_INNER_UPPER_LIP + _OUTER_UPPER_LIP) + _UPPER_TEETH] = LOWER_LIP_SHARE - 1
    along[mouth, _rows(_JAW)] = LOWER_LIP_SHARE * torch.tensor(_JAW_FOLLOW)
    along[mouth, corners] = LOWER_LIP_SHARE / 2
    along[_F["smile"], corners] = -1.0
    side[_F["mouth_width"], corners] = torch.tensor([-0.5, 0.5])
    along[_F["right_brow"], _rows(_RIGHT_BROW)] = -1.0
    along[_F["left_brow"], _rows(_LEFT_BROW)] = -1.0
    return torch.cat([side, along], dim=1)


def _mouth_of_targets() -> torch.Tensor:
    """The matrix [M, 3] that takes the moved targets to the new mouth's centre (between the parted teeth edges) and
    the vector between its corners (right to left), and the targets' moves to the teeth's parting (the lower edge's
    mean move minus the upper's: the edges start together, so no move is exactly no gap)."""
    matrix = torch.zeros(NUM_TARGETS, 3)
    matrix[_UPPER_TEETH + _LOWER_TEETH, 0] = 1 / 6
    matrix[_rows(_MOUTH_CORNERS), 1] = torch.tensor([-1.0, 1.0])
    matrix[_UPPER_TEETH, 2], matrix[_LOWER_TEETH, 2] = -1 / 3, 1 / 3
    return matrix


def _cell_centres(rows: int, columns: int) -> torch.Tensor:
    """A field's sample points [2, rows·columns] (x, y as rows) in its box, 0 … 1, row by row."""
    y, x = torch.meshgrid((torch.arange(rows, dtype=torch.float32) + 0.5) / rows,
                          (torch.arange(columns, dtype=torch.float32) + 0.5) / columns, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)])


class FaceFrame(NamedTuple):
    """The face's own axes from the portrait's outer eye corners, ``axes`` [B, 2, 2]: row 0 along them (x), row 1
    across them (down); and their distance ``iod`` [B, 1], the rig's unit of length."""

    axes: torch.Tensor
    iod: torch.Tensor


#: Takes a unit vector (a, b) to its frame's rows, flattened: (a, b) and the quarter turn (−b, a).
_FRAME_OF_AXIS = ((1.0, 0.0, 0.0, 1.0), (0.0, 1.0, -1.0, 0.0))


def face_frame(across: torch.Tensor) -> FaceFrame:
    """The ``FaceFrame`` of the vector from the right outer eye corner to the left [B, 2]."""
    iod = across.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # B, 1
    return FaceFrame(((across / iod) @ across.new_tensor(_FRAME_OF_AXIS)).view(-1, 2, 2), iod)


class ExpressionRig(nn.Module):
    """Anchors [B, N, 2] and the ratio change [B, E] (target − portrait) → a backward flow and the mouth's
    interior, both as a field over the portrait's coordinates, and their use on the renderer's grids.

    It runs every frame inside the renderer's graph (ONNX Runtime), so it is written for few and cheap nodes: points
    as planes (x, y as rows: no trailing axis of 2 to broadcast, which ONNX Runtime does pair by pair), the points
    derived from the anchors and the targets' moves as constant matrix products, the smooth field's Gaussians as
    products of one along x and one along y, and the lids' remap as a sum over its three stretches, not a chain of
    selections."""

    unit_points: torch.Tensor
    """The field's cell centres [2, F·F] in its box, 0 … 1 (x, y as rows)."""
    unit_steps: torch.Tensor
    """The same along a side [F]."""
    eye_points: torch.Tensor
    """The lids' field's cell centres [2, R·C] in its box, likewise."""
    spread: torch.Tensor
    """1 / (2σ²) of each target's Gaussian [M], σ its radius of influence in eye-corner distances."""
    log_strength: torch.Tensor
    """The log of each target's weight [2, M, 1] (moving ones count more), on its Gaussian along x; 0 along y."""
    points_of_anchors: torch.Tensor
    """``_points_of_anchors()``."""
    moves_of_change: torch.Tensor
    """``_moves_of_change()``."""
    mouth_of_targets: torch.Tensor
    """``_mouth_of_targets()``."""

    def __init__(self, field_size: int = FIELD_SIZE) -> None:
        super().__init__()
        self.field_size = field_size
        self.register_buffer("unit_points", _cell_centres(field_size, field_size), persistent=False)
        self.register_buffer("unit_steps", _cell_centres(1, field_size)[0], persistent=False)
        self.register_buffer("eye_points", _cell_centres(EYE_FIELD_ROWS, EYE_FIELD_COLUMNS), persistent=False)
        sigma = torch.full((NUM_TARGETS,), _SIGMA_TEETH)  # the teeth edges follow the anchors
        sigma[:NUM_ANCHORS] = _SIGMA_STILL
        sigma[_rows(_RIGHT_UPPER_LID + _LEFT_UPPER_LID + _RIGHT_LOWER_LID + _LEFT_LOWER_LID + _RIGHT_EYE_CORNERS
                    + _LEFT_EYE_CORNERS + _UNDER_EYES)] = _SIGMA_LID
        sigma[_rows(_INNER_UPPER_LIP + _INNER_LOWER_LIP + _OUTER_UPPER_LIP + _OUTER_LOWER_LIP + _MOUTH_CORNERS
                    + _JAW)] = _SIGMA_MOUTH
        sigma[_rows(_RIGHT_BROW + _LEFT_BROW)] = _SIGMA_BROW
        self.register_buffer("spread", 1 / (2 * sigma**2), persistent=False)
        strength = torch.full((NUM_TARGETS,), _MOVING_WEIGHT)
        strength[_rows(_STILL + _RIGHT_EYE_CORNERS + _LEFT_EYE_CORNERS)] = 1.0
        self.register_buffer("log_strength", torch.stack([strength.log(), torch.zeros_like(strength)])[..., None],
                             persistent=False)
        self.register_buffer("points_of_anchors", _points_of_anchors(), persistent=False)
        self.register_buffer("moves_of_change", _moves_of_change(), persistent=False)
        self.register_buffer("mouth_of_targets", _mouth_of_targets(), persistent=False)

    def _moves(self, frame: FaceFrame, change: torch.Tensor) -> torch.Tensor:
        """Where each target moves [B, 2, M], forward (portrait → rendered face), in normalised coordinates."""
        in_frame = (change @ self.moves_of_change).view(-1, 2, NUM_TARGETS)  # B, (along x, along y), M in iod
        return frame.axes.transpose(1, 2) @ in_frame * frame.iod[:, :, None]

    def displacements(self, anchors: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """Where each anchor moves [B, N, 2], forward (portrait → rendered face), in normalised coordinates. The lids
        stay: they pin the smooth field around the eyes, whose opening ``eye_lids`` remaps exactly."""
        across = anchors.transpose(1, 2) @ self.points_of_anchors[:, NUM_TARGETS]  # B, 2
        return self._moves(face_frame(across), change)[:, :, :NUM_ANCHORS].transpose(1, 2)

    def _smooth_flow(self, frame: FaceFrame, cells: torch.Tensor, targets: torch.Tensor,
                     moves: torch.Tensor) -> torch.Tensor:
        """The backward flow [B, 2, F, F] at the field's cells (their x and y [B, 2, F]) through the moved targets
        [B, 2, M]: their moves [B, 2, M] averaged with normalised Gaussian weights, fading to no motion away from
        them. A Gaussian of a distance is one along x times one along y and the cells lie in rows and columns, so
        the weights are two small tables [B, M, F] and the weighted sums one matrix product."""
        scale = (self.spread / frame.iod ** 2)[:, None, :, None]  # B, 1, M, 1: 1 / (2 (σ·iod)²)
        apart = cells[:, :, None] - targets[..., None]  # B, 2, M, F
        along_x, along_y = torch.exp(self.log_strength - scale * apart * apart).unbind(dim=1)  # B, M, F each
        weighted = torch.cat([-moves, torch.ones_like(moves[:, :1])], dim=1)[..., None] * along_x[:, None]  # B, 3, M, F
        pulled = along_y.transpose(1, 2)[:, None] @ weighted  # B, 3, F (y), F (x): −Σ w·move and Σ w
        return pulled[:, :2] / (pulled[:, 2:] + _BACKGROUND)

    def _new_interior(self, frame: FaceFrame, grid: torch.Tensor, targets: torch.Tensor,
                      moves: torch.Tensor) -> torch.Tensor:
        """How far grid points [B, 2, P] lie in the mouth's newly opened gap (between the parted teeth edges; the
        whole inner mouth for a portrait whose lips met): an ellipse, 0 … 1 [B, 1, P], zero when the mouth did not
        open further."""
        centre, corners = (targets @ self.mouth_of_targets[:, :2]).unbind(dim=2)  # B, 2 each
        gap = ((moves @ self.mouth_of_targets[:, 2]) * frame.axes[:, 1]).sum(-1, keepdim=True)  # B, 1
        half_axes = torch.cat([0.42 * corners.norm(dim=-1, keepdim=True).clamp(min=1e-4), (gap / 2).clamp(min=1e-4)],
                              dim=1)  # B, 2: along the eyes' axis and down
        uv = frame.axes @ (grid - centre[:, :, None]) / half_axes[:, :, None]  # B, 2, P: in the ellipse's units
        opened = (gap / (0.02 * frame.iod)).clamp(0, 1)  # fades in over the first 2 % of an eye distance
        return torch.sigmoid(6.0 * (1 - (uv * uv).sum(1, keepdim=True))) * opened[:, :, None]

    def forward(self, anchors: torch.Tensor, change: torch.Tensor) -> RigField:
        """The rig's field over the face's box in the portrait: the backward flow (x, y; rendered face → portrait)
        and the mouth's new interior (its opacity)."""
        planes = anchors.transpose(1, 2)  # B, 2, N: x and y as rows
        at_rest, across, eyes = (planes @ self.points_of_anchors).split([NUM_TARGETS, 1, _EYE_COLUMNS], dim=2)
        frame = face_frame(across[..., 0])
        moves = self._moves(frame, change)
        targets = at_rest + moves
        low, high = planes.amin(dim=2), planes.amax(dim=2)  # the face's box (every anchor is on the face)
        margin = BOX_MARGIN * (high - low)
        low, span = low - margin, (high - low + 2 * margin).clamp(min=1e-3)
        size = self.field_size
        grid = low[:, :, None] + self.unit_points * span[:, :, None]  # B, 2, P
        opacity = self._new_interior(frame, grid, targets, moves).view(-1, 1, size, size) * CAVITY_OPACITY
        cells = low[:, :, None] + self.unit_steps * span[:, :, None]  # B, 2, F: the grid's columns' x, rows' y
        values = torch.cat([self._smooth_flow(frame, cells, targets, moves), opacity, torch.zeros_like(opacity)], dim=1)
        return RigField(values, low, span, *self._eye_field(eye_lids(eyes, change, frame)))

    def _eye_field(self, lids: EyeLids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lids' flow and photo cover [B, 4, R, C] (x, y, a zero third channel so that it adds to the smooth
        field's samples, and ``lid_flow``'s cover) on a field over the smallest box holding both eyes' bands, its
        ``low`` corner and ``span`` [B, 2]."""
        extent = torch.stack([torch.minimum(lids.source[..., 0], lids.moved[..., 0]) - lids.reach_above,
                              lids.source[..., 1] + LID_REACH_BELOW * lids.half_width], dim=-1)  # B, eye, 2
        ends = lids.centre[..., None] + lids.axes[:, 1, :, None, None] * extent[:, None]  # B, 2, eye, (top, bottom)
        half_band = lids.axes[:, 0].abs()[:, :, None] * lids.half_width[:, None]  # B, 2, eye: half a band's width
        low = (ends.amin(dim=-1) - half_band).amin(dim=-1)
        span = ((ends.amax(dim=-1) + half_band).amax(dim=-1) - low).clamp(min=1e-3)
        grid = low[:, :, None] + self.eye_points * span[:, :, None]
        flow, cover = lid_flow(lids, grid).view(-1, 3, EYE_FIELD_ROWS, EYE_FIELD_COLUMNS).split([2, 1], dim=1)
        return torch.cat([flow, torch.zeros_like(cover), cover], dim=1), low, span


class EyeLids(NamedTuple):
    """Both eyes' lids (right, left), each lid a parabola between its eye's corners: ``centre`` [B, 2, 2] (the
    corners' midpoint; x, y as rows, an eye per column), ``half_width`` [B, 2], how far above the upper lid the
    moving skin reaches (``reach_above`` [B, 2]), and each lid's height at the eye's middle along the face's down
    axis [B, 2, 2] (upper, lower; the upper is negative), in the portrait (``source``) and as the driver asks
    (``moved``); the face's ``axes`` [B, 2, 2] (``FaceFrame``). Normalised portrait coordinates."""

    centre: torch.Tensor
    half_width: torch.Tensor
    reach_above: torch.Tensor
    source: torch.Tensor
    moved: torch.Tensor
    axes: torch.Tensor


def eye_lids(eyes: torch.Tensor, change: torch.Tensor, frame: FaceFrame) -> EyeLids:
    """The portrait's lids from the points ``_points_of_anchors`` derives for the eyes [B, 2, 12] (each lid
    ``LID_MARGIN`` past its landmarks), and where the ratio change [B, E] moves them: the gap between the landmarks
    changes by the eye's opening change times its width (as ``adasr.expression_signal`` measures an opening), the
    eye with its margins in proportion, the upper lid taking ``1 − LOWER_LID_SHARE`` of it; lids never cross. Both
    eyes at once (the eye is the last dimension)."""
    centre, half, relative = eyes.split([2, 2, 8], dim=2)
    half_width = half.norm(dim=1)  # B, 2
    along, down = (frame.axes @ relative).unbind(dim=1)  # B, 8 each: the relative points on the face's axes
    upper, lower, brow = down[:, 0:2], down[:, 2:4], down[:, 4:6]
    across = along[:, 6:8] / half_width.clamp(min=1e-6)
    bow = (1 - across * across).clamp(min=_MIN_BOW)
    margin = LID_MARGIN * half_width
    reach = (torch.minimum(LID_REACH_TO_BROW * (upper - brow), LID_REACH_ABOVE * half_width)
             - margin).clamp(min=0.2 * half_width)  # above the lid's margin, at most part of the way to the brow
    top, bottom = upper / bow - margin, lower / bow + margin
    gap = (bottom - top - 2 * margin).clamp(min=_SHUT)  # between the landmarks
    opening = change[:, _F["right_eye_open"]:_F["left_eye_open"] + 1]
    new_gap = (gap + opening * 2 * half_width / bow).clamp(min=0)
    widening = (bottom - top) * (new_gap / gap - 1)  # the eye with its margins, to scale
    new_top = torch.maximum(top - (1 - LOWER_LID_SHARE) * widening, top - 0.9 * reach)
    new_bottom = torch.minimum(bottom + LOWER_LID_SHARE * widening, bottom + 0.9 * LID_REACH_BELOW * half_width)
    return EyeLids(centre, half_width, reach, torch.stack([top, bottom], dim=-1),
                   torch.stack([new_top, torch.maximum(new_bottom, new_top)], dim=-1), frame.axes)


def lid_flow(lids: EyeLids, points: torch.Tensor) -> torch.Tensor:
    """The backward flow [B, 2, P] that moves the lids at points [B, 2, P] (portrait coordinates, x, y as rows), and
    a third row, the cover: 0 … 1, how far the frame must be the warped photo there (1 where the remap moves a point
    by ``LID_PHOTO_SHIFT`` or more):
    within each eye's band (from ``reach_above`` over the upper lid to ``LID_REACH_BELOW`` under the lower), a
    piecewise-linear remap along the face's down axis takes the moved lids back to the portrait's, so the skin above
    stretches or folds, the eye between them shows squeezed (or spread) and a shut eye is the skin above meeting the
    skin below. Exact where a smooth field blurs: a closing lid is a jump of the flow. Zero outside the bands and
    with the lids unmoved. Both eyes at once: their bands do not overlap.

    The band has three stretches (skin above, eye, skin below) with ends at the lids, scaled by the bow, and at the
    band's ends; a point at v on the moved face comes from v plus, summed over the stretches, each one's change of
    length times the share of it that lies above v."""
    offset = points[:, :, None] - lids.centre[..., None]  # B, 2, eye, P
    u, v = (lids.axes @ offset.flatten(2)).view(offset.shape).unbind(dim=1)  # B, eye, P: along the eye, down
    u = u / lids.half_width.clamp(min=1e-6)[..., None]
    bow = (1 - u * u).clamp(min=0)[:, :, None]  # B, eye, 1, P: the lids meet at the corners; beyond, nothing moves
    (source_top, source_bottom), (moved_top, moved_bottom) = lids.source.unbind(-1), lids.moved.unbind(-1)
    moved_ends = torch.stack([source_top, moved_top, moved_bottom, source_bottom], dim=-1)  # B, eye, 4: × bow
    source_ends = torch.stack([source_top, source_top, source_bottom, source_bottom], dim=-1)
    zero = torch.zeros_like(source_top)
    band_ends = torch.stack([-lids.reach_above, zero, zero, LID_REACH_BELOW * lids.half_width], dim=-1)  # added
    moved_length, band_length = _stretches(moved_ends), _stretches(band_ends)  # B, eye, 3
    start = bow * moved_ends[..., :3, None] + band_ends[..., :3, None]  # B, eye, 3, P
    length = bow * moved_length[..., None] + band_length[..., None]
    growth = bow * (_stretches(source_ends) - moved_length)[..., None]  # the portrait's length − the moved one
    above = ((v[:, :, None] - start) / length.clamp(min=_FLAT)).clamp(0, 1)  # a shut eye's stretch: a step
    shift = (growth * above).sum(dim=(1, 2))[:, None]  # B, 1, P: along the face's down axis
    cover = (shift.abs() / LID_PHOTO_SHIFT).clamp(max=1)
    return torch.cat([lids.axes[:, 1, :, None] * shift, cover], dim=1)


def _stretches(ends: torch.Tensor) -> torch.Tensor:
    """The lengths [..., 3] between consecutive ends [..., 4]."""
    return ends[..., 1:] - ends[..., :3]


class RigField(NamedTuple):
    """The rig's smooth field [B, 4, F, F] (flow x, y, the interior's opacity and zero) over the box from ``low``
    [B, 2] spanning ``span`` [B, 2], and the lids' field [B, 4, R, C] (flow x, y, zero and the photo's cover) over
    the eyes' box (``eye_low``, ``eye_span``); normalised portrait coordinates, zero outside the boxes. Summed where
    they are sampled: the channels each leaves zero are the other's."""

    values: torch.Tensor
    low: torch.Tensor
    span: torch.Tensor
    eye_values: torch.Tensor
    eye_low: torch.Tensor
    eye_span: torch.Tensor


def _in_box(values: torch.Tensor, low: torch.Tensor, span: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """A field [B, C, h, w] over the box from ``low`` spanning ``span`` [B, 2], at grid points [B, H, W, 2] →
    [B, C, H, W] (zero outside the box). The box's scale and offset are repeated along a grid row ([B, 1, W, 2])
    before they meet the grid: ONNX Runtime broadcasts a trailing axis of 2 pair by pair, 18× slower on a 128² grid."""
    scale = 2 / span

    def along_a_row(pair: torch.Tensor) -> torch.Tensor:
        return pair[:, None, None].expand(-1, 1, grid.shape[2], 2)

    inside_box = grid * along_a_row(scale) - along_a_row(low * scale + 1)
    return F.grid_sample(values, inside_box.to(values.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def sample_field(field: RigField, grid: torch.Tensor, lids: bool = True) -> torch.Tensor:
    """The rig at grid points [B, H, W, 2] (portrait coordinates) → [B, 4, H, W]: flow x, y (the smooth field's plus,
    with ``lids``, the lids'), the interior's opacity and the photo's cover over the moved lids."""
    smooth = _in_box(field.values, field.low, field.span, grid)
    return smooth + _in_box(field.eye_values, field.eye_low, field.eye_span, grid) if lids else smooth


def volume_flow(field: RigField, grid: torch.Tensor) -> torch.Tensor:
    """The smooth field's flow at grid points [B, H, W, 2] as a move of the feature volume's sampling grid
    [B, H, W, 3] (x, y; none in depth): added to every depth slice at once (the lids move in the full-resolution
    photo; an eye is two of the volume's cells)."""
    smooth = sample_field(field, grid, lids=False)
    return F.pad(smooth[:, :2], (0, 0, 0, 0, 0, 1)).permute(0, 2, 3, 1)


class RigOnGrid(NamedTuple):
    """The rig on the full-resolution grid: ``flow`` [B, H, W, 2], the mouth's interior opacity ``cavity`` and the
    photo's ``cover`` over the moved lids [B, 1, H, W] (the source blend's least weight on the warped photo)."""

    flow: torch.Tensor
    cavity: torch.Tensor
    cover: torch.Tensor


def field_on_grid(field: RigField, grid: torch.Tensor) -> RigOnGrid:
    """The rig at a full-resolution grid [B, H, W, 2]: sampled at every other point and upsampled (a quarter of the
    samples; a shut eye's jump is spread over two pixels)."""
    coarse = sample_field(field, grid[:, ::2, ::2])
    flow, cavity, cover = F.interpolate(coarse, size=grid.shape[1:3], mode="bilinear",
                                        align_corners=False).split([2, 1, 1], dim=1)
    return RigOnGrid(flow.permute(0, 2, 3, 1), cavity, cover)


def paint_cavity(frame: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """The rendered frame [B, 3, S, S] with the mouth's new interior [B, 1, S, S] painted in."""
    colour = torch.tensor(CAVITY_RGB, device=frame.device, dtype=frame.dtype).view(1, 3, 1, 1)
    return frame + opacity * (colour - frame)

