"""Sine tones written as 16-bit WAV files: the voices of the call and room tests and benchmarks."""

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
