"""The two-way call on a bad network, made on purpose: a table of loss × jitter (issue #25).

    python benchmarks/impaired_call.py                         # the 128 px test model, 10 fps, 150 frames per cell
    python benchmarks/impaired_call.py --checkpoint weights/adasr-lite.pth --fps 5 --frames 100

Each cell is one two-way ``adasr demo`` call (both peers in this process over loopback WebRTC) whose
every datagram, both ways, goes through ``realtime.netem.LinkImpairment`` (loss and uniform jitter; no
kernel netem needed). Per cell: the caller's voice at the callee (mouth-to-ear p50/p95, p95 after the
call's first 5 s, drift over the call, packets recovered from FEC, concealed, late), the faces rendered of
those sent, lip sync (face shown minus its voice heard, p50/p95). Writes a JSON of every report and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from realtime.audio.opus import OpusOptions  # noqa: E402
from realtime.demo import DemoOptions, run_demo_call  # noqa: E402
from realtime.netem import LinkImpairment  # noqa: E402

LOSSES = (0.0, 0.02, 0.10)
JITTERS_MS = (0.0, 30.0)


def _head(checkpoint: Path | None) -> Any:
    """The shipped model (or ``checkpoint``) through torch, or the 128 px random-weight test model."""
    import dataclasses

    import torch

    from adasr.checkpoint import load_model, save_checkpoint
    from adasr.config import load_model_config
    from adasr.networks import AdaSRNetworks
    from engines.talking_head import TalkingHead
    from engines.torch_backend import TorchBackend

    torch.set_num_threads(2)
    if checkpoint is None:
        torch.manual_seed(0)
        config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-test")
        checkpoint = save_checkpoint(Path(tempfile.mkdtemp(prefix="adasr-impaired-")) / "lite128.pth",
                                     AdaSRNetworks(config))
    return TalkingHead(TorchBackend(load_model(checkpoint)))


def _row(loss: float, jitter_ms: float, r: dict[str, Any]) -> str:
    def f(key: str) -> str:
        value = r.get(key)
        return "–" if value is None else f"{value:.0f}" if isinstance(value, float) else str(value)

    return (f"| {loss * 100:g} % | {jitter_ms:g} ms | {f('voice_delay_ms_p50')} / {f('voice_delay_ms_p95')} "
            f"({f('voice_delay_ms_p95_settled')}) | "
            f"{f('voice_delay_drift_ms')} | {f('voice_recovered')} / {f('voice_concealed')} / {f('voice_late')} "
            f"of {f('voice_packets')} | {r['frames_rendered']} / {r['frames_sent']} | "
            f"{f('av_offset_ms_p50')} / {f('av_offset_ms_p95')} | {f('e2e_latency_ms_p50')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: the 128 px test model)")
    parser.add_argument("--fps", type=float, default=10.0, help="send rate (default 10)")
    parser.add_argument("--frames", type=int, default=150, help="frames the caller sends per cell (default 150)")
    parser.add_argument("--audio-kbps", type=float, default=None, help="voice bitrate (default: the shipped 12)")
    parser.add_argument("--json", type=Path, default=Path("outputs/impaired_call.json"), help="every report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    head = _head(args.checkpoint)
    opus = OpusOptions() if args.audio_kbps is None else OpusOptions(kbps=args.audio_kbps)
    reports = []
    lines = ["| loss | jitter | voice delay p50 / p95 (p95 after 5 s) ms | drift ms | FEC / PLC / late packets "
             "| faces rendered | lip sync p50 / p95 ms | capture-to-face p50 ms |", "|---|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        for jitter_ms in JITTERS_MS:
            network = LinkImpairment(loss=loss, jitter_ms=jitter_ms, seed=1) if loss or jitter_ms else None
            options = DemoOptions(output=None, stats_json=None, fps=args.fps, max_frames=args.frames,
                                  show_progress=False, network=network, opus=opus)
            report = asyncio.run(run_demo_call(head, options))
            reports.append({"loss": loss, "jitter_ms": jitter_ms, **report})
            lines.append(_row(loss, jitter_ms, report))
            print(lines[-1], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "fps": args.fps,
                                     "frames": args.frames, "checkpoint": str(args.checkpoint),
                                     "cells": reports}, indent=2, default=str) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
