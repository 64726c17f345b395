"""Exceptions of the wire protocol.

Every malformed input from a peer raises a ``ProtocolError`` (a ``ValueError``), so a receiver
can drop and count it with one ``except`` clause; the subclasses say why, for logs and counters.
"""

from __future__ import annotations

from adasr.errors import AdaSRError


class ProtocolError(ValueError):
    """A message or payload from the peer is malformed, inconsistent or refused."""


class TruncatedMessage(ProtocolError):
    """The message ends before a field it announces."""


class OversizedMessage(ProtocolError):
    """The message, or a length it claims, is larger than this receiver accepts."""


class VersionMismatch(ProtocolError):
    """The peer speaks another version of the protocol: the call cannot go on."""

    def __init__(self, peer_version: int, our_version: int, what: str = "wire protocol") -> None:
        self.peer_version = peer_version
        """Version number the peer sent."""
        self.our_version = our_version
        """Version number this build speaks."""
        super().__init__(
            f"peer speaks AdaSR {what} version {peer_version}, this build speaks version {our_version}: "
            "both sides of a call must run releases with the same protocol version"
        )


class ChecksumMismatch(ProtocolError):
    """A reassembled source state does not match the SHA-256 announced for it."""


class ModelMismatch(ProtocolError):
    """A source state was produced by another model than the one this receiver runs."""


class CallError(AdaSRError):
    """The call cannot be set up or cannot go on (signaling, connection, the peer hung up on an error)."""
