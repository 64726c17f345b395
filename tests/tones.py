"""Sine tones written as 16-bit WAV files, the voices of the call and room tests and benchmarks, and found again in
what was heard."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_tone(path: Path, hz: float, seconds: float, rate: int = 8000, channels: int = 1,
               amplitude: float = 8000.0) -> Path:
    """``seconds`` of a ``hz`` sine at peak ``amplitude`` (int16 units), the same on every channel."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
    return path


def tone_amplitude(wav: Path, hz: float, window_s: float = 0.1, width_hz: float = 20.0) -> np.ndarray:
    """Per ``window_s`` window of a mono 16-bit WAV: the amplitude (int16 units) of its component within
    ``width_hz`` of ``hz`` (a sine of amplitude a gives ~a)."""
    with wave.open(str(wav)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), "<i2").astype(np.float64)
    size = int(window_s * rate)
    windows = samples[: samples.size // size * size].reshape(-1, size) * np.hanning(size)
    spectrum = np.abs(np.fft.rfft(windows, axis=1)) * 4.0 / size  # the Hann window's coherent gain is 1/2
    bins = np.fft.rfftfreq(size, 1.0 / rate)
    return spectrum[:, np.abs(bins - hz) <= width_hz].max(axis=1)
