"""The graphs cache (export.graph_cache) and the default backend the command line builds from it."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from adasr.checkpoint import LoadedModel  # noqa: E402
from adasr_cli.backend_args import (  # noqa: E402
    CPU_PRECISION,
    add_backend_arguments,
    backend_from_args,
    resolve_backend_name,
)
from engines.manifest import read_manifest  # noqa: E402
from export import graph_cache, int8  # noqa: E402
from export.graph_cache import RECIPE_NAME, cached_export  # noqa: E402
from export.onnx_export import VerificationError  # noqa: E402

from .conftest import TINY_CHECKPOINT, TINY_CONFIG  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--checkpoint", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG), "--threads", "1"]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def cached(tiny_model: LoadedModel, cache_root: Path) -> Path:
    """The tiny model's graphs, exported into the module's cache once."""
    return cached_export(tiny_model, root=cache_root, announce=lambda _: None)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    return parser.parse_args(list(argv))


def test_an_export_is_made_once_per_model_and_reused(tiny_model: LoadedModel, cache_root: Path,
                                                     cached: Path) -> None:
    assert cached == cache_root / f"{tiny_model.model_id}-fp32"
    assert read_manifest(cached).model_id == tiny_model.model_id  # verified against PyTorch, hashes intact
    said: list[str] = []
    assert cached_export(tiny_model, root=cache_root, announce=said.append) == cached
    assert said == []  # nothing to prepare the second time


def test_changed_weights_get_their_own_verified_export(tiny_model: LoadedModel, cache_root: Path,
                                                       cached: Path) -> None:
    networks = copy.deepcopy(tiny_model.networks)
    with torch.no_grad():
        next(networks.generator.parameters()).mul_(1.01)
    changed = replace(tiny_model, networks=networks, model_id="changed0weights0")
    said: list[str] = []
    folder = cached_export(changed, root=cache_root, announce=said.append)
    assert folder == cache_root / "changed0weights0-fp32" and folder != cached
    assert len(said) == 1 and "preparing" in said[0] and "changed0weights0" in said[0]
    assert read_manifest(folder).model_id == "changed0weights0"


@pytest.mark.parametrize("tamper", ["code", "graph"])
def test_a_folder_made_from_other_code_or_edited_since_is_exported_again(
        tiny_model: LoadedModel, cache_root: Path, cached: Path, tamper: str) -> None:
    if tamper == "code":  # as if the networks' source had changed since the export
        recipe = json.loads((cached / RECIPE_NAME).read_text())
        (cached / RECIPE_NAME).write_text(json.dumps({**recipe, "code_sha256": "0" * 64}))
    else:
        with open(cached / "renderer.onnx", "ab") as f:
            f.write(b"\0")
    said: list[str] = []
    assert cached_export(tiny_model, root=cache_root, announce=said.append) == cached
    assert len(said) == 1
    assert json.loads((cached / RECIPE_NAME).read_text())["code_sha256"] == graph_cache.code_sha256()
    read_manifest(cached)  # the files match their manifest again
    assert not [p for p in cache_root.iterdir() if p.name.startswith(".")]  # no scratch or stale folder left


def test_the_default_backend_is_onnx_runtime_on_the_cached_graphs(
        monkeypatch: pytest.MonkeyPatch, cache_root: Path, cached: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(graph_cache, "default_root", lambda: cache_root)
    args = _parse(*TINY, "--precision", "fp32")  # the tiny model's int8 graphs fall short of the quality bar
    assert args.backend == "auto" and resolve_backend_name(args) == "onnxruntime"
    backend = backend_from_args(args)
    assert backend.describe().startswith("onnxruntime") and str(cached) in backend.describe()
    assert capsys.readouterr().err == ""  # already prepared: nothing said


@pytest.mark.parametrize("argv", [["--backend", "torch"], ["--channels-last"], ["--precision", "bf16"]])
def test_torch_stays_available_and_takes_the_options_only_it_has(argv: list[str]) -> None:
    assert resolve_backend_name(_parse(*argv)) == "torch"


@pytest.mark.parametrize("bar_db", [20.0, 99.0])
def test_int8_graphs_are_kept_only_above_the_quality_bar(
        monkeypatch: pytest.MonkeyPatch, tiny_model: LoadedModel, tmp_path: Path, cached: Path, bar_db: float) -> None:
    """The tiny random-weight model's int8 renderer is ~30 dB from its fp32 one: kept under a 20 dB bar, refused
    (nothing left to load) under 99 dB. The shipped model's figure is in benchmarks/RESULTS.md."""
    monkeypatch.setattr(int8, "MIN_PSNR_DB", bar_db)
    shutil.copytree(cached, tmp_path / cached.name)  # the fp32 export it is made from, already in this cache
    folder = tmp_path / f"{tiny_model.model_id}-int8"
    if bar_db > 50:
        with pytest.raises(VerificationError, match="under the 99 dB bar"):
            cached_export(tiny_model, precision="int8", root=tmp_path, announce=lambda _: None)
        assert not folder.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        said: list[str] = []
        with pytest.raises(VerificationError, match="under the 99 dB bar"):  # remembered: not calibrated again
            cached_export(tiny_model, precision="int8", root=tmp_path, announce=said.append)
        assert said == []
        return
    assert cached_export(tiny_model, precision="int8", root=tmp_path, announce=lambda _: None) == folder
    manifest, fp32 = read_manifest(folder), read_manifest(cached)
    assert manifest.precision == "int8" and "worst PSNR" in manifest.graphs["renderer"].verified_with
    assert manifest.graphs["renderer"].sha256 != fp32.graphs["renderer"].sha256
    assert manifest.graphs["renderer"].inputs == fp32.graphs["renderer"].inputs  # fed as the fp32 graph is
    assert manifest.graphs["motion_extractor"] == fp32.graphs["motion_extractor"]  # only the renderer is int8
    _assert_thin_full_resolution_convs_stay_float(folder / "renderer.onnx", cached / "renderer.onnx", tmp_path,
                                                  tiny_model.config.image_size)


def _assert_thin_full_resolution_convs_stay_float(int8_graph: Path, fp32_graph: Path, tmp: Path, size: int) -> None:
    """Every conv of the int8 renderer reads int8 weights except the thin ones at the frame's size (int8.py)."""
    import onnx

    inferred = tmp / "inferred.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(fp32_graph))), str(inferred))
    thin = set(int8.thin_full_resolution_convs(inferred, size))
    convs = {n.name: n for n in onnx.load(str(int8_graph)).graph.node if n.op_type == "Conv"}
    quantized = {name for name, n in convs.items() if n.input[1].endswith("DequantizeLinear_Output")}
    assert thin and thin <= set(convs)  # the tiny model's RGB conv at least
    assert quantized == set(convs) - thin


def test_the_default_backend_falls_back_to_torch_when_the_graphs_cannot_be_made(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    tried: list[str] = []

    def refuse(model: LoadedModel, *, precision: str, **_: object) -> Path:
        tried.append(precision)
        raise VerificationError(f"the {precision} renderer does not reproduce PyTorch")

    monkeypatch.setattr(graph_cache, "cached_export", refuse)
    assert backend_from_args(_parse(*TINY)).describe().startswith("torch")
    assert tried == [CPU_PRECISION, "fp32"] and CPU_PRECISION == "int8"  # the CPU's default first, then fp32
    err = capsys.readouterr().err
    assert "int8 graphs could not be made, trying fp32" in err and "fp32 graphs could not be made, trying torch" in err
    with pytest.raises(VerificationError):  # asked for by name: no silent substitute
        backend_from_args(_parse("--backend", "onnxruntime", *TINY))
