"""48 kHz mono 16-bit sound in frames: what every voice source delivers, and a file as one.

A source's ``read`` gives the next frame (exactly ``frame_samples`` int16 samples) when its last
sample exists, as a microphone would; None when the sound has ended. ``FileSource`` decodes
anything PyAV reads (WAV, FLAC, MP3, the audio of a video), converts it to 48 kHz mono and releases
it in real time, so a file stands in for a microphone in the demo and the tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from realtime.audio.opus import SAMPLE_RATE
from realtime.errors import CallError

logger = logging.getLogger(__name__)


class PcmSource(Protocol):
    """Frames of 48 kHz mono int16 sound, in capture order."""

    async def read(self) -> np.ndarray | None:
        """The next frame, once captured; None at the end."""
        ...

    def close(self) -> None:
        """Release the file or the device."""
        ...


class Framer:
    """Chunks of any length in, frames of exactly ``frame_samples`` out (devices and decoders deliver their own
    sizes)."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._pending: list[np.ndarray] = []
        self._count = 0

    def push(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Add ``chunk`` (int16 mono); return every frame now complete."""
        self._pending.append(np.asarray(chunk, np.int16).reshape(-1))
        self._count += self._pending[-1].size
        if self._count < self.frame_samples:
            return []
        joined = np.concatenate(self._pending)
        whole = joined.size // self.frame_samples * self.frame_samples
        self._pending = [joined[whole:]]
        self._count = joined.size - whole
        return [joined[start:start + self.frame_samples] for start in range(0, whole, self.frame_samples)]

    def flush(self) -> np.ndarray | None:
        """The last partial frame, padded with silence; None when nothing is pending."""
        if self._count == 0:
            return None
        out = np.zeros(self.frame_samples, np.int16)
        out[:self._count] = np.concatenate(self._pending)
        self._pending, self._count = [], 0
        return out


class FileSource:
    """An audio file as a microphone: decoded, converted to 48 kHz mono, one frame per frame-time."""

    def __init__(self, path: Path, frame_samples: int, realtime: bool = True) -> None:
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise CallError(f"cannot read the audio file {str(path)!r} ({exc})") from None
        stream = next(iter(self._container.streams.audio), None)
        if stream is None:
            self._container.close()
            raise CallError(f"{str(path)!r} has no audio stream")
        self.path = path
        self.realtime = realtime
        self._frames = self._decoded(stream, Framer(frame_samples))
        self._frame_s = frame_samples / SAMPLE_RATE
        self._released = 0
        self._start: float | None = None

    def _decoded(self, stream: av.audio.stream.AudioStream, framer: Framer) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for packet in self._container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        yield from framer.push(out.to_ndarray())
            for out in resampler.resample(None):
                yield from framer.push(out.to_ndarray())
        except av.FFmpegError as exc:  # a damaged file: what decoded is sent, then the voice ends
            logger.warning("the audio file %s stopped decoding (%s): the voice ends there", self.path, exc)
        last = framer.flush()
        if last is not None:
            yield last

    async def read(self) -> np.ndarray | None:
        frame = next(self._frames, None)
        if frame is None:
            return None
        if self.realtime:
            loop = asyncio.get_running_loop()
            if self._start is None:
                self._start = loop.time()
            self._released += 1
            # released when its last sample would have been captured
            await asyncio.sleep(max(0.0, self._start + self._released * self._frame_s - loop.time()))
        return frame

    def close(self) -> None:
        self._container.close()
