"""The wire format's golden vectors (web/golden/wire-v2.json): Python's encoders and decoder against them, and the
page's JavaScript against the same file (node's test runner), so the two implementations cannot drift apart."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.messages import CallStats, GoodbyeReason, encode_clock, encode_goodbye, encode_reset_reference, \
    encode_stats
from realtime.motion_codec import MotionFlags, encode_motion
from realtime.protocol import (ClockMessage, Goodbye, MotionPacket, SourceAssembler, SourceBegin, SourceChunk,
                               StatsMessage, decode)
from realtime.source_messages import SourceKind, split_source
from realtime.source_payload import pack_source_state, unpack_source_state

WEB = Path(__file__).resolve().parent.parent / "web"
GOLDEN: dict[str, Any] = json.loads((WEB / "golden" / "wire-v2.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", GOLDEN["motion"], ids=lambda c: c["name"])
def test_motion_bytes_match_the_golden_vector(case: dict[str, Any]) -> None:
    vector = np.array(case["vector"], dtype=np.float32)
    ratios = None if case["face_ratios"] is None else np.array(case["face_ratios"], np.float32)
    data = encode_motion(case["seq"], int(case["timestamp_us"]), vector, MotionFlags(case["flags"]), face_ratios=ratios)
    assert data.hex() == case["hex"]
    packet = decode(bytes.fromhex(case["hex"]))
    assert isinstance(packet, MotionPacket)
    assert packet.seq == case["seq"] and packet.timestamp_us == int(case["timestamp_us"])
    assert packet.face_lost == bool(case["flags"] & MotionFlags.FACE_LOST)
    assert bool(packet.flags & MotionFlags.CLAMPED) == (case["name"] == "clamped")
    assert (packet.face_ratios is None) == (ratios is None)


def test_control_messages_match_the_golden_vectors() -> None:
    s, g, c, r = GOLDEN["stats"], GOLDEN["goodbye"], GOLDEN["clock"], GOLDEN["reset_reference"]
    assert encode_stats(s["seq"], int(s["timestamp_us"]), CallStats(**s["counters"])).hex() == s["hex"]
    stats = decode(bytes.fromhex(s["hex"]))
    assert isinstance(stats, StatsMessage) and stats.stats.packets_received == 2**32 - 1  # saturated
    assert encode_goodbye(g["seq"], int(g["timestamp_us"]), GoodbyeReason(g["reason"]), g["text"]).hex() == g["hex"]
    goodbye = decode(bytes.fromhex(g["hex"]))
    assert isinstance(goodbye, Goodbye) and goodbye.text == g["text"]
    assert encode_clock(c["seq"], int(c["timestamp_us"]), int(c["wall_us"])).hex() == c["hex"]
    clock = decode(bytes.fromhex(c["hex"]))
    assert isinstance(clock, ClockMessage) and clock.wall_us == int(c["wall_us"])
    assert encode_reset_reference(r["seq"], int(r["timestamp_us"]), r["from_motion_seq"]).hex() == r["hex"]


def test_source_image_transfer_matches_the_golden_vectors() -> None:
    s = GOLDEN["source_image"]
    image = np.frombuffer(bytes.fromhex(s["rgb_hex"]), np.uint8).reshape(s["height"], s["width"], 3)
    rig = {"anchors": np.array(s["anchors"], np.float32).reshape(1, -1, 2),
           "face_ratios": np.array(s["face_ratios"], np.float32)}
    payload = pack_source_state({"image": image, **rig}, compression="none")
    assert payload.hex() == s["payload_hex"]
    model_id = bytes.fromhex(s["model_id_hex"])
    messages = split_source(payload, model_id, SourceKind(s["kind"]), s["max_message"], first_seq=s["first_seq"],
                            timestamp_us=int(s["timestamp_us"]))
    assert [m.hex() for m in messages] == s["messages_hex"]
    assembler = SourceAssembler(model_id, expected_kind=SourceKind.SOURCE_IMAGE)
    decoded = [decode(bytes.fromhex(m), max_message=s["max_message"]) for m in s["messages_hex"]]
    results = [assembler.feed(m) for m in decoded if isinstance(m, (SourceBegin, SourceChunk))]
    assert len(results) == len(decoded) and results[-1] == payload


@pytest.mark.parametrize("state", GOLDEN["source_states"], ids=lambda s: s["quantization"])
def test_source_state_payloads_decode_to_the_golden_values(state: dict[str, Any]) -> None:
    """What web/test/source_state.test.js expects the page to decode is what Python decodes."""
    arrays = unpack_source_state(bytes.fromhex(state["payload_hex"]))
    assert sorted(arrays) == sorted(state["arrays"])
    for name, expected in state["arrays"].items():
        assert list(arrays[name].shape) == expected["shape"]
        np.testing.assert_array_equal(arrays[name].reshape(-1), np.array(expected["values"], np.float32))


def test_expression_features_match_the_golden_vectors() -> None:
    """web/golden/expression-v1.json, which web/test/expression.test.js checks the page's features against, still
    holds what adasr.expression_signal computes (rewrite it with scripts/make_expression_golden.py if not)."""
    from adasr.expression_signal import expression_features

    golden = json.loads((WEB / "golden" / "expression-v1.json").read_text(encoding="utf-8"))
    for case in golden["cases"]:
        features = expression_features(np.array(case["landmarks"], np.float64))
        np.testing.assert_allclose(features, case["features"], atol=1e-6, err_msg=case["name"])


def test_rig_inputs_match_the_golden_vectors() -> None:
    """web/golden/rig-v1.json, which web/test/rig.test.js checks the page's face ratios, anchors and target ratios
    against, still holds what adasr computes (rewrite it with scripts/make_rig_golden.py if not)."""
    from scripts.make_rig_golden import cases

    golden = json.loads((WEB / "golden" / "rig-v1.json").read_text(encoding="utf-8"))
    assert golden == json.loads(json.dumps(cases()))


def test_the_page_wire_format_passes_its_node_tests() -> None:
    """web/test/*.test.js check the JavaScript encoders and the page's expression features against the golden
    files, and the page's render-rate rule."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs): the page's JavaScript tests cannot run")
    result = subprocess.run([node, "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
