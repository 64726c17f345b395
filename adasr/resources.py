"""Where the files adasr ships with are: presets, the demo weights, the face model, and a cache.

One answer for every caller, however adasr runs:

* **an installed wheel** (``pip install .``): pyproject's ``data-files`` put the checkout's ``configs/``,
  ``weights/`` and ``models/`` under ``<prefix>/share/adasr`` (the install scheme's data directory: the
  venv for a venv, ``~/.local`` for ``--user``). The distribution's RECORD says where, so no scheme is
  guessed; with ``pip install --target DIR`` they are in ``DIR/share/adasr``, beside the package.
* **a source checkout** (``PYTHONPATH=checkout``, or ``pip install -e .``, which maps the package onto the
  checkout): the folders beside the ``adasr`` package, so a freshly trained ``weights/adasr-lite.pth`` is
  the default at once.

Stdlib only: the parsers take their defaults from here without importing torch.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path

#: The distribution whose RECORD lists the installed data files.
DISTRIBUTION = "adasr"
#: Environment variable naming another face model (mediapipe FaceLandmarker ``.task``) file.
FACE_MODEL_ENV_VAR = "ADASR_FACE_MODEL"
#: Environment variable naming another default checkpoint (the ``--checkpoint`` default).
CHECKPOINT_ENV_VAR = "ADASR_CHECKPOINT"

_MODULE = Path(__file__).resolve()
#: Where the wheel's data files land, below the install scheme's data directory (see pyproject.toml).
_INSTALLED_SUBDIR = ("share", DISTRIBUTION)


@functools.cache
def installed_data_dir() -> Path | None:
    """``<prefix>/share/adasr`` of the installed distribution that holds this very module, else None.

    Asking for the distribution that holds this file (not just any ``adasr`` on the path) tells an
    installed wheel from a checkout imported through PYTHONPATH (beside an installed adasr, perhaps) or
    an editable install, whose RECORD lists a path finder instead of the modules.
    """
    own_file = f"{_MODULE.parent.name}/{_MODULE.name}"
    for dist in importlib.metadata.distributions(name=DISTRIBUTION):
        files = dist.files or []
        if not any(str(f) == own_file and Path(str(dist.locate_file(f))).resolve() == _MODULE for f in files):
            continue
        for f in files:  # share/adasr/<folder>/<file>
            if f.parts[-4:-2] == _INSTALLED_SUBDIR:
                recorded = Path(str(dist.locate_file(f))).resolve().parents[1]
                # ``pip install --target DIR`` moves the data files to DIR/share/adasr but leaves RECORD's paths
                # relative to the scheme it installed into first, pointing two levels above DIR
                beside = _MODULE.parent.parent.joinpath(*_INSTALLED_SUBDIR)
                return recorded if recorded.is_dir() or not beside.is_dir() else beside
    return None


def data_dir() -> Path:
    """The folder holding ``configs/``, ``weights/`` and ``models/``: the installed copy, else the checkout."""
    return installed_data_dir() or _MODULE.parent.parent


def config_dir() -> Path:
    """The shipped presets (model and training YAML)."""
    return data_dir() / "configs"


def default_checkpoint() -> Path:
    """``$ADASR_CHECKPOINT`` if set, else the shipped demo weights ``weights/adasr-lite.pth``."""
    override = os.environ.get(CHECKPOINT_ENV_VAR)
    return Path(override) if override else data_dir() / "weights" / "adasr-lite.pth"


def face_model() -> Path:
    """``$ADASR_FACE_MODEL`` if set, else ``models/face_landmarker.task`` (fetched by ``make``, git-ignored;
    a wheel carries it when it was there at build time)."""
    override = os.environ.get(FACE_MODEL_ENV_VAR)
    return Path(override) if override else data_dir() / "models" / "face_landmarker.task"


def web_dir() -> Path:
    """The browser peer's page: ``web/``, its ``src/`` and the packages ``npm ci`` installed in ``node_modules/``
    (a wheel carries the files the page serves)."""
    return data_dir() / "web"


def cache_dir() -> Path:
    """Files derived once and kept between runs (the demo portrait as a PNG): the checkout's ``outputs/``
    when running from one, else ``$XDG_CACHE_HOME/adasr`` (default ``~/.cache/adasr``): an installed
    package must not write beside its own files."""
    if installed_data_dir() is None:
        return _MODULE.parent.parent / "outputs"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / DISTRIBUTION
