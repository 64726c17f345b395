"""libopus's decoder itself, for what FFmpeg's wrapper cannot do: conceal a lost packet and recover it from FEC.

PyAV (and aiortc's decoder, built on it) reaches libopus through FFmpeg, which treats an empty
packet as the end of the stream: no packet-loss concealment (PLC), and no way to ask for the
in-band forward error correction (FEC, the previous packet's low-bitrate copy inside the next one).
libopus's C API does both with ``opus_decode``: a NULL packet conceals, ``decode_fec=1`` recovers.
The library is the one PyAV already ships (``av.libs`` on Linux, ``av/.dylibs`` on macOS), else
the system's; ctypes reaches its four functions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os

import numpy as np

from realtime.errors import CallError

_OPUS_OK = 0


@functools.lru_cache(maxsize=1)
def libopus() -> ctypes.CDLL:
    """The libopus PyAV ships (else the system's), with the decoder functions' signatures set."""
    import av

    package = os.path.dirname(av.__file__)
    bundled = sorted(glob.glob(os.path.join(package, "..", "av.libs", "*opus*"))
                     + glob.glob(os.path.join(package, ".dylibs", "*opus*")))
    candidates = bundled + [name for name in (ctypes.util.find_library("opus"),) if name]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                    ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        if hasattr(lib, "opus_packet_has_lbrr"):  # libopus ≥ 1.5
            lib.opus_packet_has_lbrr.restype = ctypes.c_int
            lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
        return lib
    raise CallError("libopus not found (neither PyAV's bundled copy nor a system one): reinstall PyAV, or install "
                    "libopus (apt-get install libopus0)")


class OpusDecoder:
    """One mono Opus stream at 48 kHz: decode a packet, conceal a lost one, or recover it from the next one's FEC."""

    def __init__(self, sample_rate: int = 48_000) -> None:
        self._lib = libopus()
        error = ctypes.c_int(0)
        self._state = self._lib.opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        if error.value != _OPUS_OK or not self._state:
            raise CallError(f"libopus could not create a decoder (error {error.value})")

    def _decode(self, payload: bytes | None, samples: int, fec: bool) -> np.ndarray:
        out = np.zeros(samples, np.int16)
        pointer = out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        got = self._lib.opus_decode(self._state, payload, len(payload) if payload else 0, pointer, samples, int(fec))
        if got < 0:  # a corrupt packet: silence rather than a crash (the peer's bytes are hostile)
            return np.zeros(samples, np.int16)
        return out[:got]

    def decode(self, payload: bytes, max_samples: int) -> np.ndarray:
        """A received packet → its int16 samples (at most ``max_samples``: 120 ms, Opus's longest packet)."""
        return self._decode(payload, max_samples, fec=False)

    def conceal(self, samples: int) -> np.ndarray:
        """Packet-loss concealment: ``samples`` (a multiple of 2.5 ms) extrapolated from what was decoded before."""
        return self._decode(None, samples, fec=False)

    def has_fec(self, payload: bytes) -> bool:
        """Whether ``payload`` carries an FEC copy of the packet before it (True where libopus < 1.5 cannot tell)."""
        check = getattr(self._lib, "opus_packet_has_lbrr", None)
        return True if check is None else check(payload, len(payload)) > 0

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray:
        """A lost packet's ``samples`` from the FEC data inside the packet after it (concealment where it has
        none)."""
        return self._decode(next_payload, samples, fec=True)

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
