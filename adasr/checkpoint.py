"""Checkpoint I/O in one place: the released format, our own format, and clear refusals.

Released format: ``torch.save`` of a plain dict with ``generator``, ``kp_detector`` and
``he_estimator`` state dicts (extra entries such as optimizers or ``epoch`` are ignored).
Our format adds ``format: "adasr"`` and ``config`` (the ModelConfig as a dict), so the file alone is
enough to run. Both are read with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adasr import resources
from adasr.config import ModelConfig, load_model_config, model_config_from_dict, preset_names
from adasr.errors import CheckpointError, ConfigError
from adasr.networks import AdaSRNetworks

_logger = logging.getLogger(__name__)

OUR_FORMAT = "adasr"
#: The shipped demo checkpoint (or ``$ADASR_CHECKPOINT``), the default of every command that takes one.
DEFAULT_CHECKPOINT = resources.default_checkpoint()


@dataclass(frozen=True)
class LoadedModel:
    """Networks in eval mode plus what they were made from."""

    networks: AdaSRNetworks
    """kp_detector, he_estimator, generator."""
    config: ModelConfig
    """The configuration the weights fit."""
    model_id: str
    """Short hash of the weights: the identity a receiver checks a SourceState against."""
    path: Path
    """Where the weights came from."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only, turning every failure into a CheckpointError that says why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_archive(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _looks_like_torch_file(path):
            raise CheckpointError(f"{path}: not a PyTorch checkpoint") from exc
        detail = next((line for line in str(exc).splitlines() if "global" in line.lower()), str(exc).splitlines()[0])
        raise CheckpointError(
            f"{path}: holds Python objects beyond weights, refused (weights_only). If you trust the file, load it "
            f"once with torch.load(..., weights_only=False) and re-save only its 'generator', 'kp_detector' and "
            f"'he_estimator' state dicts. Detail: "
            f"{detail.strip()[:300]}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(data, dict) or not all(part in data for part in AdaSRNetworks.PARTS):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not an AdaSR checkpoint: needs entries {list(AdaSRNetworks.PARTS)}, has {keys}")
    return data


def check_archive(path: Path) -> None:
    """Refuse a zip checkpoint whose storages would expand beyond the file, before torch reads any of them.

    ``torch.save`` stores every entry uncompressed, so what loading allocates is bounded by the file's own
    size; a compressed entry (a deflate bomb: 1 MB on disk, gigabytes in memory) or one whose declared
    size disagrees with its bytes is not torch's writing. The legacy (non-zip) format has no index to
    check: torch reads it storage by storage.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: a damaged zip archive ({type(exc).__name__}: {str(exc)[:200]})") from exc
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            raise CheckpointError(f"{path}: entry {entry.filename[:100]!r} is compressed ({entry.compress_size} bytes "
                                  f"→ {entry.file_size}); torch.save never writes that, refused before reading it")


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; the legacy format starts with a pickle protocol marker."""
    with path.open("rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def _state_dicts(data: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for part in AdaSRNetworks.PARTS:
        sd = data[part]
        if not isinstance(sd, dict):
            raise CheckpointError(f"entry '{part}' is not a state dict")
        if sd and all(k.startswith("module.") for k in sd):
            sd = {k[len("module."):]: v for k, v in sd.items()}
        out[part] = sd
    return out


def shape_mismatches(cfg: ModelConfig, state: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against the networks ``cfg`` builds."""
    with torch.device("meta"):
        nets = AdaSRNetworks(cfg)
    problems: list[str] = []
    for part in AdaSRNetworks.PARTS:
        expected = getattr(nets, part).state_dict()
        got = state[part]
        problems += [f"{part}: {k} is {list(got[k].shape)}, the config wants {list(v.shape)}"
                     for k, v in expected.items() if k in got and got[k].shape != v.shape]
        problems += [f"{part}: missing {k}" for k in expected if k not in got]
        problems += [f"{part}: unexpected {k}" for k in got if k not in expected]
    return problems


def _fitting_presets(state: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    fits = []
    for name in preset_names():
        try:
            if not shape_mismatches(load_model_config(name), state):
                fits.append(name)
        except ConfigError:
            continue
    return fits


def model_id_of(state: dict[str, dict[str, torch.Tensor]]) -> str:
    """SHA-256 over every tensor (names, shapes, bytes) of the three networks, first 16 hex digits."""
    h = hashlib.sha256()
    for part in AdaSRNetworks.PARTS:
        for key in sorted(state[part]):
            t = state[part][key].detach().cpu().contiguous()
            h.update(f"{part}.{key}:{list(t.shape)}:{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_model(path: str | Path, config: str | Path | ModelConfig | None = None) -> LoadedModel:
    """Build the networks and load weights strictly; eval mode, CPU, fp32.

    The config comes from ``config`` when given, else from the checkpoint (our format); an
    official checkpoint without ``config`` needs one (the ``official`` preset fits the release).
    """
    path = Path(path)
    data = read_checkpoint(path)
    state = _state_dicts(data)
    if isinstance(config, ModelConfig):
        cfg = config
    elif config is not None:
        cfg = load_model_config(config)
    elif data.get("format") == OUR_FORMAT and isinstance(data.get("config"), dict):
        cfg = model_config_from_dict(data["config"], f"{path}:config")
    else:
        fits = _fitting_presets(state)
        if len(fits) != 1:
            raise CheckpointError(f"{path}: an official-format checkpoint carries no config; pass --config "
                                  f"(presets that fit its shapes: {fits or 'none'})")
        cfg = load_model_config(fits[0])
    problems = shape_mismatches(cfg, state)
    if problems:
        fits = _fitting_presets(state)
        hint = (f"presets that fit: {', '.join(fits)}" if fits
                else "no shipped preset fits; pass the YAML it was made with")
        shown = "; ".join(problems[:4]) + (f"; … {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckpointError(f"{path} does not fit config '{cfg.name}': {shown} ({hint})")
    nets = AdaSRNetworks(cfg)
    for part in AdaSRNetworks.PARTS:
        getattr(nets, part).load_state_dict(state[part], strict=True)
    nets.eval()
    _logger.info("loaded %s (config %s)", path, cfg.name)
    return LoadedModel(nets, cfg, model_id_of(state), path)


def save_checkpoint(path: str | Path, networks: AdaSRNetworks, extra: dict[str, Any] | None = None) -> Path:
    """Write our format atomically (temporary file, then rename): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {part: getattr(networks, part).state_dict() for part in AdaSRNetworks.PARTS}
    data.update(format=OUR_FORMAT, config=networks.cfg.to_dict(), **(extra or {}))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
