"""Text a peer wrote, made safe to log and print.

A GOODBYE's reason, an error quoting an SDP: whatever a peer controls can hold newlines (a forged
log line) or terminal escape sequences (a rewritten screen). Everything from a peer that reaches a
log or a console goes through ``escaped`` first.
"""

from __future__ import annotations

#: Longest peer text shown; the rest is cut (a log line is not a place for a peer's essay).
MAX_SHOWN = 200


def escaped(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` with every non-printable character (newlines, ESC, other controls) as a Python escape."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")
