"""The receiver's parts on their own, without asyncio: pose state, source inbox, motion gaps.

Times are passed in (µs on one monotonic clock), so every deadline is tested without sleeping.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from realtime.errors import ProtocolError
from realtime.messages import SEQ_MODULUS
from realtime.protocol import decode
from realtime.receiver.motion_gaps import MotionGapWatch
from realtime.receiver.pose import PoseOptions, PoseState
from realtime.receiver.source_inbox import SourceInbox
from realtime.source_messages import SourceKind, model_id_for, split_source
from realtime.source_payload import pack_source_state
from realtime.source_state_codec import encode_state, wire_model_id

K = 15
VECTOR = 6 + 3 * K
S = 1_000_000  # one second in µs


def yaw(value: float) -> np.ndarray:
    vector = np.zeros(VECTOR, np.float32)
    vector[0] = value
    return vector


def yaws(pose: Any) -> tuple[float, float | None]:
    """(yaw of the pose's vector, yaw of its reference or None)."""
    return float(pose.vector[0]), None if pose.reference is None else float(pose.reference[0])


# ---- pose state -----------------------------------------------------------------------------------

def test_the_first_motion_is_the_reference_until_a_reset_takes_the_first_motion_from_its_number() -> None:
    state = PoseState()
    state.new_source(object())  # type: ignore[arg-type]
    assert yaws(state.step(10, yaw(5.0), False, 0)) == (5.0, 5.0)
    assert yaws(state.step(11, yaw(7.0), False, 0)) == (7.0, 5.0)
    state.reset_from(13)
    assert yaws(state.step(12, yaw(8.0), False, 0)) == (8.0, 5.0)  # older than the reset: the old reference
    assert yaws(state.step(14, yaw(9.0), False, 0)) == (9.0, 9.0)  # 13 was lost: the first one from 13 on
    assert yaws(state.step(15, yaw(1.0), False, 0)) == (1.0, 9.0)
    assert state.stats.references_set == 2
    state.new_source(object())  # type: ignore[arg-type]
    assert yaws(state.step(16, yaw(3.0), False, 0)) == (3.0, 3.0)  # a new face, a new reference


def test_a_reset_across_the_sequence_wrap_and_a_lost_face_is_never_a_reference() -> None:
    state = PoseState()
    state.new_source(object())  # type: ignore[arg-type]
    state.step(SEQ_MODULUS - 2, yaw(1.0), False, 0)
    state.reset_from(SEQ_MODULUS - 1)
    assert state.step(SEQ_MODULUS - 1, yaw(2.0), True, 0) is None  # FACE_LOST: held, and not a reference
    assert yaws(state.step(0, yaw(3.0), False, 0)) == (3.0, 3.0)  # wrapped: 0 is newer than 2³² − 1
    assert state.stats.references_set == 2


def test_absolute_motion_has_no_reference() -> None:
    state = PoseState(PoseOptions(relative=False))
    state.new_source(object())  # type: ignore[arg-type]
    assert yaws(state.step(0, yaw(4.0), False, 0)) == (4.0, None)


def test_a_lost_face_holds_the_last_frame_and_its_return_is_counted_once() -> None:
    state = PoseState(PoseOptions(face_lost="hold"))
    state.new_source(object())  # type: ignore[arg-type]
    state.step(0, yaw(0.0), False, 0)
    state.step(1, yaw(20.0), False, S // 10)
    assert [state.step(seq, yaw(20.0), True, seq * S // 10) for seq in (2, 3, 4)] == [None, None, None]
    s = state.stats
    assert s.face_lost and s.face_lost_events == 1 and s.frames_face_lost == 3 and s.frames_eased == 0
    assert yaws(state.step(5, yaw(10.0), False, S // 2)) == (10.0, 0.0)
    assert not s.face_lost and s.face_lost_events == 1


def test_a_lost_face_eases_to_the_reference_over_the_ease_time_then_holds() -> None:
    state = PoseState(PoseOptions(face_lost="neutral", neutral_ease_s=1.0))
    state.new_source(object())  # type: ignore[arg-type]
    state.step(0, yaw(0.0), False, 0)  # the reference: neutral is yaw 0
    state.step(1, yaw(20.0), False, 0)
    assert state.step(2, yaw(20.0), True, 10 * S) is None  # the loss starts: nothing moved yet
    assert yaws(state.step(3, yaw(20.0), True, 10 * S + S // 4)) == (15.0, 0.0)
    assert yaws(state.step(4, yaw(20.0), True, 10 * S + S // 2)) == (10.0, 0.0)
    assert yaws(state.step(5, yaw(20.0), True, 12 * S)) == (0.0, 0.0)  # past the ease: the neutral pose
    assert state.step(6, yaw(20.0), True, 13 * S) is None  # there: hold it
    assert state.stats.frames_eased == 3 and state.stats.frames_face_lost == 2


def test_in_absolute_mode_the_neutral_pose_is_the_sources_own_motion() -> None:
    source = SimpleNamespace(motion=SimpleNamespace(to_vector=lambda: yaw(-8.0)))
    state = PoseState(PoseOptions(relative=False, face_lost="neutral", neutral_ease_s=0.0))
    state.new_source(source)  # type: ignore[arg-type]
    state.step(0, yaw(12.0), False, 0)
    assert yaws(state.step(1, yaw(12.0), True, 0)) == (-8.0, None)  # no ease time: straight to neutral


def test_pose_options_refuse_an_unknown_policy_and_a_negative_ease() -> None:
    with pytest.raises(ValueError, match="face_lost must be 'hold' or 'neutral'"):
        PoseOptions(face_lost="fade")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="neutral_ease_s"):
        PoseOptions(neutral_ease_s=-1)


# ---- motion gaps ----------------------------------------------------------------------------------

def test_a_gap_is_reported_once_while_it_lasts_and_ends_at_the_next_motion() -> None:
    gaps = MotionGapWatch(0.5)
    assert not gaps.check(10 * S)  # nothing before the first motion
    gaps.arrived(0)
    assert not gaps.check(S * 4 // 10)
    assert gaps.check(S * 6 // 10) and gaps.stats.motion_stalled  # the stall begins
    assert not gaps.check(S)  # reported once
    gaps.arrived(S * 12 // 10)
    s = gaps.stats
    assert not s.motion_stalled and s.motion_gaps == 1 and s.longest_gap_s == pytest.approx(1.2)
    gaps.arrived(S * 30 // 10)  # a gap no look saw: counted when it ends
    assert s.motion_gaps == 2 and s.longest_gap_s == pytest.approx(1.8)
    gaps.arrived(S * 32 // 10)  # a short one is no gap
    assert s.motion_gaps == 2


def test_an_infinite_gap_threshold_never_stalls() -> None:
    gaps = MotionGapWatch(float("inf"))
    gaps.arrived(0)
    assert not gaps.check(3600 * S) and gaps.stats.motion_gaps == 0


# ---- source inbox ---------------------------------------------------------------------------------

class StubHead:
    """Enough of a TalkingHead for the inbox's transfer checks (its model id)."""

    def __init__(self) -> None:
        config = SimpleNamespace(name="stub", image_size=8, num_kp=K)
        self.backend = SimpleNamespace(model_id="stub", config=config, device=torch.device("cpu"))


def inbox_for(head: Any, deadline_s: float = 60.0) -> SourceInbox:
    return SourceInbox(head, max_total=1 << 20, deadline_s=deadline_s, opened_us=0)


def transfer(payload: bytes, model_id: bytes, transfer_id: int, kind: SourceKind = SourceKind.FEATURE_VOLUME,
             max_message: int = 256) -> list[Any]:
    """A transfer as decoded messages (the inbox takes what ``parse_or_count`` returns)."""
    return [decode(m) for m in split_source(payload, model_id, kind, max_message, transfer_id=transfer_id)]


def test_the_inbox_hands_out_a_complete_transfer_once() -> None:
    head = StubHead()
    inbox = inbox_for(head)
    payload = bytes(range(256)) * 3
    messages = transfer(payload, wire_model_id(head), 1)  # type: ignore[arg-type]
    assert [inbox.feed(m) for m in messages] == [False] * (len(messages) - 1) + [True]
    done = inbox.take()
    assert done is not None and done.payload == payload and done.kind == SourceKind.FEATURE_VOLUME
    assert inbox.take() is None and inbox.stats.source_errors == 0


def test_the_inbox_refuses_another_model_once_and_drops_its_chunks_quietly() -> None:
    inbox = inbox_for(StubHead())
    messages = transfer(bytes(700), model_id_for("another checkpoint"), 2)
    assert not any(inbox.feed(m) for m in messages)
    s = inbox.stats
    assert s.source_errors == 1 and "both peers must load the same checkpoint" in s.last_source_error
    assert s.source_chunks_ignored == len(messages) - 1 and inbox.take() is None


def test_a_bad_chunk_alone_does_not_end_its_transfer_and_a_corrupt_one_fails_the_checksum() -> None:
    head = StubHead()
    model = wire_model_id(head)  # type: ignore[arg-type]
    inbox = inbox_for(head)
    good = transfer(bytes(range(200)) * 3, model, 3)
    stray = transfer(bytes(300), model, 4)[1]  # a chunk of a transfer never announced here
    for message in [good[0], stray, *good[1:]]:
        done = inbox.feed(message)
    assert done and inbox.stats.source_chunks_ignored == 1 and inbox.stats.source_errors == 0
    corrupt = transfer(bytes(range(200)) * 3, model, 5)
    corrupt[-1] = dataclasses.replace(corrupt[-1], data=bytes(len(corrupt[-1].data)))
    assert not any(inbox.feed(m) for m in corrupt)
    assert inbox.stats.source_errors == 1 and "SHA-256" in inbox.stats.last_source_error


def test_a_newer_complete_transfer_supersedes_one_still_waiting() -> None:
    head = StubHead()
    model = wire_model_id(head)  # type: ignore[arg-type]
    inbox = inbox_for(head)
    for transfer_id, payload in ((6, b"old" * 100), (7, b"new" * 100)):
        for message in transfer(payload, model, transfer_id):
            inbox.feed(message)
    done = inbox.take()
    assert done is not None and done.payload == b"new" * 100 and inbox.stats.sources_superseded == 1


def test_the_source_deadline_counts_from_the_opening_and_ends_with_an_installed_state() -> None:
    inbox = inbox_for(StubHead(), deadline_s=2.0)
    assert inbox.overdue(2 * S) is None
    inbox.refuse("some reason")
    assert inbox.overdue(2 * S + 1) == "no usable source state within 2 s (last refused: some reason)"
    inbox.installed(payload_bytes=10, kind="local", decode_s=0.0)
    assert inbox.overdue(100 * S) is None and inbox.stats.sources_accepted == 1
    assert inbox_for(StubHead(), deadline_s=0).overdue(10**6 * S) is None  # 0: wait forever


def test_the_inbox_decodes_a_good_state_and_refuses_a_wrong_shape_loudly_three_times(
        fast_head, astronaut_face, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="realtime.receiver")
    inbox = inbox_for(fast_head)
    model = wire_model_id(fast_head)
    state = fast_head.prepare_source(astronaut_face)
    for message in transfer(encode_state(state, fast_head.backend.config), model, 8, max_message=16384):
        done = inbox.feed(message)
    complete = inbox.take()
    assert done and complete is not None
    decoded = inbox.decode(complete)
    assert decoded.f_s.shape == state.f_s.shape and torch.equal(decoded.x_c, state.x_c)
    wrong = pack_source_state({"f_s": np.zeros((1, 2, 2, 2, 2), np.float32)})
    for transfer_id in range(9, 14):
        for message in transfer(wrong, model, transfer_id):
            inbox.feed(message)
        complete = inbox.take()
        assert complete is not None
        with pytest.raises(ProtocolError, match="'f_s' of shape") as refused:
            inbox.decode(complete)
        inbox.refuse(str(refused.value))
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("refused the source state")]
    assert levels == [logging.ERROR] * 3 + [logging.DEBUG] * 2 and inbox.stats.source_errors == 5


def test_a_sent_state_leaves_out_the_photo_differences_and_the_receiver_derives_them(
        fast_head, astronaut_face) -> None:  # type: ignore[no-untyped-def]
    """The lite state's last channels are the photo's second differences (the cubic source warp): derived from
    the photo, so the payload leaves them out and the decoded state has them again, as the encoder made them
    (up to the photo's fp16 rounding); the receiver renders the sender's frame."""
    from realtime.source_payload import unpack_source_state
    from realtime.source_state_codec import decode_state

    config = fast_head.backend.config
    derived = config.derived_volume_channels
    assert derived == 9 * 16 // config.generator.reshape_depth
    state = fast_head.prepare_source(astronaut_face)
    payload = encode_state(state, config, quantization="fp32")
    sent = unpack_source_state(payload)["f_s"]
    assert sent.shape == (1, *config.sent_volume_shape()) and sent.shape[1] == state.f_s.shape[1] - derived
    back = decode_state(payload, SourceKind.FEATURE_VOLUME, fast_head)
    assert back.f_s.shape == state.f_s.shape
    assert (back.f_s - state.f_s).abs().max() < 1e-6
    fp16 = decode_state(encode_state(state, config), SourceKind.FEATURE_VOLUME, fast_head)
    assert (fp16.f_s[:, -derived:] - state.f_s[:, -derived:]).abs().max() < 4e-3  # from the fp16 photo
    full = len(pack_source_state({"f_s": state.f_s.numpy(), "x_c": state.x_c.numpy(),
                                  "motion": state.motion.to_vector()}))
    assert len(encode_state(state, config)) < 0.8 * full
    motion = state.motion
    sender, receiver = (fast_head.render_image(s, motion, motion).astype(int) for s in (state, fp16))
    assert np.abs(sender - receiver).max() <= 2
