"""The expression rig (adasr/expression_rig.py): the driver's face ratios move the portrait's own lips and lids."""

from __future__ import annotations

import numpy as np
import torch

from adasr.demo_media import ASTRONAUT_FACE_ANCHORS, ASTRONAUT_FACE_RATIOS
from adasr.expression_rig import (ANCHORS, EYE_FIELD_ROWS, LOWER_LID_SHARE, LOWER_LIP_SHARE, MAX_EYE_WIDENING,
                                  NUM_ANCHORS, ExpressionRig, RigField, sample_field, target_ratios)
from adasr.expression_signal import FEATURE_NAMES, NUM_FEATURES

MOUTH, RIGHT_EYE = FEATURE_NAMES.index("mouth_open"), FEATURE_NAMES.index("right_eye_open")
CHIN = ANCHORS.index(152)
INNER_LOWER_LIP = ANCHORS.index(14)


def _anchors(closed_mouth: bool = False) -> torch.Tensor:
    """The astronaut's anchors (her mouth is open on her teeth), or with her inner lips met."""
    anchors = torch.from_numpy(ASTRONAUT_FACE_ANCHORS.copy())[None]
    if closed_mouth:
        upper, lower = [ANCHORS.index(i) for i in (82, 13, 312)], [ANCHORS.index(i) for i in (87, 14, 317)]
        middle = (anchors[:, upper] + anchors[:, lower]) / 2
        anchors[:, upper], anchors[:, lower] = middle, middle
    return anchors


def _change(**values: float) -> torch.Tensor:
    change = torch.zeros(1, NUM_FEATURES)
    for name, value in values.items():
        change[0, FEATURE_NAMES.index(name)] = value
    return change


def test_no_change_moves_nothing_and_paints_nothing_with_or_without_a_face() -> None:
    rig = ExpressionRig()
    for anchors in (_anchors(), torch.zeros(1, NUM_ANCHORS, 2)):
        field = rig(anchors, torch.zeros(1, NUM_FEATURES))
        assert torch.equal(field.values, torch.zeros(1, 4, rig.field_size, rig.field_size))
        assert torch.equal(field.eye_values, torch.zeros_like(field.eye_values))  # the lids too


def test_an_opening_mouth_moves_the_lower_lip_and_chin_down_by_the_asked_gap_and_paints_its_interior() -> None:
    rig, anchors = ExpressionRig(), _anchors(closed_mouth=True)
    change = _change(mouth_open=0.2)  # 0.2 eye-corner distances wider
    moved = rig.displacements(anchors, change)[0]
    iod = float((anchors[0, ANCHORS.index(263)] - anchors[0, ANCHORS.index(33)]).norm())
    assert abs(float(moved[INNER_LOWER_LIP, 1]) - LOWER_LIP_SHARE * 0.2 * iod) < 0.1 * 0.2 * iod  # down (y)
    assert float(moved[CHIN, 1]) > 0.5 * LOWER_LIP_SHARE * 0.2 * iod
    field = rig(anchors, change)
    target = (anchors[0, INNER_LOWER_LIP] + moved[INNER_LOWER_LIP])[None, None, None]
    at_lip = sample_field(field, target)[0, :, 0, 0]
    # the rendered lower lip comes from where the portrait's lower lip was (the flow points back to it)
    assert torch.allclose(at_lip[:2], -moved[INNER_LOWER_LIP], atol=0.3 * float(moved[INNER_LOWER_LIP].norm()))
    gap_middle = (anchors[0, ANCHORS.index(13)] + anchors[0, INNER_LOWER_LIP] + moved[INNER_LOWER_LIP]) / 2
    assert float(sample_field(field, gap_middle[None, None, None])[0, 2, 0, 0]) > 0.5  # a dark interior opened
    # her own mouth is open on her teeth: they part with their jaws and the dark opens between them
    anchors = _anchors()
    moved = rig.displacements(anchors, change)[0]
    open_lips = rig(anchors, change)
    upper_lip, lower_lip = anchors[0, ANCHORS.index(13)], anchors[0, INNER_LOWER_LIP]
    teeth_meet = (upper_lip + lower_lip) / 2
    upper_teeth = upper_lip + moved[ANCHORS.index(13)] + 0.3 * (teeth_meet - upper_lip)
    parted = teeth_meet + (moved[ANCHORS.index(13)] + moved[INNER_LOWER_LIP]) / 2
    assert float(sample_field(open_lips, upper_teeth[None, None, None])[0, 2, 0, 0]) < 0.2
    assert float(sample_field(open_lips, parted[None, None, None])[0, 2, 0, 0]) > 0.5
    corner = torch.tensor([[[[0.95, -0.95]]]])
    assert torch.equal(sample_field(field, corner)[0, :, 0, 0], torch.zeros(4))  # far from the face: untouched


def test_a_blink_brings_the_upper_lid_down_to_the_lower_and_leaves_the_mouth_alone() -> None:
    rig, anchors = ExpressionRig(), _anchors()
    right_eye = float(ASTRONAUT_FACE_RATIOS[RIGHT_EYE])
    upper = anchors[0, [ANCHORS.index(i) for i in (159, 158, 160)]].mean(0)
    lower = anchors[0, [ANCHORS.index(i) for i in (145, 144, 153)]].mean(0)
    half = rig(anchors, _change(right_eye_open=-right_eye / 2))
    shut = rig(anchors, _change(right_eye_open=-right_eye))
    assert float(rig.displacements(anchors, _change(right_eye_open=-right_eye)).abs().max()) == 0.0  # lids: remapped

    def looks_at(field: RigField, points: torch.Tensor) -> torch.Tensor:
        """Where the rendered face at ``points`` (one point [2], or a grid [1, H, W, 2]) takes its pixel from in the
        portrait: (x, y) [2], or y [H, W]."""
        if points.dim() == 1:
            return points + sample_field(field, points[None, None, None])[0, :2, 0, 0]
        return points[0, ..., 1] + sample_field(field, points)[0, 1]

    gap = float(lower[1] - upper[1])
    assert gap > 0
    # half shut: the upper lid comes down by its share (1 − LOWER_LID_SHARE) of half the gap; there the rendered
    # face shows the portrait's upper lid
    half_way = upper + torch.tensor([0.0, (1 - LOWER_LID_SHARE) * gap / 2])
    assert abs(float(looks_at(half, half_way)[1] - upper[1])) < 0.15 * gap
    # shut: down a line through the eye, the rendered points show a lid or the skin around; the eyeball between the
    # lid landmarks only within one cell of the lids' field where the lids meet (its bilinear step, under a pixel
    # here); half shut, over a third of the gap
    line = torch.stack([torch.full((400,), float(upper[0] + lower[0]) / 2),
                        torch.linspace(float(upper[1]) - gap, float(lower[1]) + gap, 400)], dim=-1)
    step = 3 * gap / 399
    cell = float(shut.eye_span[0, 1]) / EYE_FIELD_ROWS
    assert cell < 0.3 * gap
    for field, least, most in ((shut, 0.0, cell), (half, gap / 3, 3 * gap)):
        seen_y = looks_at(field, line.reshape(1, 400, 1, 2))
        eyeball = float(((seen_y > upper[1] + 0.1 * gap) & (seen_y < lower[1] - 0.1 * gap)).sum()) * step
        assert least <= eyeball <= most
    # the moved lids are all warped photo (cover 1): the decoded picture's eye, from the feature volume, stays open
    assert float(sample_field(shut, upper[None, None, None])[0, 3, 0, 0]) == 1.0
    wide = rig(anchors, _change(right_eye_open=0.2 * right_eye))
    assert float(sample_field(wide, line.reshape(1, 400, 1, 2))[0, 3].max()) == 1.0
    left_upper = anchors[0, ANCHORS.index(386)]
    assert torch.equal(sample_field(shut, left_upper[None, None, None])[0, :, 0, 0], torch.zeros(4))  # other eye
    mouth = anchors[0, INNER_LOWER_LIP]
    assert torch.equal(sample_field(shut, mouth[None, None, None])[0, :, 0, 0], torch.zeros(4))


def test_target_ratios_follow_the_driver_relative_to_its_reference() -> None:
    source = ASTRONAUT_FACE_RATIOS
    reference = np.array([0.02, 0.6, 0.25, 0.0, 0.30, 0.30, 0.24, 0.24], np.float32)
    assert np.allclose(target_ratios(source, reference, reference), source)  # the reference frame: the portrait
    talking = reference.copy()
    talking[MOUTH] += 0.25
    assert np.isclose(target_ratios(source, talking, reference)[MOUTH], source[MOUTH] + 0.25)
    blink = reference.copy()
    blink[RIGHT_EYE] = 0.0
    assert target_ratios(source, blink, reference)[RIGHT_EYE] == 0.0  # a blink closes any eye
    wide = reference.copy()
    wide[RIGHT_EYE] = 0.9
    assert target_ratios(source, wide, reference)[RIGHT_EYE] <= source[RIGHT_EYE] * MAX_EYE_WIDENING + 1e-6
    closing = reference.copy()
    closing[MOUTH] = 0.0
    assert target_ratios(np.zeros(NUM_FEATURES, np.float32), closing, reference)[MOUTH] == 0.0
    # a reference caught talking: a closed portrait still opens as wide as the driver does
    talking_reference, half_open = reference.copy(), reference.copy()
    talking_reference[MOUTH], half_open[MOUTH] = 0.08, 0.05
    closed_portrait = source.copy()
    closed_portrait[MOUTH] = 0.0
    assert np.isclose(target_ratios(closed_portrait, half_open, talking_reference)[MOUTH], 0.05)
    assert np.allclose(target_ratios(source, talking, None), talking)  # no reference: the driver's own


def test_the_renderer_with_the_rig_moves_only_the_face_and_gives_the_portrait_back_without_a_change(
        fast_head) -> None:  # type: ignore[no-untyped-def]
    from engines.talking_head import astronaut_state

    state = astronaut_state(fast_head)
    backend = fast_head.backend
    kp = state.kp_source
    still = backend.render(state.f_s, kp, kp, torch.zeros(1, NUM_ANCHORS, 2), torch.zeros(1, NUM_FEATURES))
    same = backend.render(state.f_s, kp, kp, state.anchors, torch.zeros(1, NUM_FEATURES))
    assert torch.equal(still, same)
    talking = backend.render(state.f_s, kp, kp, state.anchors, _change(mouth_open=0.25))
    difference = (talking - still).abs().amax(dim=1)[0]  # S, S
    size = difference.shape[-1]
    mouth_y, mouth_x = ((ASTRONAUT_FACE_ANCHORS[INNER_LOWER_LIP] + 1) / 2 * size).astype(int)[::-1]
    window = difference[mouth_y - size // 16: mouth_y + size // 8, mouth_x - size // 10: mouth_x + size // 10]
    assert float(window.max()) > 0.2  # the mouth opened
    # the hair above moved only through the decoder's instance norms (a global shift), far less than the mouth
    assert float(difference[: size // 8].max()) < float(window.max()) / 4
