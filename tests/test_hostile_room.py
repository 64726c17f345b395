"""Issue #28's room attack against a real Janus (``tests/room_attack.py``): what a hostile participant can make
an ``adasr room`` participant do is bounded, and a room someone created without our PIN is refused.

Janus, the victims and the attacker run in a private network namespace (``tests/janus_fixture.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.janus_fixture import JanusServer, janus_server  # noqa: F401
from tests.janus_hostile import HUGE_FEED_ID, face_of
from tests.room_attack import run_attack


@pytest.mark.slow
def test_a_hostile_participant_gets_few_uploads_and_decodes_leaves_nothing_behind_and_cannot_stop_the_watch(
        janus_server: JanusServer, fast_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    figures = run_attack(janus_server, fast_checkpoint, tmp_path)
    seen, victim = figures["attacker"], figures["victim"]
    assert victim["end_reason"] == "signal SIGTERM"
    # G1: 200 requests at once were counted and refused: at most one more upload than the one mallory first got
    published = victim["published"]
    assert published["source_requests"] >= 201 and published["source_requests_refused"] >= 199
    assert seen["uploads_seen"] - seen["uploads_before_the_requests"] <= 1
    # G7: 20 distinct states, one every 0.5 s: decoded at 0, 2, 6, 14 s... (the rest superseded unread); the 60 MiB
    # announcement refused at once
    mallory = face_of(victim, "mallory")
    assert seen["g7_sent"], figures["attacker_stderr"]
    assert 1 <= mallory["source_accepted"] <= 6 and mallory["sources_superseded"] >= 14
    assert mallory["source_errors"] == 1
    # G3: ten participants came, showed a face and left: none is held
    assert seen["churned"] == 10, figures["attacker_stderr"]
    assert victim["faces_in_room"] == 0 and victim["departures_total"] >= 11
    # G2: a feed id past 2^53 joined; the victim's watch (its report, its time limit) went on
    assert seen["huge_feed_id"] == HUGE_FEED_ID and seen["watch_alive_after_huge"]
    assert not face_of(victim, "huge")
    # G5: a room created open before us is refused when we were given a PIN, in one line
    late = figures["late"]
    assert not late["joined_open_room"] and late["exit_status"] == 2
    errors = [line for line in late["stderr"].splitlines() if "error" in line]
    assert len(errors) == 1 and "has no PIN" in errors[0], late["stderr"]
