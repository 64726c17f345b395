"""The call's names and defaults that the command line shows, importable without aiortc, OpenCV or torch.

``adasr --help`` lists them before any module that uses them is loaded.
"""

from __future__ import annotations

from typing import Literal

SinkKind = Literal["virtualcam", "vcam", "window", "file", "none"]
#: Sink names the command line offers (``vcam`` is kept as a short alias of ``virtualcam``).
SINK_CHOICES = ("virtualcam", "vcam", "window", "file", "none")

#: Default port of ``adasr receive``'s offer endpoint.
DEFAULT_PORT = 8765
#: Environment variable ``adasr send`` and ``adasr receive`` read the token from when --token is not given
#: (keeps it out of the process list).
TOKEN_ENV_VAR = "ADASR_TOKEN"

#: Opus bitrate of the voice, kbps (``--audio-kbps``). 10 (12 before protocol 2; 16 before that): a two-way call,
#: where each side also acknowledges the other's face, stays under 64 kbps each way with protocol 2's face ratios
#: (6 bytes a frame more than protocol 1: the two-way test's call measured 64.3 kbps at 11). Speech at 12 kept a
#: 0.94 waveform correlation (16: 0.944); SILK's wideband mode still codes speech at 10.
DEFAULT_AUDIO_KBPS = 10.0
#: Audio per packet, ms (``--audio-frame-ms``). 40 ms: a whole call (voice, face at 30 fps) within 64 kbps on the
#: wire, an ISDN channel; 20 ms costs ~14 kbps more in packet headers (50 packets/s instead of 25) but ~80 ms less
#: delay through aiortc's 4-packet jitter buffer (benchmarks/RESULTS.md).
DEFAULT_AUDIO_FRAME_MS = 40
#: Packet times Opus can use that suit a call.
AUDIO_FRAME_MS_CHOICES = (10, 20, 40, 60)
#: Environment variables read when ``--turn-user`` / ``--turn-password`` are not given (keeps them out of `ps`).
TURN_USER_ENV = "ADASR_TURN_USER"
TURN_PASSWORD_ENV = "ADASR_TURN_PASSWORD"
