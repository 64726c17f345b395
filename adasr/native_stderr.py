"""Native libraries' chatter on stderr, moved into the log.

mediapipe's C++ graph and TensorFlow Lite write straight to file descriptor 2 ("W0000 …
face_landmarker_graph.cc", "Created TensorFlow Lite XNNPACK delegate") when a landmarker is built,
which lands in the middle of every command's progress bars. Python's ``sys.stderr`` cannot catch
them, so for the few milliseconds of such a call the descriptor itself points at a temporary file;
what was written goes to the log at debug level (``adasr -v`` shows it).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def native_stderr_to_log(source: str) -> Iterator[None]:
    """Within the block, descriptor 2 writes into a temporary file logged afterwards under ``source``."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded, pytest capture): nothing to move
        yield
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), stderr_fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.debug("%s: %s", source, line)
