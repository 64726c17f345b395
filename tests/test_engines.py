"""Backends behind one interface: ONNX Runtime equals PyTorch through the pipeline, provider report,
the factory, the TensorRT cache key and missing-TensorRT error, the torch options, the FPS benchmark."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from adasr.checkpoint import DEFAULT_CHECKPOINT, LoadedModel, load_model  # noqa: E402
from adasr.errors import ConfigError, InputError  # noqa: E402
from adasr.faces import CropBox, crop_face  # noqa: E402
from engines.factory import create_backend  # noqa: E402
from engines.onnxruntime_backend import MOTION_EXTRACTOR_THREADS, OnnxRuntimeBackend  # noqa: E402
from engines.tensorrt_backend import (  # noqa: E402
    EngineKey,
    TensorRTMissingError,
    build_engines,
    cached_engine,
    engine_key,
    stale_engines,
)
from engines.torch_backend import TorchBackend, TorchOptions  # noqa: E402
from adasr.demo_media import astronaut_face, carphone_frames  # noqa: E402
from engines.manifest import read_manifest  # noqa: E402
from engines.talking_head import TalkingHead  # noqa: E402
from realtime.stats import usable_cores  # noqa: E402
from export.onnx_export import ExportReport, export_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tiny_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_model(tiny_model, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="module")
def ort_backend(exported: ExportReport) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(exported.out_dir, providers=["cpu"], threads=1)


def test_onnxruntime_frames_equal_torch_frames_through_the_pipeline(tiny_model: LoadedModel,
                                                                    ort_backend: OnnxRuntimeBackend) -> None:
    """The pipeline over either backend: same rendered frames within 2/255 on real faces."""
    size = tiny_model.config.image_size
    heads = [TalkingHead(TorchBackend(tiny_model)), TalkingHead(ort_backend)]
    assert ort_backend.model_id == tiny_model.model_id and ort_backend.config == tiny_model.config
    states = [head.prepare_source(astronaut_face(size)) for head in heads]
    crops = [crop_face(frame, CropBox(16, 0, 144), size) for frame in carphone_frames(24)[::6]]
    references = [head.extract_motion(crops[0]) for head in heads]
    worst = 0
    for crop in crops[1:]:
        frames = [head.render_image(state, head.extract_motion(crop), ref).astype(np.int16)
                  for head, state, ref in zip(heads, states, references)]
        worst = max(worst, int(np.abs(frames[0] - frames[1]).max()))
    assert worst <= 2, f"ORT and torch frames differ by {worst}/255"


def test_outputs_are_fresh_torch_tensors(ort_backend: OnnxRuntimeBackend) -> None:
    size = ort_backend.config.image_size
    image = torch.rand(1, 3, size, size)
    first = ort_backend.extract_motion(image)
    kept = first.t.clone()
    ort_backend.extract_motion(torch.rand(1, 3, size, size))
    assert torch.equal(first.t, kept)  # a later call must not overwrite what a caller holds
    assert first.delta.shape == (1, ort_backend.config.num_kp, 3) and first.yaw.dtype == torch.float32
    with pytest.raises(InputError, match="must be"):
        ort_backend.extract_motion(torch.rand(1, 3, size + 8, size + 8))


def test_provider_report_says_what_the_session_got(exported: ExportReport, caplog: pytest.LogCaptureFixture) -> None:
    backend = OnnxRuntimeBackend(exported.out_dir, providers=["cpu"], threads=1)
    assert backend.providers == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in backend.describe() and "asked" not in backend.describe()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA: the fallback cannot be shown here")
    with caplog.at_level(logging.WARNING, logger="engines.onnxruntime_backend"):
        fallback = OnnxRuntimeBackend(exported.out_dir, providers=["cuda"], threads=1)
    assert fallback.providers[0] == "CPUExecutionProvider"
    assert fallback.device.type == "cpu"
    assert "asked for CUDAExecutionProvider" in fallback.describe()
    assert any("got ['CPUExecutionProvider']" in r.getMessage() for r in caplog.records)


def test_the_motion_extractor_runs_on_its_callers_thread(exported: ExportReport) -> None:
    """The renderer and the source encoder take the threads asked for; the motion extractor, which runs beside the
    renderer, one (``MOTION_EXTRACTOR_THREADS``)."""
    backend = OnnxRuntimeBackend(exported.out_dir, providers=["cpu"], threads=2)
    threads = {name: graph.session.get_session_options().intra_op_num_threads
               for name, graph in backend._graphs.items()}
    assert threads == {"source_encoder": 2, "motion_extractor": MOTION_EXTRACTOR_THREADS, "renderer": 2}
    assert f"2 threads, the motion extractor on {MOTION_EXTRACTOR_THREADS}," in backend.describe()


def test_factory(exported: ExportReport, tiny_model: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        create_backend("tflite")
    with pytest.raises(ConfigError, match="--onnx DIR"):
        create_backend("onnxruntime")
    with pytest.raises(ConfigError, match="re-export with --fp16"):
        create_backend("onnxruntime", onnx_dir=exported.out_dir, precision="fp16")
    with pytest.raises(ConfigError, match="options of --backend torch"):
        create_backend("onnxruntime", onnx_dir=exported.out_dir, cuda_graphs=True)
    backend = create_backend("onnxruntime", onnx_dir=exported.out_dir, threads=1)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert isinstance(create_backend("torch", model=tiny_model), TorchBackend)


def test_cli_arguments_build_a_backend(exported: ExportReport) -> None:
    import argparse

    from adasr_cli.backend_args import add_backend_arguments, backend_from_args

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--backend", "onnxruntime", "--onnx", str(exported.out_dir), "--threads", "1"])
    assert "onnxruntime" in backend_from_args(args).describe()


def test_torch_options(tiny_model: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="CUDA graphs need"):
        TorchBackend(tiny_model, TorchOptions(cuda_graphs=True))
    plain, nhwc = TorchBackend(tiny_model), TorchBackend(tiny_model, TorchOptions(channels_last=True))
    image = torch.rand(1, 3, tiny_model.config.image_size, tiny_model.config.image_size)
    a, b = plain.extract_motion(image), nhwc.extract_motion(image)
    assert torch.allclose(a.delta, b.delta, atol=1e-4) and "channels_last" in nhwc.describe()


# -- TensorRT: only what runs without it ------------------------------------------------------------

def test_tensorrt_missing_names_the_install_command(exported: ExportReport, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if not installed, even where it is
    with pytest.raises(TensorRTMissingError, match="pip install tensorrt-cu12"):
        build_engines(exported.out_dir, tmp_path)
    with pytest.raises(TensorRTMissingError, match="pip install tensorrt-cu12"):
        create_backend("tensorrt", onnx_dir=exported.out_dir)


def test_engine_cache_key(exported: ExportReport, tmp_path: Path) -> None:
    manifest = read_manifest(exported.out_dir)
    key = engine_key(manifest, "renderer", "10.9.0", "NVIDIA H100 80GB HBM3", fp16=True)
    assert key.fp16 and not engine_key(manifest, "source_encoder", "10.9.0", "H100", fp16=True).fp16
    assert key.onnx_sha256 == manifest.graphs["renderer"].sha256 and key.model_id == manifest.model_id
    changed = [replace(key, tensorrt_version="10.10.0"), replace(key, gpu_name="NVIDIA L4"),
               replace(key, onnx_sha256="0" * 64), replace(key, model_id="other"), replace(key, fp16=False)]
    digests = {key.digest()} | {k.digest() for k in changed}
    assert len(digests) == 1 + len(changed)  # any change → another engine
    assert key.digest() == EngineKey(**{**key.__dict__}).digest()  # stable

    assert cached_engine(tmp_path, key) is None
    (tmp_path / f"{key.stem}.engine").write_bytes(b"engine")
    (tmp_path / f"{key.stem}.json").write_text(json.dumps(key.__dict__))
    assert cached_engine(tmp_path, key) == tmp_path / f"{key.stem}.engine"
    newer = replace(key, tensorrt_version="10.10.0")
    assert cached_engine(tmp_path, newer) is None  # a new TensorRT finds no engine: rebuild
    assert {p.name for p in stale_engines(tmp_path, newer)} == {f"{key.stem}.engine", f"{key.stem}.json"}
    (tmp_path / f"{key.stem}.json").write_text(json.dumps({**key.__dict__, "gpu_name": "edited"}))
    assert cached_engine(tmp_path, key) is None  # the recorded key must match, not only the name


# -- the benchmark -----------------------------------------------------------------------------------

def test_benchmark_quick_writes_records(tmp_path: Path) -> None:
    out = tmp_path / "fps.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "benchmark_fps.py"), "--quick", "--iterations", "3",
         "--warmup", "1", "--frames", "4", "--threads", "1", "--backends", "torch", "onnxruntime", "tensorrt",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads(out.read_text())
    keys = {"backend", "preset", "resolution", "stage", "ms_p50", "ms_p90", "ms_p99", "fps"}
    assert records and all(keys <= set(r) for r in records)
    shipped = load_model(DEFAULT_CHECKPOINT).config  # the shipped model's preset, at its own size
    assert {(r["preset"], r["resolution"]) for r in records} == {(shipped.name, shipped.image_size)}
    seen = {(r["backend"], r["stage"]) for r in records}
    for backend in ("torch", "onnxruntime"):
        for stage in ("motion_extraction", "keypoint_transform", "render", "per_frame"):
            assert (backend, stage) in seen
    assert all(r["ms_p50"] > 0 and r["fps"] > 0 for r in records)
    # every record has the matmul throughput measured beside it, and the run's at its ends
    assert all(r["matmul_gflops_per_s"] > 0 and r["run_matmul_gflops_per_s"] > 0 for r in records)
    if usable_cores() >= 2:  # the renderer's frames with a render per core at once
        assert ("onnxruntime", "render_concurrent") in seen and ("torch", "render_concurrent") not in seen
    if ("mediapipe", "face_tracking") in seen:  # the whole `adasr cam` frame, with the run's matmul reference
        webcam = [r for r in records if r["stage"] == "webcam"]
        assert {r["backend"] for r in webcam} == {"torch", "onnxruntime"}
        assert all(2 <= r["iterations"] <= 20 and r["latency_ms_p50"] > 0 and r["matmul_gflops_per_s"] > 0
                   for r in webcam)
        if Path("/proc/self/task").is_dir():  # where the CPU went: the render thread and the tracker's worker spent it
            for r in webcam:
                threads = r["cpu_ms_by_thread"]
                assert threads["adasr-render"] > 0 and threads["adasr-cam_0"] > 0, threads
                assert r["cpu_ms_per_frame"] == pytest.approx(sum(threads.values()))
                assert "ms per frame" in r["notes"] and "FPS on" in r["notes"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert "p50 ms" in proc.stdout
    assert "skipping tensorrt" in proc.stdout or any(r["backend"] == "tensorrt" for r in records)


def test_renderer_profile_charges_every_node_to_a_module(tmp_path: Path) -> None:
    """The shipped renderer profiled in ONNX Runtime: node time splits into the decoder, the dense motion and the
    warps, and the module and operator tables add up to the same total."""
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "profile_renderer.py"), "--iterations", "2", "--threads", "1",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    modules, operators = report["by_module_ms"], report["by_operator_ms"]
    assert {"decoder/up_0", "dense_motion_network/hourglass", "GridSample"} <= set(modules)
    assert {"Conv", "GridSample"} <= set(operators)
    assert sum(modules.values()) == pytest.approx(report["node_ms"]) == pytest.approx(sum(operators.values()))
    assert "by module" in proc.stdout


def test_photo_warp_benchmark_times_the_three_ways_and_the_catmull_rom_one_is_sharper(tmp_path: Path) -> None:
    """The source photo's warp, three ways in ONNX Runtime: each graph computes what its PyTorch module does,
    and on the astronaut moved half a pixel the renderer's Catmull-Rom beats bilinear on error and detail."""
    out = tmp_path / "warp.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "photo_warp_cost.py"), "--iterations", "2", "--threads", "1",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    methods = json.loads(out.read_text())["methods"]
    assert set(methods) == {"bilinear", "cubic_gridsample", "catmull_rom"}
    assert all(m["ms_p50"] > 0 and m["max_abs_diff_ort_torch"] < 1e-5 for m in methods.values())
    bilinear, catmull_rom = methods["bilinear"], methods["catmull_rom"]
    assert catmull_rom["mean_abs_error"] < 0.9 * bilinear["mean_abs_error"]  # measured 0.81×
    assert catmull_rom["detail"] > bilinear["detail"] + 0.05  # measured 0.886 vs 0.802


def test_cli_parsers(exported: ExportReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from adasr_cli.export_commands import add_build_engine_parser, add_export_parser

    parser = argparse.ArgumentParser(prog="adasr")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_build_engine_parser(sub)
    args = parser.parse_args(["export", "--checkpoint", "ck.pth", "--out", str(tmp_path), "--trt", "--fp16"])
    assert args.trt and args.fp16 and args.warp == "auto" and callable(args.func)
    args = parser.parse_args(["build-engine", "--onnx", str(exported.out_dir), "--out", str(tmp_path),
                              "--precision", "fp16"])
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTMissingError, match="pip install tensorrt-cu12"):
        args.func(args)


def test_build_engine_writes_where_backend_tensorrt_reads_at_its_precision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines built with the defaults are the ones `--backend tensorrt --onnx DIR` looks for (TensorRT itself is
    not needed: what each side would build or load is recorded)."""
    import engines.tensorrt_backend as trt_backend
    from adasr_cli.main import main
    from engines.factory import create_backend

    built: list[tuple[Path, bool]] = []
    loaded: list[tuple[Path, bool]] = []
    monkeypatch.setattr(trt_backend, "build_engines",
                        lambda onnx, out, fp16, **_: built.append((Path(out), fp16)) or {})
    monkeypatch.setattr(trt_backend, "TensorRTBackend",
                        lambda onnx, engine_dir, fp16, device: loaded.append((Path(engine_dir), fp16)))
    for precision in ([], ["--precision", "fp32"]):
        assert main(["build-engine", "--onnx", str(tmp_path), *precision]) == 0
        create_backend("tensorrt", onnx_dir=tmp_path, precision=precision[-1] if precision else None)
    assert built == loaded == [(tmp_path / "trt-engines", True), (tmp_path / "trt-engines", False)]


def test_animate_with_onnxruntime_writes_the_frames_torch_writes(exported: ExportReport, tmp_path: Path) -> None:
    """`adasr animate --backend onnxruntime --onnx DIR` ≡ `--backend torch` within 2/255, on real faces."""
    import cv2

    from adasr_cli.main import main
    from adasr.demo_media import astronaut_face, carphone_frames

    source, driving = tmp_path / "source.png", tmp_path / "driving"
    cv2.imwrite(str(source), cv2.cvtColor(astronaut_face(128), cv2.COLOR_RGB2BGR))
    driving.mkdir()
    for i, frame in enumerate(carphone_frames(4)):
        cv2.imwrite(str(driving / f"{i:03d}.png"), cv2.cvtColor(frame[0:120, 30:150], cv2.COLOR_RGB2BGR))
    common = ["animate", "--source", str(source), "--driving", str(driving), "--no-crop"]
    assert main([*common, "--output", str(tmp_path / "torch"), "--checkpoint", str(DATA / "tiny-official.pth.tar"),
                 "--config", str(DATA / "tiny-official.yaml")]) == 0
    assert main([*common, "--output", str(tmp_path / "ort"), "--backend", "onnxruntime",
                 "--onnx", str(exported.out_dir)]) == 0
    for name in [f"{i:06d}.png" for i in range(4)]:
        a = cv2.imread(str(tmp_path / "torch" / name)).astype(int)
        b = cv2.imread(str(tmp_path / "ort" / name)).astype(int)
        assert np.abs(a - b).max() <= 2
