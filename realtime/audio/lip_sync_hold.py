"""The voice waits for the faces: its delay grows until each face, rendered, can be shown with its voice.

Lip sync (``realtime.lip_sync``) holds a face until its voice plays; it cannot show a face before it
is rendered. When the adaptive jitter buffer plays the voice sooner than the face pipeline (the
sender's tracking and extraction, the receiver's render) delivers its face, every face would show
late. The receiver records, per face, the slack its voice leaves it (``ReceiverStats.sync_slack_ms``:
negative when late); ``LipSyncHold`` moves the voice's extra delay so that the median slack stays a
little above zero: longer while faces are late, shorter again when they wait, never past a bound.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from realtime.audio.adaptive_voice import AdaptiveVoice


@dataclass(frozen=True)
class HoldOptions:
    """How the voice's delay follows the faces."""

    margin_ms: float = 10.0
    """Slack aimed at: a face is ready this much before its voice (a render slower than usual still keeps up)."""
    max_hold_ms: float = 120.0
    """Longest extra delay given to the voice for its faces: a conversation needs the voice soon (ITU-T G.114: the
    whole mouth-to-ear path within 150 ms) more than a face exactly on it."""
    period_s: float = 1.0
    """How often the delay is adjusted (the playout clock settles within it)."""
    min_faces: int = 5
    """Faces needed since the last adjustment to adjust again."""
    gain: float = 0.5
    """Share of the measured error corrected per adjustment (the playout clock lags a change: all of it at once
    oscillates)."""


async def hold_for_faces(voice: AdaptiveVoice, slack_ms: list[float], until: asyncio.Event,
                         options: HoldOptions = HoldOptions()) -> None:
    """Adjust ``voice.lip_sync_delay_s`` from the slack recorded in ``slack_ms`` until ``until`` is set."""
    seen = len(slack_ms)
    while not until.is_set():
        try:
            await asyncio.wait_for(until.wait(), options.period_s)
            return
        except asyncio.TimeoutError:
            pass
        recent = slack_ms[seen:] if len(slack_ms) >= seen else slack_ms[-options.min_faces:]
        if len(recent) < options.min_faces:
            continue
        seen = len(slack_ms)
        change_s = options.gain * (options.margin_ms - float(np.median(recent))) / 1e3
        voice.lip_sync_delay_s = min(max(voice.lip_sync_delay_s + change_s, 0.0), options.max_hold_ms / 1e3)
