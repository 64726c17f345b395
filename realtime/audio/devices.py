"""The sound card: the microphone and the speaker through PortAudio (``sounddevice``).

PyAV's Linux wheels can open an ALSA device but bundle no ALSA plugins (no PulseAudio or
PipeWire), so ``sounddevice`` is the portable path on Linux, macOS and Windows. It is an optional
extra (``pip install 'adasr[audio]'``) and needs the PortAudio library (Debian/Ubuntu: ``apt install
libportaudio2``). Whatever is missing, the package, the library or a device, opening fails with
``AudioDeviceUnavailable``: one line that says what and how to fix it, and the call goes on without
that side of the sound.

PortAudio calls the microphone's callback on its own thread; the frames cross to the event loop
through ``call_soon_threadsafe`` into a bounded queue (a stalled consumer drops the oldest frames,
counted, rather than growing without end). Speaker writes block until the device has room, so the
playout runs them off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from types import ModuleType
from typing import Any

import numpy as np

from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.pcm import Framer
from realtime.errors import CallError

logger = logging.getLogger(__name__)

#: A device name or index as ``sounddevice`` takes it; None: the system's default.
Device = str | int | None


class AudioDeviceUnavailable(CallError):
    """No usable microphone or speaker here; the message is one line: what is missing and how to get it."""


def sounddevice_module() -> ModuleType:
    """``sounddevice``, imported; AudioDeviceUnavailable when the package or the PortAudio library is missing."""
    try:
        import sounddevice
    except ImportError:
        raise AudioDeviceUnavailable("sound devices need the `audio` extra: pip install 'adasr[audio]'") from None
    except OSError as exc:  # sounddevice raises OSError when it cannot load the PortAudio library
        raise AudioDeviceUnavailable(f"{exc} (Debian/Ubuntu: apt install libportaudio2)") from None
    return sounddevice


def _device_error(kind: str, device: Device, exc: Exception) -> AudioDeviceUnavailable:
    named = f" {device!r}" if device is not None else ""
    listing = "list them with: python -m sounddevice"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return AudioDeviceUnavailable(f"no {kind}{named} ({text}; {listing})")


class MicrophoneSource:
    """The microphone, 48 kHz mono int16, in frames of ``frame_samples`` (a ``PcmSource``)."""

    def __init__(self, frame_samples: int, device: Device = None, queue_frames: int = 25,
                 stall_timeout_s: float = 2.0) -> None:
        sd = sounddevice_module()
        self._loop = asyncio.get_running_loop()
        self._framer = Framer(frame_samples)
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=queue_frames)
        self.stall_timeout_s = stall_timeout_s
        self.overruns = 0
        """Frames dropped because the consumer fell behind (or PortAudio reported an input overflow)."""
        try:
            sd.query_devices(device, kind="input")
            self._stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=frame_samples,
                                          device=device, callback=self._on_block)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise _device_error("microphone", device, exc) from None

    def _on_block(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: hand a copy of the block to the loop."""
        if status:
            self._loop.call_soon_threadsafe(self._count_overrun)
        self._loop.call_soon_threadsafe(self._push, indata[:, 0].copy())

    def _count_overrun(self) -> None:
        self.overruns += 1

    def _push(self, block: np.ndarray) -> None:
        for frame in self._framer.push(block):
            if self._queue.full():
                self._queue.get_nowait()
                self.overruns += 1
            self._queue.put_nowait(frame)

    async def read(self) -> np.ndarray | None:
        """The next frame; None when the device stopped delivering (unplugged) for ``stall_timeout_s``."""
        try:
            return await asyncio.wait_for(self._queue.get(), self.stall_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("the microphone delivered nothing for %.0f s: the voice ends", self.stall_timeout_s)
            return None

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class SpeakerSink:
    """The speaker, 48 kHz mono int16; ``write`` blocks until the device has room (an ``AudioSink``)."""

    def __init__(self, device: Device = None) -> None:
        sd = sounddevice_module()
        try:
            sd.query_devices(device, kind="output")
            self._stream = sd.RawOutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=device)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise _device_error("speaker", device, exc) from None
        self.latency_s = float(self._stream.latency)
        """From a write's return to the sound leaving the device (PortAudio's output latency)."""

    def write(self, samples: np.ndarray) -> None:
        self._stream.write(np.ascontiguousarray(samples, np.int16).tobytes())

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
