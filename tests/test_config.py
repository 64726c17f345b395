"""Configuration loading: presets, our YAML, the official schema, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adasr.config import load_model_config
from adasr.errors import ConfigError

TINY = Path(__file__).parent / "data" / "tiny-official.yaml"


def test_official_schema_with_hardcoded_overrides() -> None:
    cfg = load_model_config(TINY)
    assert cfg.image_size == 128
    assert cfg.he_estimator.widths == [24, 48, 96, 192]
    assert cfg.generator.decoder.in_channels == 16 and cfg.generator.decoder.middle_channels == 32
    assert cfg.kp_detector.reshape_channel == 512


def test_our_schema_round_trip(tmp_path: Path) -> None:
    lite = load_model_config("lite")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"model": lite.to_dict()}))
    assert load_model_config(path) == lite


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "configs" / "lite.yaml").read_text())
    doc["model"]["generator"]["num_resblock"] = 3  # misspelt
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="num_resblock"):
        load_model_config(path)


def test_inconsistent_widths_are_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "configs" / "lite.yaml").read_text())
    doc["model"]["generator"]["decoder"]["in_channels"] = 48
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="in_channels"):
        load_model_config(path)


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(ConfigError, match="lite"):
        load_model_config("nope")
