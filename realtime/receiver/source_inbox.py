"""Source transfers in, checked SourceStates out: chunk assembly, refusals, and the decode they wait for.

A bad source state is refused with a logged reason and the call goes on: the sender can send
another, until ``deadline_s`` after the call opened (a peer that never delivers a usable state must
not hold the receiver's one call slot). Complete transfers wait here for their decode, one at a
time: a newer complete transfer replaces one still waiting (``sources_superseded``), so a flood of
them cannot pile up work. One refusal per transfer: a refused BEGIN's chunks are dropped quietly;
a bad chunk alone does not end its transfer.

No asyncio and no threads here: ``decode`` blocks (decompression, maybe the source encoder, a test
render) and the receiver runs it on its decode thread; the rest is called on the loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adasr.inference import SourceState
from engines.talking_head import TalkingHead
from realtime.errors import ChecksumMismatch, ModelMismatch, OversizedMessage, ProtocolError
from realtime.source_messages import SourceAssembler, SourceBegin, SourceChunk, SourceKind
from realtime.source_state_codec import decode_state, wire_model_id

logger = logging.getLogger(__name__)

#: Source refusals logged as errors before the rest go to debug (``SourceCounters.source_errors`` counts them all).
LOUD_REFUSALS = 3


@dataclass
class SourceCounters:
    """What became of the source transfers."""

    sources_accepted: int = 0
    """Source states installed."""
    sources_superseded: int = 0
    """Complete transfers never decoded because a newer one arrived while another was being decoded."""
    source_errors: int = 0
    """Source transfers refused (other model, checksum, undecodable, unusable)."""
    last_source_error: str = ""
    """Why the last source transfer was refused."""
    source_chunks_ignored: int = 0
    """Chunks dropped: of a refused transfer, or inconsistent ones (the transfer goes on)."""
    source_state_bytes: int = 0
    """Payload bytes of the installed source state."""
    source_kind: str = ""
    """FEATURE_VOLUME or SOURCE_IMAGE."""
    source_decode_s: float = 0.0
    """Time to decode and check the installed state (encoder included for an image)."""


@dataclass(frozen=True)
class CompleteTransfer:
    """A payload that arrived whole and passed its checksum, waiting for its decode."""

    payload: bytes
    kind: SourceKind


class SourceInbox:
    """SOURCE_BEGIN / SOURCE_CHUNK in (``feed``), the newest complete payload out (``take``), decoded by ``decode``."""

    def __init__(self, head: TalkingHead, *, max_total: int, deadline_s: float, opened_us: int,
                 stats: SourceCounters | None = None) -> None:
        self.head = head
        self.deadline_s = deadline_s
        """No usable state this long after ``opened_us`` is overdue (0: never)."""
        self.opened_us = opened_us
        """When the call opened (µs, monotonic)."""
        self.stats = stats if stats is not None else SourceCounters()
        self._assembler = SourceAssembler(wire_model_id(head), max_total=max_total)
        self._refused_transfer: int | None = None
        self._waiting: CompleteTransfer | None = None

    def feed(self, message: SourceBegin | SourceChunk) -> bool:
        """One message of a transfer; True when it completed one (``take`` has a payload for the decode)."""
        if isinstance(message, SourceChunk) and message.transfer_id == self._refused_transfer:
            self.stats.source_chunks_ignored += 1
            return False
        try:
            payload = self._assembler.feed(message)
        except (ModelMismatch, ChecksumMismatch, OversizedMessage) as exc:
            self._refused_transfer = message.transfer_id
            self.refuse(str(exc))
            return False
        except ProtocolError as exc:
            if isinstance(message, SourceBegin):
                self._refused_transfer = message.transfer_id
                self.refuse(str(exc))
            else:
                self.stats.source_chunks_ignored += 1
                log = logger.warning if self.stats.source_chunks_ignored == 1 else logger.debug
                log("dropped a source chunk: %s", exc)
            return False
        if isinstance(message, SourceBegin):
            self._refused_transfer = None
            logger.info("receiving a source state: %s, %d bytes in %d chunks", message.kind.name,
                        message.total_length, message.chunk_count)
        if payload is None:
            return False
        begin = self._assembler.completed
        assert begin is not None
        if self._waiting is not None:
            self.stats.sources_superseded += 1
        self._waiting = CompleteTransfer(payload, begin.kind)
        return True

    @property
    def receiving(self) -> bool:
        """Whether a transfer is announced and not complete (its chunks are held)."""
        return self._assembler.in_progress

    @property
    def waiting(self) -> bool:
        """Whether a complete transfer waits for its decode."""
        return self._waiting is not None

    def abandon(self) -> None:
        """Drop the transfer being received and free its chunks (it took too long)."""
        self._assembler.reset()

    def take(self) -> CompleteTransfer | None:
        """The newest complete transfer waiting for its decode (it waits no more), or None."""
        transfer, self._waiting = self._waiting, None
        return transfer

    def decode(self, transfer: CompleteTransfer) -> SourceState:
        """The transfer's SourceState, checked for this receiver's model; ProtocolError (with the reason to
        ``refuse``) when it cannot be used. Blocking: run it off the event loop."""
        try:
            return decode_state(transfer.payload, transfer.kind, self.head)
        except ProtocolError:
            raise
        except Exception as exc:  # the encoder failed on a state that passed every check: refuse it, keep the call
            logger.exception("decoding a source state failed")
            raise ProtocolError(f"this receiver could not use the source state ({type(exc).__name__}: {exc})") from exc

    def refuse(self, reason: str) -> None:
        """Count and say why; past the first few, refusals are logged at debug level
        (a flood must not flood the log)."""
        self.stats.source_errors += 1
        self.stats.last_source_error = reason
        log = logger.error if self.stats.source_errors <= LOUD_REFUSALS else logger.debug
        log("refused the source state: %s (the call stays up, waiting for a usable one)", reason)

    def installed(self, *, payload_bytes: int, kind: str, decode_s: float) -> None:
        """A state was installed (received after its checks, or the local one)."""
        s = self.stats
        s.sources_accepted += 1
        s.source_state_bytes, s.source_kind, s.source_decode_s = payload_bytes, kind, decode_s
        logger.info("source state installed (%s, %d bytes, %.2f s to decode)", kind, payload_bytes, decode_s)

    def overdue(self, now_us: int) -> str | None:
        """Why the call should end for want of a usable state (no state ``deadline_s`` after it opened), or None."""
        if not self.deadline_s or self.stats.sources_accepted or (now_us - self.opened_us) / 1e6 <= self.deadline_s:
            return None
        reason = f"no usable source state within {self.deadline_s:g} s"
        if self.stats.last_source_error:
            reason += f" (last refused: {self.stats.last_source_error})"
        return reason
