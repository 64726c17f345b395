"""Exported graphs kept between runs: one verified export per model, made the first time a command needs it.

The graph runtimes (ONNX Runtime, TensorRT) run files that ``export_model`` writes and verifies against
PyTorch. Rather than ask every user to run ``adasr export`` and pass ``--onnx DIR``, a command that picks a
graph runtime by default asks this cache for the graphs of its model: a folder per (model id, precision,
TensorRT variant) under the cache directory (``adasr.resources.cache_dir``), exported and verified once.

A folder is reused only while everything its graphs were made from is unchanged: the weights (the model
id), the configuration, the code that builds and exports the networks (a hash of its source files) and the
versions of torch, onnx and ONNX Runtime. Anything else is a changed model: the folder is exported (and so
verified) again. The recipe is written last, beside the manifest, so an interrupted export is never reused;
a new export is made in a scratch folder and moved into place, so a concurrent reader never sees half of one.

int8 folders are the fp32 export with a quantised renderer (export.int8), kept only when its frames match the
fp32 ones' (PSNR bar); a refusal is remembered beside the folder for that same recipe, so a model whose int8
graphs fall short costs the calibration once, not every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from adasr import resources
from adasr.checkpoint import LoadedModel
from adasr.errors import ConfigError
from engines.manifest import ManifestError, read_manifest

logger = logging.getLogger(__name__)

#: The recipe a cached folder was made from, written after its export succeeded.
RECIPE_NAME = "recipe.json"
#: Beside the folder a recipe would have made: why its graphs were refused (int8 under its quality bar).
REFUSED_SUFFIX = ".refused.json"
#: What a cached folder's graphs compute in: fp16 for GPUs, int8 (the renderer's convolutions) for CPUs.
PRECISIONS = ("fp32", "fp16", "int8")
#: Packages whose code decides what the exported graphs compute (training and evaluation do not).
_CODE_ROOTS = ("adasr", "export")
_CODE_EXCLUDED = ("adasr/training/", "adasr/evaluation/")
#: Distributions whose versions change what an export writes or how it is verified.
_VERSIONED = ("torch", "onnx", "onnxruntime")


def default_root() -> Path:
    """Where cached graphs live: ``graphs/`` in the cache directory."""
    return resources.cache_dir() / "graphs"


@functools.cache
def code_sha256() -> str:
    """SHA-256 over the source files that build and export the networks (their relative paths and bytes)."""
    top = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for root in _CODE_ROOTS:
        for path in sorted((top / root).rglob("*.py")):
            relative = path.relative_to(top).as_posix()
            if not relative.startswith(_CODE_EXCLUDED):
                h.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


@dataclass(frozen=True)
class GraphRecipe:
    """Everything a cached export depends on: equal recipes make equal graphs."""

    model_id: str
    precision: str
    """One of ``PRECISIONS`` (inside the graphs; their inputs and outputs are float32 either way)."""
    trt: bool
    """Graphs for TensorRT's ONNX parser."""
    config_sha256: str
    code_sha256: str
    versions: dict[str, str]

    @staticmethod
    def of(model: LoadedModel, precision: str, trt: bool) -> GraphRecipe:
        config = json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode()
        return GraphRecipe(model.model_id, precision, trt, hashlib.sha256(config).hexdigest(), code_sha256(),
                           {name: _version(name) for name in _VERSIONED})

    @property
    def folder_name(self) -> str:
        """The cache key as a folder: model id and precision (and the TensorRT variant)."""
        return f"{self.model_id}-{self.precision}{'-trt' if self.trt else ''}"


def _is_ready(folder: Path, recipe: GraphRecipe) -> bool:
    """The folder holds a complete, unmodified export of exactly this recipe."""
    try:
        if json.loads((folder / RECIPE_NAME).read_text()) != asdict(recipe):
            return False
        return read_manifest(folder, verify_files=True).model_id == recipe.model_id
    except (OSError, ValueError, ManifestError):
        return False


def _refused(path: Path, recipe: GraphRecipe) -> str | None:
    """Why graphs of exactly this recipe were refused before (int8 below its quality bar), or None."""
    try:
        record = json.loads(path.read_text())
        return str(record["reason"]) if record.get("recipe") == asdict(recipe) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _announce(message: str) -> None:
    logger.warning("%s", message)


def cached_export(model: LoadedModel, *, precision: str = "fp32", trt: bool = False, root: Path | None = None,
                  announce: Callable[[str], None] = _announce) -> Path:
    """The folder of verified graphs of ``model`` (``export_model``'s output), exported now when missing or
    made from anything else; ``announce`` gets one line before an export starts (it takes a while)."""
    from export.int8 import quantize_export
    from export.onnx_export import VerificationError, export_model

    if precision not in PRECISIONS or (trt and precision == "int8"):
        raise ConfigError(f"cached graphs are {', '.join(PRECISIONS)} (int8 for ONNX Runtime only), not {precision}")
    recipe = GraphRecipe.of(model, precision, trt)
    root = Path(root) if root is not None else default_root()
    folder = root / recipe.folder_name
    if _is_ready(folder, recipe):
        return folder
    refusal = root / f"{recipe.folder_name}{REFUSED_SUFFIX}"
    if (reason := _refused(refusal, recipe)) is not None:
        raise VerificationError(f"{reason} (found in {refusal})")
    announce(f"preparing the {'TensorRT-ready ' if trt else ''}ONNX graphs of model {model.model_id} ({precision}), "
             f"once for this model: exporting{', quantising' if precision == 'int8' else ''} and verifying into "
             f"{folder}")
    fp32 = cached_export(model, root=root, announce=lambda _: None) if precision == "int8" else None  # said above
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{recipe.folder_name}-"))
    try:
        if fp32 is not None:
            try:
                quantize_export(fp32, scratch)
            except VerificationError as exc:  # kept, so that the next run does not spend the time again
                refusal.write_text(json.dumps({"recipe": asdict(recipe), "reason": str(exc)}, indent=2) + "\n")
                raise
        else:
            export_model(model, scratch, fp16=precision == "fp16", trt=trt)
        (scratch / RECIPE_NAME).write_text(json.dumps(asdict(recipe), indent=2) + "\n")
        _move_into_place(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not _is_ready(folder, recipe):  # another process replaced it with something else meanwhile
        raise ManifestError(f"{folder} changed while it was being prepared; run the command again")
    return folder


def _move_into_place(scratch: Path, folder: Path) -> None:
    """Replace ``folder`` by ``scratch``: the stale one is moved aside first, then removed."""
    stale: Path | None = None
    if folder.exists():
        stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-stale-"))
        os.replace(folder, stale / folder.name)
    try:
        os.replace(scratch, folder)
    except OSError as exc:  # a concurrent run moved its own export in first: keep that one
        logger.info("%s was prepared by another process meanwhile (%s)", folder, exc)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)

