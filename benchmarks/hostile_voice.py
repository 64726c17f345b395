"""What a caller who steps its voice's RTP timestamps gets (issue #28 G6): silence written per packet received.

    python benchmarks/hostile_voice.py [--packets 50]

``AudioPlayout`` is fed, as fast as it takes them, 20 ms packets whose timestamps each jump about a
second (just under the 1 s a gap may be before it counts as a resync), into a WAV file; the script
prints how much sound was written and in how long. Run it with ``PYTHONPATH`` set to another checkout
to measure that one.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from realtime.audio.opus import SAMPLE_RATE
from realtime.audio.playout import AudioPlayout, WavSink

#: Samples of one packet (20 ms) and the timestamp step between two packets.
PACKET = 960
STEP = SAMPLE_RATE - 100


class SteppedTrack:
    """A remote track stand-in: ``count`` packets, each timestamped ~1 s after the previous, then the end."""

    kind = "audio"

    def __init__(self, count: int) -> None:
        self.sent = 0
        self.count = count

    async def recv(self) -> av.AudioFrame:
        if self.sent == self.count:
            raise MediaStreamError
        frame = av.AudioFrame.from_ndarray(np.full((1, 2 * PACKET), 100, np.int16), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self.sent * STEP, Fraction(1, SAMPLE_RATE)
        self.sent += 1
        return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=50)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp()) / "voice.wav"
    start = time.monotonic()
    stats = asyncio.run(AudioPlayout(SteppedTrack(args.packets), WavSink(out)).run())  # type: ignore[arg-type]
    elapsed = time.monotonic() - start
    print(f"{args.packets} packets of {PACKET / SAMPLE_RATE * 1e3:.0f} ms, timestamps +{STEP / SAMPLE_RATE:.3f} s "
          f"each, played in {elapsed:.3f} s: {stats.samples / SAMPLE_RATE:.2f} s written "
          f"({stats.gap_samples / SAMPLE_RATE:.2f} s of it silence), {out.stat().st_size} B file, "
          f"{stats.resyncs} gaps cut")


if __name__ == "__main__":
    main()
