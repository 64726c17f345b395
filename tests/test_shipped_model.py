"""The shipped lite weights on a face they never saw (skimage's astronaut): what a user gets out of the box.

The held-out figures in benchmarks/RESULTS.md come from ``adasr eval`` on ../shared clips, which users do
not have; this keeps the two promises that need no dataset from regressing with a new checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest

from adasr.checkpoint import load_model
from adasr.demo_media import astronaut_face
from adasr.evaluation.metrics import detail, psnr
from adasr.resources import default_checkpoint
from engines.talking_head import TalkingHead
from engines.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def shipped_head() -> TalkingHead:
    return TalkingHead(TorchBackend(load_model(default_checkpoint())))


def test_identity_motion_gives_the_portrait_back_sharp(shipped_head: TalkingHead) -> None:
    """Driving = source: the renderer must return the source (≥ 30 dB, the issue's bar), not a soft copy."""
    source = astronaut_face(shipped_head.size)
    state = shipped_head.prepare_source(source)
    own = shipped_head.extract_motion(source)
    frame = shipped_head.render_image(state, own, own)
    assert psnr(frame, source) >= 30.0
    assert detail(frame, source) >= 0.8


def test_another_pose_moves_the_face(shipped_head: TalkingHead) -> None:
    """A different real motion (the mirrored face's) changes the picture: the renderer is not a frozen photo."""
    source = astronaut_face(shipped_head.size)
    state = shipped_head.prepare_source(source)
    own = shipped_head.extract_motion(source)
    mirrored = shipped_head.extract_motion(np.ascontiguousarray(source[:, ::-1]))
    still = shipped_head.render_image(state, own, own).astype(np.float32)
    moved = shipped_head.render_image(state, mirrored, own).astype(np.float32)
    assert np.abs(moved - still).mean() > 2.0
