"""``manifest.json``: what an export directory holds, read by every file-based backend.

The manifest ties the three ONNX files to the weights they came from (``model_id``, the identity a
receiver checks a SourceState against) and to the exact file contents (SHA-256 each), so a backend
refuses a directory whose files were replaced or half-written, and the TensorRT engine cache can
key its engines by what they were built from.

It lives beside the backends that read it; ``export`` builds on ``engines`` and writes it through
``write_manifest`` (one format, one owner, no package cycle).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adasr.config import ModelConfig, model_config_from_dict
from adasr.errors import AdaSRError

MANIFEST_NAME = "manifest.json"
FORMAT = "adasr-onnx"
FORMAT_VERSION = 2
GRAPH_NAMES = ("source_encoder", "motion_extractor", "renderer")


class ManifestError(AdaSRError):
    """An export directory is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, fixed shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d["dtype"]))


@dataclass(frozen=True)
class GraphEntry:
    """One exported network and how well it matched PyTorch at export time."""

    name: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    """Per output: max |ONNX Runtime − PyTorch| on the verification face."""
    tolerance: dict[str, float] = field(default_factory=dict)
    """Per output: the bound the difference was checked against."""
    verified_with: str = ""
    """What ran the ONNX side of the check (runtime, provider)."""

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GraphEntry:
        return GraphEntry(
            name=str(d["name"]), file=str(d["file"]), sha256=str(d["sha256"]),
            inputs=tuple(TensorSpec.from_dict(x) for x in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(x) for x in d["outputs"]),
            max_abs_diff={k: float(v) for k, v in d.get("max_abs_diff", {}).items()},
            tolerance={k: float(v) for k, v in d.get("tolerance", {}).items()},
            verified_with=str(d.get("verified_with", "")),
        )


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``."""

    model_id: str
    """Identity of the weights (adasr.checkpoint.model_id_of)."""
    config: dict[str, Any]
    """ModelConfig as a dict."""
    precision: str
    """'fp32' or 'fp16' (inside the graphs; graph inputs and outputs are float32 either way)."""
    trt: bool
    """The graphs were made for TensorRT's ONNX parser (no 5-D GridSample, listed operators only)."""
    warp: str
    """3-D warp implementation in the renderer graph: 'grid_sample', 'stacked' or 'trt'."""
    opset: int
    exporter: dict[str, str]
    """Versions of what exported (torch, onnx) and how."""
    graphs: dict[str, GraphEntry]
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def model_config(self) -> ModelConfig:
        """The ModelConfig the graphs were exported with."""
        return model_config_from_dict(self.config, "manifest.json:config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        if d.get("format") != FORMAT:
            raise ManifestError(f"{where}: not an AdaSR export manifest (format {d.get('format')!r})")
        if int(d.get("format_version", -1)) != FORMAT_VERSION:
            raise ManifestError(f"{where}: manifest version {d.get('format_version')} is not the supported "
                                f"{FORMAT_VERSION}; re-export with this version: adasr export ...")
        try:
            graphs = {name: GraphEntry.from_dict(g) for name, g in d["graphs"].items()}
            return Manifest(
                model_id=str(d["model_id"]), config=dict(d["config"]), precision=str(d["precision"]),
                trt=bool(d["trt"]), warp=str(d["warp"]), opset=int(d["opset"]),
                exporter={k: str(v) for k, v in d["exporter"].items()}, graphs=graphs,
                created=str(d.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed manifest ({type(exc).__name__}: {exc}); re-export") from exc


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(out_dir: str | Path, manifest: Manifest) -> Path:
    """Write atomically: a reader never sees half a manifest."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=MANIFEST_NAME, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_manifest(onnx_dir: str | Path, verify_files: bool = True) -> Manifest:
    """Read ``manifest.json`` of an export directory; with ``verify_files``, check every file's hash."""
    onnx_dir = Path(onnx_dir)
    path = onnx_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{onnx_dir}: no {MANIFEST_NAME}; create the directory with "
                            f"`adasr export --checkpoint CK --out {onnx_dir}`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); re-export") from exc
    manifest = Manifest.from_dict(data, str(path))
    missing = [name for name in GRAPH_NAMES if name not in manifest.graphs]
    if missing:
        raise ManifestError(f"{path}: graphs {missing} missing from the manifest; re-export")
    if verify_files:
        for entry in manifest.graphs.values():
            file = onnx_dir / entry.file
            if not file.is_file():
                raise ManifestError(f"{file} is missing; re-export into {onnx_dir}")
            if file_sha256(file) != entry.sha256:
                raise ManifestError(f"{file} does not match the SHA-256 in {path} (changed since export); re-export")
    return manifest
