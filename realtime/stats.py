"""What a call costs and how fast it is: the wire-overhead model, latency summaries and the cores that bound it.

Bytes per frame is a headline figure, and the data channel's own framing is most of it for a
48-byte MOTION message, so the model of that framing is spelled out layer by layer here (and
checked in the demo against the bytes the DTLS transport really sent).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it): what CPU time per frame is
    divided into to bound a frame rate."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call (macOS, Windows)
        return os.cpu_count() or 1


#: The cipher aiortc 1.16 negotiates between two aiortc peers: the first of its DTLS cipher list
#: ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:..."), over DTLS 1.2.
AIORTC_DEFAULT_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"


@dataclass(frozen=True)
class WireOverhead:
    """Bytes a data-channel message costs beyond its own, per layer, when it travels alone in a packet.

    SCTP pads each chunk's data to 4 bytes. The DTLS record protection depends on the cipher
    suite: AES-GCM adds an 8-byte explicit nonce and a 16-byte tag; ChaCha20-Poly1305 only the tag;
    the CBC suites an IV, a MAC and padding (``record_protection``). IPv6 would add 20 more.
    """

    sctp_common_header: int = 12
    """SCTP common header: ports, verification tag, CRC32c (RFC 9260 §3.1)."""
    sctp_data_chunk_header: int = 16
    """DATA chunk header: type, flags, length, TSN, stream id, stream sequence, PPID (RFC 9260 §3.3.1)."""
    dtls_record_header: int = 13
    """DTLS 1.2 record header: type, version, epoch, sequence number, length (RFC 6347 §4.1)."""
    cipher: str = AIORTC_DEFAULT_CIPHER
    """OpenSSL name of the DTLS cipher suite (``dtls_cipher`` reads the negotiated one)."""
    udp_header: int = 8
    """UDP header."""
    ip_header: int = 20
    """IPv4 header without options."""

    def record_protection(self, plaintext: int) -> int:
        """Bytes the DTLS cipher adds to a record of ``plaintext`` bytes."""
        name = self.cipher.upper()
        if "GCM" in name:
            return 8 + 16  # explicit nonce + tag (RFC 5288)
        if "CHACHA20" in name:
            return 16  # tag only, the nonce is implicit (RFC 7905)
        mac = 32 if "SHA256" in name else 48 if "SHA384" in name else 20
        padded = (plaintext + mac + 1 + 15) // 16 * 16  # CBC: MAC, then pad to the block with ≥ 1 byte
        return 16 + padded - plaintext  # explicit IV + MAC + padding

    def sctp_bytes(self, payload: int) -> int:
        """SCTP packet size for one DATA chunk of ``payload`` bytes."""
        return self.sctp_common_header + self.sctp_data_chunk_header + (payload + 3) // 4 * 4

    def per_message(self, payload: int) -> int:
        """Bytes on the wire (IP packet) for one data-channel message of ``payload`` bytes."""
        sctp = self.sctp_bytes(payload)
        return sctp + self.dtls_record_header + self.record_protection(sctp) + self.udp_header + self.ip_header

    def overhead(self, payload: int) -> int:
        """Wire bytes minus payload bytes for one message."""
        return self.per_message(payload) - payload


def kbps(bytes_per_frame: float, fps: float) -> float:
    """Bit rate in kbit/s (1000 bits) of ``bytes_per_frame`` at ``fps``."""
    return bytes_per_frame * 8.0 * fps / 1000.0


#: Per-frame timing samples a call's statistics keep (``append_bounded``): ten minutes at 30 fps.
SAMPLES_KEPT = 18_000


def append_bounded(values: list[float], value: float, keep: int) -> None:
    """Append ``value``, keeping about the last ``keep`` values (trimmed in batches, so appends stay O(1)).

    Per-frame samples of a call that lasts hours must not grow without bound; summaries then
    describe the most recent ``keep`` to ``2 × keep`` frames.
    """
    values.append(value)
    if len(values) >= 2 * keep:
        del values[:-keep]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100, linear interpolation), None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(values: Sequence[float], name: str) -> dict[str, float | None]:
    """{name_p50, name_p90, name_p99, name_mean} in the values' unit, None when empty."""
    mean = float(np.mean(values)) if len(values) else None
    return {f"{name}_p50": percentile(values, 50), f"{name}_p90": percentile(values, 90),
            f"{name}_p99": percentile(values, 99), f"{name}_mean": mean}
