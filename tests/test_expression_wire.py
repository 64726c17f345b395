"""The expression crosses the wire: the portrait's rig anchors and face ratios in its source payload, the driver's
face ratios in each MOTION, and a receiver that renders them, so a call's face opens its mouth with the driver's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adasr.expression_rig import ANCHORS, NUM_ANCHORS, anchors_from_landmarks
from adasr.expression_signal import FEATURE_NAMES, raw_ratios
from adasr.inference import SourceState
from engines.talking_head import TalkingHead, astronaut_state
from realtime.errors import ProtocolError
from realtime.motion_codec import MotionPacket, encode_motion
from realtime.protocol import decode
from realtime.receiver.pose import PoseOptions, PoseState
from realtime.receiver.render_loop import RenderJob
from realtime.source_messages import SourceKind
from realtime.source_payload import pack_source_state, unpack_source_state
from realtime.source_state_codec import RATIO_BOUNDS, decode_state, encode_image, encode_state

MOUTH_OPEN = FEATURE_NAMES.index("mouth_open")
#: The lips' anchors (mediapipe's inner and outer lips and the mouth's corners).
_LIPS = (82, 13, 312, 87, 14, 317, 0, 37, 267, 17, 84, 314, 61, 291)


def received_state(head: TalkingHead) -> SourceState:
    """The astronaut (with its rig anchors and ratios) as a receiver gets it: through its FEATURE_VOLUME payload."""
    return decode_state(encode_state(astronaut_state(head), head.backend.config), SourceKind.FEATURE_VOLUME, head)


def packet(seq: int, vector: np.ndarray, ratios: np.ndarray | None) -> MotionPacket:
    """A MOTION as the sender puts it on the wire and the receiver decodes it."""
    message = decode(encode_motion(seq, seq * 33_333, vector, face_ratios=ratios))
    assert isinstance(message, MotionPacket)
    return message


def mouth_box(state: SourceState, side: int) -> tuple[slice, slice]:
    """Pixel rows and columns around the portrait's lips, a margin of a third of their extent around them."""
    assert state.anchors is not None
    lips = state.anchors[0, [ANCHORS.index(i) for i in _LIPS]].numpy()
    low, high = (lips.min(0) + 1) / 2 * side, (lips.max(0) + 1) / 2 * side
    margin = (high - low) / 3
    (x0, y0), (x1, y1) = np.floor(low - margin).astype(int), np.ceil(high + margin).astype(int)
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


def test_a_received_face_opens_its_mouth_when_the_driver_does(fast_head) -> None:  # type: ignore[no-untyped-def]
    """Through the wire (source payload, MOTION, pose state, render job): the driver's mouth opening, relative to
    its first frame, opens the portrait's mouth; the same motion with the driver's ratios unchanged renders exactly
    the frame a portrait without anchors gives."""
    sent = astronaut_state(fast_head)
    state = received_state(fast_head)
    assert state.anchors is not None and state.face_ratios is not None and sent.anchors is not None
    np.testing.assert_array_equal(state.anchors.numpy(), sent.anchors.numpy())  # float32: exact
    np.testing.assert_array_equal(state.face_ratios, sent.face_ratios)
    vector = state.motion.to_vector()
    rest = np.array([0.02, 0.6, 0.25, 0.0, 0.3, 0.3, 0.24, 0.24], np.float32)  # the driver, mouth closed
    talking = rest.copy()
    talking[MOUTH_OPEN] = 0.35
    poses = PoseState()
    poses.new_source(state)
    first = packet(0, vector, rest)
    reference = poses.step(first.seq, first.vector, first.face_lost, 0, first.face_ratios)
    still_packet, open_packet = packet(1, vector, rest), packet(2, vector, talking)
    still = poses.step(still_packet.seq, still_packet.vector, False, 1, still_packet.face_ratios)
    opened = poses.step(open_packet.seq, open_packet.vector, False, 2, open_packet.face_ratios)
    assert reference is not None and still is not None and opened is not None
    assert opened.reference_ratios is not None and opened.face_ratios is not None
    assert opened.face_ratios[MOUTH_OPEN] - opened.reference_ratios[MOUTH_OPEN] == pytest.approx(0.33, abs=0.01)

    def render(pose, face: SourceState = state) -> np.ndarray:  # type: ignore[no-untyped-def]
        return RenderJob(0, 0, pose, face, 0).render(fast_head).astype(np.int16)

    rigless = dataclasses.replace(state, anchors=None, face_ratios=None)
    still_frame, open_frame = render(still), render(opened)
    np.testing.assert_array_equal(still_frame, render(still, rigless))  # zero change: exactly the learned renderer
    rows, cols = mouth_box(state, fast_head.size)
    difference = np.abs(open_frame - still_frame).sum(-1)
    mouth = difference[rows, cols]
    assert mouth.mean() > 15, f"the mouth region barely changed ({mouth.mean():.1f} levels summed over RGB)"
    above = difference[: rows.start - 4]  # the eyes, brows and forehead (the random decoder spreads a little)
    assert mouth.mean() > 10 * above.mean(), (mouth.mean(), above.mean())


def test_both_payload_kinds_carry_the_portraits_anchors_and_ratios(fast_head) -> None:  # type: ignore[no-untyped-def]
    """A SOURCE_IMAGE's receiver runs the encoder without a tracker: the anchors and ratios come in the payload,
    measured by the sender from its landmarks; without landmarks neither travels and the rig stays still."""
    side = fast_head.size
    crop = np.random.default_rng(3).integers(0, 256, (side, side, 3), dtype=np.uint8)
    landmarks = np.random.default_rng(4).uniform(0.3 * side, 0.7 * side, (478, 3))
    image = decode_state(encode_image(crop, landmarks), SourceKind.SOURCE_IMAGE, fast_head)
    assert image.anchors is not None and image.face_ratios is not None
    assert tuple(image.anchors.shape) == (1, NUM_ANCHORS, 2)
    np.testing.assert_allclose(image.anchors[0].numpy(), anchors_from_landmarks(landmarks, side), atol=1e-6)
    np.testing.assert_allclose(image.face_ratios, raw_ratios(landmarks).clip(*RATIO_BOUNDS), atol=1e-6)
    assert np.any(raw_ratios(landmarks) > RATIO_BOUNDS[1])  # random points: a degenerate face, clipped, not refused
    bare = decode_state(encode_image(crop), SourceKind.SOURCE_IMAGE, fast_head)
    assert bare.anchors is None and bare.face_ratios is None
    volume = decode_state(encode_state(fast_head.prepare_source(crop), fast_head.backend.config),
                          SourceKind.FEATURE_VOLUME, fast_head)
    assert volume.anchors is None and volume.face_ratios is None


def test_a_source_payload_with_bad_rig_arrays_is_refused_with_its_reason(
        fast_head) -> None:  # type: ignore[no-untyped-def]
    config = fast_head.backend.config
    good = unpack_source_state(encode_state(astronaut_state(fast_head), config, quantization="fp32"))

    def refused(changes: dict[str, np.ndarray | None], match: str) -> None:
        arrays = {name: a for name, a in {**good, **changes}.items() if a is not None}
        with pytest.raises(ProtocolError, match=match):
            decode_state(pack_source_state(arrays, quantization="fp32"), SourceKind.FEATURE_VOLUME, fast_head)

    far = good["anchors"].copy()
    far[0, 5, 1] = 2.5
    refused({"anchors": far}, "anchors outside")
    refused({"face_ratios": np.full(8, 3.0, np.float32)}, "face ratios outside")
    refused({"face_ratios": None}, "without the other")
    refused({"anchors": None}, "without the other")
    refused({"anchors": np.zeros((1, NUM_ANCHORS - 1, 2), np.float32)}, "'anchors' of shape")
    refused({"face_ratios": np.zeros(9, np.float32)}, "'face_ratios' of shape")
    image = {"image": np.zeros((fast_head.size, fast_head.size, 3), np.uint8), "anchors": good["anchors"]}
    with pytest.raises(ProtocolError, match="without the other"):
        decode_state(pack_source_state(image), SourceKind.SOURCE_IMAGE, fast_head)


def test_the_pose_state_keeps_the_references_ratios_and_eases_them_to_neutral() -> None:
    """Face ratios follow the pose's rules: the reference's ratios are the first after a reference was taken, a
    reset takes new ones, and a lost face eases the ratios to the reference's as it eases the pose."""
    vector = np.zeros(51, np.float32)
    a, b, c = (np.full(8, v, np.float32) for v in (0.1, 0.3, 0.5))
    poses = PoseState(PoseOptions(face_lost="neutral", neutral_ease_s=1.0))
    poses.new_source(object())  # type: ignore[arg-type]
    first = poses.step(0, vector, False, 0)  # a frame without ratios: the reference's come with the next one
    assert first is not None and first.face_ratios is None and first.reference_ratios is None
    second = poses.step(1, vector, False, 0, a)
    assert second is not None and second.reference_ratios is a and second.face_ratios is a
    third = poses.step(2, vector, False, 0, b)
    assert third is not None and third.reference_ratios is a and third.face_ratios is b
    assert poses.step(3, vector, True, 10_000_000, c) is None  # the loss starts
    halfway = poses.step(4, vector, True, 10_500_000, c)
    assert halfway is not None and halfway.face_ratios is not None
    np.testing.assert_allclose(halfway.face_ratios, (a + b) / 2)  # from the last shown towards the reference's
    poses.reset_from(5)
    after = poses.step(5, vector, False, 11_000_000, c)
    assert after is not None and after.reference_ratios is c
    absolute = PoseState(PoseOptions(relative=False)).step(0, vector, False, 0, a)
    assert absolute is not None and absolute.face_ratios is a and absolute.reference_ratios is None
