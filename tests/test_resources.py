"""adasr.resources from a source checkout (tests/test_install.py covers an installed wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adasr import resources

PROJECT = Path(__file__).resolve().parents[1]


def test_a_checkout_uses_its_own_folders_and_outputs_as_cache() -> None:
    assert resources.installed_data_dir() is None  # imported from the checkout, not from an installed wheel
    assert resources.data_dir() == PROJECT
    assert (resources.config_dir() / "lite.yaml").is_file()
    assert resources.cache_dir() == PROJECT / "outputs"


def test_environment_overrides_the_checkpoint_and_the_face_model(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.delenv(resources.CHECKPOINT_ENV_VAR, raising=False)
    monkeypatch.delenv(resources.FACE_MODEL_ENV_VAR, raising=False)
    assert resources.default_checkpoint() == PROJECT / "weights" / "adasr-lite.pth"
    assert resources.face_model() == PROJECT / "models" / "face_landmarker.task"
    monkeypatch.setenv(resources.CHECKPOINT_ENV_VAR, str(tmp_path / "mine.pth"))
    monkeypatch.setenv(resources.FACE_MODEL_ENV_VAR, str(tmp_path / "face.task"))
    assert resources.default_checkpoint() == tmp_path / "mine.pth"
    assert resources.face_model() == tmp_path / "face.task"
