"""Opus, mono, at a chosen bitrate: libopus through PyAV, stamped on the 48 kHz RTP clock.

The packets carry PyAV's own timestamps: a packet's ``pts`` is that of its first input sample minus
the encoder's lookahead (``OPUS_LOOKAHEAD_SAMPLES``), which is exactly where its decoded samples
belong (the decoder's first output samples are the lookahead's priming). aiortc's ``pack`` turns
``pts`` into the RTP timestamp, so the receiver's decoded ``frame.pts`` names the sender's sample
it plays, the fact lip sync rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from realtime.settings import AUDIO_FRAME_MS_CHOICES, DEFAULT_AUDIO_FRAME_MS, DEFAULT_AUDIO_KBPS

#: Opus runs at 48 kHz in WebRTC (RFC 7587: the RTP clock is 48 kHz whatever the audio bandwidth).
SAMPLE_RATE = 48_000
TIME_BASE = Fraction(1, SAMPLE_RATE)
#: libopus's lookahead at 48 kHz (PyAV 18, libopus 1.x): its first packet's pts is −312.
OPUS_LOOKAHEAD_SAMPLES = 312
#: Frame lengths Opus encodes in one packet (ms) that suit a call (2.5 and 5 ms cost too many packets).
FRAME_MS_CHOICES = AUDIO_FRAME_MS_CHOICES


@dataclass(frozen=True)
class OpusOptions:
    """How the voice is encoded."""

    kbps: float = DEFAULT_AUDIO_KBPS
    """Target bitrate of the Opus payload (libopus VBR: the average stays near it), 6–128."""
    frame_ms: int = DEFAULT_AUDIO_FRAME_MS
    """Audio per packet. Longer frames cost fewer packet headers but add delay (aiortc's jitter buffer holds
    4 packets: ≈85 ms at 20 ms, ≈165 ms at 40 ms); 40 ms keeps a whole call under 64 kbps (``realtime.settings``)."""

    fec_loss_percent: int = 25
    """Packet loss the in-band FEC is sized for (each packet then carries a low-bitrate copy of the one before,
    within the same bitrate; the receiver recovers a lost packet from the next one); 0: no FEC. libopus adds the
    copy only where the bitrate leaves room for it: from 16 kbps at 25 % (measured, libopus 1.6), not at 12."""

    def __post_init__(self) -> None:
        if not 0 <= self.fec_loss_percent <= 100:
            raise ValueError(f"the FEC's expected loss must be a percentage, got {self.fec_loss_percent}")
        if not 6.0 <= self.kbps <= 128.0:
            raise ValueError(f"the Opus bitrate must be within 6–128 kbps, got {self.kbps:g}")
        if self.frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"the Opus frame length must be one of {FRAME_MS_CHOICES} ms, got {self.frame_ms}")

    @property
    def frame_samples(self) -> int:
        """Samples per packet at 48 kHz."""
        return SAMPLE_RATE * self.frame_ms // 1000


class OpusEncoder:
    """Mono 16-bit frames in, Opus packets out (``application=voip``: speech, low delay)."""

    def __init__(self, options: OpusOptions) -> None:
        self.options = options
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = int(options.kbps * 1000)
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.time_base = TIME_BASE
        codec.options = {"application": "voip", "frame_duration": str(options.frame_ms),
                         "fec": "1" if options.fec_loss_percent else "0", "packet_loss": str(options.fec_loss_percent)}
        self._codec = codec

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        """One frame (``options.frame_samples`` int16 samples, the first at ``pts``) → its packets."""
        if samples.dtype != np.int16 or samples.shape != (self.options.frame_samples,):
            raise ValueError(f"expected {self.options.frame_samples} int16 samples, "
                             f"got {samples.dtype} {samples.shape}")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = TIME_BASE
        return list(self._codec.encode(frame))
