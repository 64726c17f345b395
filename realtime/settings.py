"""The call's names and defaults that the command line shows, importable without aiortc, OpenCV or torch.

``adasr --help`` lists them before any module that uses them is loaded.
"""

from __future__ import annotations

from typing import Literal

SinkKind = Literal["virtualcam", "vcam", "window", "file", "none"]
#: Sink names the command line offers (``vcam`` is kept as a short alias of ``virtualcam``).
SINK_CHOICES = ("virtualcam", "vcam", "window", "file", "none")

#: Default port of ``adasr receive``'s offer endpoint.
DEFAULT_PORT = 8765
#: Environment variable ``adasr send`` and ``adasr receive`` read the token from when --token is not given
#: (keeps it out of the process list).
TOKEN_ENV_VAR = "ADASR_TOKEN"
