"""The sender's voice: an aiortc audio track of our own Opus packets, from a file or the microphone.

``OpusTrack.recv`` returns ``av.Packet``s; aiortc's RTP sender then only packetises them (its own
encoder, fixed at 96 kbps stereo, never runs). The track paces itself by its source: a frame is
encoded when its source has captured it, so the packets leave at the rate they are spoken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio.devices import AudioDeviceUnavailable, Device, MicrophoneSource
from realtime.audio.opus import OpusEncoder, OpusOptions
from realtime.audio.pcm import FileSource, PcmSource

logger = logging.getLogger(__name__)


class OpusTrack(MediaStreamTrack):
    """An audio track whose frames are Opus packets encoded here, at ``options.kbps``, mono."""

    kind = "audio"

    def __init__(self, source: PcmSource, options: OpusOptions) -> None:
        super().__init__()
        self.source = source
        self.options = options
        self._encoder = OpusEncoder(options)
        self._pts = 0
        self._ready: list[av.Packet] = []
        self.frames_encoded = 0
        """Frames of ``options.frame_samples`` handed to the encoder."""
        self.payload_bytes = 0
        """Opus bytes handed to aiortc (the RTP payload, before any header)."""

    async def recv(self) -> av.Packet:
        """The next Opus packet, once its sound has been captured; MediaStreamError when the source has ended."""
        while not self._ready:
            if self.readyState != "live":
                raise MediaStreamError
            samples = await self.source.read()
            if samples is None:
                self.stop()
                raise MediaStreamError
            self._ready = self._encoder.encode(samples, self._pts)
            self._pts += samples.size
            self.frames_encoded += 1
        packet = self._ready.pop(0)
        self.payload_bytes += packet.size
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self.source.close()
        super().stop()


@dataclass(frozen=True)
class VoiceOptions:
    """Where the sender's voice comes from (``--audio FILE``, ``--mic [DEVICE]``, ``--no-audio``) and how it is
    coded."""

    file: Path | None = None
    """A sound file sent instead of the microphone (anything PyAV reads), released in real time."""
    microphone: bool = True
    """Capture the microphone when no file is given."""
    device: Device = None
    """Microphone name or index (``python -m sounddevice`` lists them); None: the system's default."""
    opus: OpusOptions = field(default_factory=OpusOptions)
    """Bitrate (``--audio-kbps``) and frame length."""


def open_voice(options: VoiceOptions) -> OpusTrack | None:
    """The voice track the options ask for; None for no voice.

    A file that cannot be read is the user's mistake: CallError. A missing microphone is this machine's
    lot: one warning line saying why, and the call goes on without voice. Call on the event loop.
    """
    if options.file is not None:
        return OpusTrack(FileSource(options.file, options.opus.frame_samples), options.opus)
    if not options.microphone:
        return None
    try:
        source = MicrophoneSource(options.opus.frame_samples, options.device)
    except AudioDeviceUnavailable as exc:
        logger.warning("%s: the call goes on without voice", exc)
        return None
    return OpusTrack(source, options.opus)
