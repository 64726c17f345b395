"""Soak test: one loopback two-way call with voice for N minutes, watching frames, drops, memory and voice delay.

    python benchmarks/soak.py                       # 10 minutes at 10 fps, random-weight lite model at 128 px
    python benchmarks/soak.py --minutes 60 --fps 30 --checkpoint weights/adasr-lite.pth

The receiver runs in this process (the HTTP offer endpoint on 127.0.0.1, a token, a NullSink), the
sender is a real ``adasr send --url ... --video carphone --loop`` subprocess, so the figures are the
receiver's alone and the whole product path is exercised: HTTP signaling, ICE on loopback, DTLS, SCTP
data channels, the source transfer, motion at a steady rate, STATS both ways, GOODBYE at the end. The call is
two-way (issue #25): the receiver answers with its own face (the same clip, looped) and a synthetic voice, the
sender sends a synthetic voice too and renders the receiver's face into ``soak-callee.mp4``; ``--one-way`` for
the old call. The voice's mouth-to-ear delay at the receiver is sampled with the rest: its median over the
first minute and over the last are compared.

Every ``--interval`` seconds it records the receiver's frame counters and its resident memory
(VmRSS from /proc/self/status; the sender's too, from /proc/PID/status). Memory growth is measured
from a warmed-up baseline (the first sample after ``--warmup`` seconds: allocator pools, torch
caches and aiortc's buffers fill up first) to the last sample. Writes ``soak.json`` and ``soak.png``
in ``--out``; exits 1 when growth exceeds ``--max-growth`` percent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adasr.demo_media import astronaut_portrait, carphone_clip  # noqa: E402
from realtime.audio.recording import synthetic_voice  # noqa: E402
from realtime.audio.voice import VoiceOptions  # noqa: E402
from realtime.call import Answering, serve_calls  # noqa: E402
from realtime.capture import CaptureOptions  # noqa: E402
from realtime.http_signaling import OfferServer, OfferServerOptions, generate_token  # noqa: E402
from realtime.receiver import Receiver, ReceiverOptions, ReceiverStats  # noqa: E402
from realtime.sender import SenderOptions, SourceOptions  # noqa: E402
from realtime.sinks import NullSink  # noqa: E402
from realtime.transport import LOOPBACK, TransportOptions  # noqa: E402

logger = logging.getLogger("soak")


@dataclass
class Sample:
    """One reading of the call."""

    t_s: float
    """Seconds since the soak started."""
    rss_mib: float
    """Receiver (this process) resident memory."""
    sender_rss_mib: float | None
    """Sender process resident memory (None where /proc is missing)."""
    frames_received: int
    """MOTION packets accepted."""
    frames_rendered: int
    """Frames rendered."""
    frames_dropped: int
    """Accepted frames replaced before rendering (latest wins)."""
    packets_rejected: int
    """Motion messages dropped by validation (malformed, duplicate, late...)."""
    frames_sent_by_peer: int | None
    """The sender's count, from its latest STATS."""
    motion_gaps: int
    """Gaps in motion longer than the receiver's threshold."""
    voice_delay_ms: float | None = None
    """Median mouth-to-ear delay of the sender's voice over the last interval (None: no voice played yet)."""


def rss_mib(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (VmRSS), None when /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def own_rss_mib() -> float:
    """This process's resident memory; the peak (ru_maxrss) where /proc is missing."""
    current = rss_mib()
    if current is not None:
        return current
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def random_lite_checkpoint(folder: Path) -> Path:
    """The lite preset at 128 px with random weights (seed 0): every code path, a low CPU cost per frame."""
    import dataclasses

    from adasr.checkpoint import save_checkpoint
    from adasr.config import load_model_config
    from adasr.networks import AdaSRNetworks

    torch.manual_seed(0)
    config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-soak")
    return save_checkpoint(folder / "lite128-random.pth", AdaSRNetworks(config))


def take_sample(t_s: float, receiver: Receiver | None, sender_pid: int | None, interval_s: float) -> Sample:
    s = receiver.stats if receiver is not None else ReceiverStats()
    recent = list(s.voice.delay_ms)[-max(int(interval_s / 0.04), 1):] if s.voice is not None else []
    return Sample(t_s=round(t_s, 2), rss_mib=round(own_rss_mib(), 2),
                  sender_rss_mib=rss_mib(sender_pid) if sender_pid else None,
                  frames_received=s.frames_accepted, frames_rendered=s.frames_rendered,
                  frames_dropped=s.frames_dropped, packets_rejected=s.motion.dropped,
                  frames_sent_by_peer=s.peer.frames_sent if s.peer else None, motion_gaps=s.motion_gaps,
                  voice_delay_ms=round(float(np.median(recent)), 2) if recent else None)


async def soak(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    """Run the call, sample it, end it with the sender's GOODBYE; returns the report."""
    from adasr.checkpoint import load_model
    from engines.talking_head import TalkingHead
    from engines.torch_backend import TorchBackend

    torch.set_num_threads(args.threads)
    head = TalkingHead(TorchBackend(load_model(checkpoint)))
    token = generate_token()
    live: dict[str, Any] = {"receiver": None, "process": None}
    sender_log = (args.out / "soak-sender.log").open("w")

    voice = synthetic_voice(args.out / "soak-voice.wav", args.minutes * 60 + 120)
    answering = Answering()
    if not args.one_way:
        face = SenderOptions(capture=CaptureOptions(video=carphone_clip(), fps=args.fps, loop=True),
                             source=SourceOptions(astronaut_portrait()), show_progress=False)
        answering = Answering(face=face, voice=VoiceOptions(file=voice, microphone=False))

    def on_ready(server: OfferServer) -> None:
        command = [sys.executable, "-m", "adasr_cli", "send", "--url", server.url,
                   "--source", str(astronaut_portrait()),
                   "--video", str(carphone_clip()), "--loop", "--fps", str(args.fps), "--checkpoint", str(checkpoint),
                   "--threads", str(args.threads), "--no-progress", "--stats-json", str(args.out / "soak-sender.json"),
                   "--audio", str(voice)]
        command += (["--sink", "none"] if args.one_way else
                    ["--sink", "file", "--output", str(args.out / "soak-callee.mp4"), "--audio-out", os.devnull])
        live["process"] = subprocess.Popen(command, cwd=REPO, stdout=sender_log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "ADASR_TOKEN": token})
        logger.info("sender started (pid %d): %s", live["process"].pid, " ".join(command[2:]))

    ended: list[ReceiverStats] = []
    serving = asyncio.ensure_future(serve_calls(
        head, ReceiverOptions(), NullSink(), OfferServerOptions(token=token, port=0),
        TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=120), max_calls=1, on_ready=on_ready,
        on_receiver=lambda r: live.__setitem__("receiver", r), on_call_end=ended.append, answering=answering))
    samples: list[Sample] = []
    start = time.monotonic()
    deadline = start + args.minutes * 60
    try:
        while time.monotonic() < deadline and not serving.done():
            await asyncio.wait({serving}, timeout=min(args.interval, max(deadline - time.monotonic(), 0.01)))
            process = live["process"]
            samples.append(take_sample(time.monotonic() - start, live["receiver"], process.pid if process else None,
                                       args.interval))
            last = samples[-1]
            logger.info("%6.0f s  rss %.1f MiB  rendered %d  dropped %d  rejected %d", last.t_s, last.rss_mib,
                        last.frames_rendered, last.frames_dropped, last.packets_rejected)
            if process is not None and process.poll() is not None:
                logger.error("the sender exited with status %s: see %s", process.returncode, sender_log.name)
                break
        ended_early = time.monotonic() < deadline
        process = live["process"]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # the sender says GOODBYE and exits
        try:
            await asyncio.wait_for(asyncio.shield(serving), 60)
        except asyncio.TimeoutError:
            serving.cancel()
    finally:
        process = live["process"]
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        sender_log.close()
    stats = ended[0] if ended else (live["receiver"].stats if live["receiver"] is not None else ReceiverStats())
    return build_report(args, checkpoint, samples, stats, ended_early)


def build_report(args: argparse.Namespace, checkpoint: Path, samples: list[Sample], stats: ReceiverStats,
                 ended_early: bool) -> dict[str, Any]:
    """Frames, drops and memory growth from the samples."""
    warm = [s for s in samples if s.t_s >= args.warmup] or samples[-1:]
    baseline, end = warm[0], samples[-1]
    growth = (end.rss_mib - baseline.rss_mib) / baseline.rss_mib * 100 if baseline.rss_mib else 0.0
    slope = None
    if len(warm) >= 3:
        t = np.array([s.t_s for s in warm]) / 60
        slope = float(np.polyfit(t, [s.rss_mib for s in warm], 1)[0])
    duration = end.t_s
    sent = stats.peer.frames_sent if stats.peer else end.frames_sent_by_peer
    first = [s.voice_delay_ms for s in samples if s.voice_delay_ms is not None and s.t_s <= samples[0].t_s + 60]
    last = [s.voice_delay_ms for s in samples if s.voice_delay_ms is not None and s.t_s >= end.t_s - 60]
    first_ms = float(np.median(first)) if first else None
    last_ms = float(np.median(last)) if last else None
    return {
        "minutes_requested": args.minutes, "duration_s": duration, "fps_target": args.fps,
        "model": "random-weight lite at 128 px (benchmarks/soak.py)" if args.checkpoint is None else str(checkpoint),
        "threads": args.threads,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "ended_early": ended_early, "end_reason": stats.end_reason,
        "frames_sent": sent, "frames_received": stats.frames_accepted, "frames_rendered": stats.frames_rendered,
        "frames_dropped_latest_wins": stats.frames_dropped,
        "frames_lost_in_network": (sent - stats.motion.received) if sent is not None else None,
        "packets_rejected": stats.motion.dropped, "render_errors": stats.render_errors,
        "motion_gaps": stats.motion_gaps, "longest_gap_s": round(stats.longest_gap_s, 3),
        "fps_rendered": stats.frames_rendered / duration if duration else 0.0,
        "warmup_s": args.warmup,
        "rss_baseline_mib": baseline.rss_mib, "rss_baseline_at_s": baseline.t_s, "rss_end_mib": end.rss_mib,
        "rss_max_mib": max(s.rss_mib for s in samples), "rss_growth_percent": round(growth, 3),
        "rss_slope_mib_per_min": round(slope, 4) if slope is not None else None,
        "sender_rss_baseline_mib": baseline.sender_rss_mib, "sender_rss_end_mib": end.sender_rss_mib,
        "two_way": not args.one_way, "own_frames_sent": stats.own_face.frames_sent if stats.own_face else None,
        "own_frames_rendered_by_peer": stats.own_face.peer.frames_rendered if stats.own_face and stats.own_face.peer
        else None,
        "voice_delay_ms_first_minute": first_ms, "voice_delay_ms_last_minute": last_ms,
        "voice_delay_change_ms": (last_ms - first_ms) if first_ms is not None and last_ms is not None else None,
        "samples": [asdict(s) for s in samples],
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Memory and render rate over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = np.array([s["t_s"] for s in samples]) / 60
    rendered = np.array([s["frames_rendered"] for s in samples], dtype=float)
    rate = np.diff(rendered, prepend=0) / np.maximum(np.diff(t * 60, prepend=0), 1e-9)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(t, [s["rss_mib"] for s in samples], label="receiver RSS")
    if samples[0]["sender_rss_mib"] is not None:
        top.plot(t, [s["sender_rss_mib"] for s in samples], label="sender RSS", alpha=0.6)
    top.axvline(report["rss_baseline_at_s"] / 60, color="grey", linestyle=":", label="baseline (after warm-up)")
    top.set_ylabel("MiB")
    top.set_title(f"soak: {report['duration_s'] / 60:.1f} min at {report['fps_target']} fps, receiver memory growth "
                  f"{report['rss_growth_percent']:+.2f} %")
    top.legend(loc="lower right")
    bottom.plot(t, rate, label="frames rendered / s")
    bottom.plot(t, np.diff([s["frames_dropped"] for s in samples], prepend=0), label="dropped per interval")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="call duration (default 10)")
    parser.add_argument("--fps", type=float, default=10.0, help="sender frame rate (default 10: light on a shared CPU)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory baseline (default 60)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights for both peers (default: a random-weight lite model at 128 px)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per peer (default 1)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "soak", help="folder for soak.json and soak.png")
    parser.add_argument("--max-growth", type=float, default=5.0, help="fail above this memory growth in %% (5)")
    parser.add_argument("--one-way", action="store_true", help="the receiver only watches (no face, no voice back)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("realtime", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.warmup = min(args.warmup, args.minutes * 60 / 4)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_lite_checkpoint(Path(tmp))
        report = asyncio.run(soak(args, checkpoint))
    (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "soak.png")
    print(f"soak: {report['duration_s'] / 60:.1f} min, {report['frames_sent']} frames sent, "
          f"{report['frames_rendered']} rendered ({report['fps_rendered']:.1f} fps), "
          f"{report['frames_dropped_latest_wins']} dropped (latest wins), {report['frames_lost_in_network']} lost in "
          f"the network, {report['packets_rejected']} rejected; receiver RSS {report['rss_baseline_mib']:.1f} MiB "
          f"(at {report['rss_baseline_at_s']:.0f} s) → {report['rss_end_mib']:.1f} MiB = "
          f"{report['rss_growth_percent']:+.2f} % ({report['rss_slope_mib_per_min']} MiB/min); "
          f"ended: {report['end_reason'] or 'n/a'}; voice delay {report['voice_delay_ms_first_minute']} ms in the "
          f"first minute, {report['voice_delay_ms_last_minute']} ms in the last")
    print(f"  {args.out / 'soak.json'}, {args.out / 'soak.png'}")
    return 1 if report["rss_growth_percent"] > args.max_growth or report["ended_early"] else 0


if __name__ == "__main__":
    sys.exit(main())
