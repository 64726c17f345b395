"""A group call through a real Janus: three participants, data channels and voices, one leaves mid-call.

Janus and the participants run in a private network namespace (``tests/janus_fixture.py``); each
participant is a process of its own (``tests/janus_peer.py``) that reports what it got as JSON.
"""

from __future__ import annotations

import pytest

from tests.janus_fixture import JanusServer
from tests.janus_peer import AUDIO_FRAMES

#: Counted messages each participant sends per phase.
MESSAGES = 60
#: Each participant's voice, a tone told apart by its pitch.
TONES_HZ = {"A": 400.0, "B": 600.0, "C": 800.0}
#: A hung participant fails the test after this; a healthy run takes a fraction of it.
PEER_TIMEOUT_S = 240.0


@pytest.mark.slow
def test_three_participants_hear_each_other_and_one_leaving_is_dropped(janus_server: JanusServer) -> None:
    common = ["--url", janus_server.url, "--api-secret", janus_server.api_secret, "--room", "4321",
              "--pin", "room-pin", "--room-secret", "room-secret", "--members", "A,B,C", "--leaver", "C",
              "--messages", str(MESSAGES)]
    peers = {name: janus_server.spawn_python(
        "tests.janus_peer", [*common, "--name", name, "--tone-hz", str(hz)]
        + (["--leave-after-phase", "1"] if name == "C" else []), name) for name, hz in TONES_HZ.items()}
    reports = {name: peer.wait_json(PEER_TIMEOUT_S) for name, peer in peers.items()}

    for name, report in reports.items():
        others = [other for other in TONES_HZ if other != name]
        assert sorted(report["joined"]) == others and report["subscriptions_failed"] == 0
        for other in others:
            # every counted message once, in order (Janus's legs to subscribers are reliable and ordered)
            assert report["counted"][other][0] == list(range(MESSAGES))
            # the other's voice, recognisably its own (a 20 ms frame resolves 50 Hz)
            assert report["audio_frames"][other] >= AUDIO_FRAMES
            assert report["pitch_hz"][other] == pytest.approx(TONES_HZ[other], abs=50)
    for name in ("A", "B"):  # C left after phase 1: reported gone, and the two others went on
        report, other = reports[name], "B" if name == "A" else "A"
        assert list(report["left"])[0] == "C"  # B or A may be seen leaving too, after phase 2
        assert report["counted"][other][1] == list(range(MESSAGES))
        assert report["counted"]["C"][1] == []
    assert reports["C"]["left"] == {}
    # every byte sent was received by each subscriber (statuses included), and nothing else
    for name, report in reports.items():
        assert report["bytes_sent"] >= 48 * MESSAGES * (1 if name == "C" else 2)

    refusals = janus_server.spawn_python(
        "tests.janus_peer", ["refusals", "--url", janus_server.url, "--api-secret", janus_server.api_secret,
                             "--room", "4321"], "refusals").wait_json(60)
    assert refusals["api_secret"]["code"] == 403  # JANUS_ERROR_UNAUTHORIZED
    assert refusals["pin"]["code"] == 433  # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED
    assert refusals["missing_room"]["code"] == 426  # JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM
