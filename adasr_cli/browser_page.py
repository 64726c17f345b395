"""``adasr receive``'s page for callers who have only a browser: what it serves for this receiver's model.

The page runs the receiver's own motion extractor graph and face-tracker model, so it needs a backend
that runs exported graphs (ONNX Runtime, TensorRT: their folder holds ``motion_extractor.onnx``) and
the page's installed packages (``npm ci``, which ``make`` runs). Without them the receiver still takes
calls from ``adasr send`` and says, in one line, why it serves no page.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adasr import resources

if TYPE_CHECKING:
    from aiohttp import web

    from engines.talking_head import TalkingHead
    from realtime.web_page import Authorized, PageOptions

PageRoutes = Callable[["web.Application", "Authorized"], None]


def page_options(head: TalkingHead, graphs: Path, max_message: int) -> PageOptions:
    """The page for ``head``'s model, running the graphs in ``graphs`` (an ``adasr export`` folder of that model)."""
    from realtime.source_state_codec import wire_model_id
    from realtime.web_page import PageOptions

    config = head.backend.config
    return PageOptions(web_dir=resources.web_dir(), face_model=resources.face_model(), graphs=graphs,
                       model_id=wire_model_id(head), image_size=config.image_size, num_kp=config.num_kp,
                       max_message=max_message, feature_channel=config.feature_channel,
                       detail_channels=config.generator.detail_channels,
                       derived_channels=config.derived_volume_channels)


def page_routes(head: TalkingHead, max_message: int) -> PageRoutes | None:
    """The routes that serve the page for ``head``'s model, or None (said on stderr) when it cannot be served."""
    from realtime.web_page import add_page_routes

    graphs = getattr(head.backend, "onnx_dir", None)
    if graphs is None:
        print("adasr receive: no browser page: it runs the exported graphs, and --backend torch has none (the "
              "default --backend auto has them)", file=sys.stderr)
        return None
    options = page_options(head, Path(graphs), max_message)
    missing = options.missing()
    if missing:
        print(f"adasr receive: no browser page: {missing[0]} is missing (`make` installs the page's packages with "
              "npm ci)", file=sys.stderr)
        return None
    return lambda app, authorized: add_page_routes(app, options, authorized)
