"""Checkpoint formats and the refusals a user sees instead of a stack trace."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from adasr.checkpoint import load_model, save_checkpoint
from adasr.config import load_model_config
from adasr.errors import CheckpointError
from adasr.networks import AdaSRNetworks

from .conftest import TINY_CHECKPOINT, TINY_CONFIG


def test_official_format_loads_with_extra_entries_ignored(tmp_path: Path) -> None:
    data = torch.load(TINY_CHECKPOINT, weights_only=True)
    data["optimizer_generator"] = {"state": {}, "param_groups": []}
    path = tmp_path / "with-extras.pth.tar"
    torch.save(data, path)
    model = load_model(path, TINY_CONFIG)
    assert model.config.image_size == 128 and not model.networks.training


def test_official_format_finds_its_preset() -> None:
    assert load_model(TINY_CHECKPOINT).config.name == "tiny-official"


def test_our_format_carries_its_config(tmp_path: Path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    path = save_checkpoint(tmp_path / "ours.pth", tiny_model.networks)
    again = load_model(path)
    assert again.config == tiny_model.config
    assert again.model_id == tiny_model.model_id
    assert not list(tmp_path.glob("*.tmp"))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model(path)


def test_missing_file() -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model("/nonexistent/weights.pth")


def test_pickle_needing_more_than_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"generator": {}, "kp_detector": {}, "he_estimator": {}, "obj": pickle.PickleError()}, path)
    with pytest.raises(CheckpointError, match="beyond weights"):
        load_model(path)


def test_wrong_entries(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="needs entries"):
        load_model(path)


def test_shape_mismatch_names_keys_and_the_fitting_preset(tmp_path: Path) -> None:
    nets = AdaSRNetworks(load_model_config("lite"))
    path = save_checkpoint(tmp_path / "lite.pth", nets)
    with pytest.raises(CheckpointError) as info:
        load_model(path, TINY_CONFIG)
    message = str(info.value)
    assert "does not fit config 'tiny-official'" in message
    assert "presets that fit: lite" in message
    assert "wants" in message


def test_missing_keys_are_named(tmp_path: Path) -> None:
    data = torch.load(TINY_CHECKPOINT, weights_only=True)
    del data["kp_detector"]["down.weight"]
    path = tmp_path / "missing.pth"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="missing down.weight"):
        load_model(path, TINY_CONFIG)
