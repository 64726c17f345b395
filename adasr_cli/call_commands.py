"""``adasr send``, ``adasr receive``, ``adasr cam`` and ``adasr demo``: argument parsing and the one-line reports.

The pipeline's imports (the call, the model, mediapipe) happen when a command runs; building the
parser only reads the few constants of ``realtime.settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adasr.errors import CheckpointError
from adasr_cli.backend_args import add_backend_arguments, checkpoint_of, head_from_args
from adasr_cli.command import SubParsers
from realtime.settings import DEFAULT_PORT, SINK_CHOICES, TOKEN_ENV_VAR, SinkKind


def _add_network_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--signaling-host", default="127.0.0.1",
                   help="TCP signaling address: the sender listens on it, the receiver connects to it; loopback only, "
                        "since TCP signaling has no token (default 127.0.0.1)")
    g.add_argument("--signaling-port", type=int, default=9999, help="TCP signaling port (default 9999)")
    g.add_argument("--ice-host", action="append", default=None, metavar="ADDR",
                   help="address to offer as ICE host candidate (repeatable); default: 127.0.0.1 when the signaling "
                        "host is a loopback address (both peers on this machine), else every non-loopback interface")
    g.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for the peer (default 60)")
    g.add_argument("--stats-json", type=Path, default=None, help="write the call's statistics here as JSON")


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _transport(args: argparse.Namespace, peer_host: str) -> Any:
    """ICE host candidates: --ice-host, else loopback when the peer (or our bind address) is, else every interface."""
    from realtime.transport import LOOPBACK, TransportOptions

    hosts: tuple[str, ...] | None
    if args.ice_host:
        hosts = tuple(args.ice_host)
    else:
        hosts = LOOPBACK if _is_loopback(peer_host) else None
    return TransportOptions(ice_hosts=hosts, connect_timeout_s=args.connect_timeout)


def _add_token_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV_VAR), help=(
        f"{what} (default: ${TOKEN_ENV_VAR}, which keeps it out of the process list)"))


def _add_smoothing_arguments(p: argparse.ArgumentParser) -> None:
    sm = p.add_argument_group("motion smoothing (One-Euro)")
    sm.add_argument("--no-smoothing", dest="smoothing", action="store_false", help="send raw motion")
    sm.add_argument("--smooth-min-cutoff", type=float, default=None, metavar="HZ", help="cut-off when still (1.5)")
    sm.add_argument("--smooth-beta", type=float, default=None, help="speed coefficient (0.3)")
    sm.add_argument("--smooth-d-cutoff", type=float, default=None, metavar="HZ", help="speed estimate cut-off (1.0)")


def _add_face_lost_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face-lost", choices=["hold", "neutral"], default="hold",
                   help="while the sender's face is lost: hold the last frame (default) or ease to the portrait's "
                        "neutral pose")


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---- send -------------------------------------------------------------------------------------

def add_send(sub: SubParsers) -> None:
    """Register ``send``: call a receiver with your face's motion."""
    p = sub.add_parser("send", help="call someone: send your face's motion (a portrait's state once)", description=(
        "Capture a camera, a video or an image folder, extract the face's motion and stream it to `adasr receive` "
        "over WebRTC; the portrait's source state goes once. Type r + Enter to reset the reference pose, q + Enter "
        "to hang up."))
    p.add_argument("--source", required=True, type=Path, help="portrait image the receiver will see")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, help="camera index (cv2.VideoCapture)")
    src.add_argument("--video", type=Path, help="video file")
    src.add_argument("--images", type=Path, help="folder of images, in name order")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the source's; 25 for a folder)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--loop", action="store_true", help="replay a video or folder from the start when it ends")
    p.add_argument("--no-crop", dest="crop", action="store_false", help="frames already are square face crops")
    p.add_argument("--no-source-crop", dest="source_crop", action="store_false",
                   help="the portrait already is a square face crop")
    st = p.add_argument_group("source state")
    st.add_argument("--send-image", action="store_true",
                    help="send the portrait crop instead of the feature volume (fewer bytes; the receiver encodes it)")
    st.add_argument("--quantization", choices=["fp16", "int8", "fp32"], default="fp16",
                    help="feature-volume quantisation (default fp16)")
    st.add_argument("--compression", choices=["zlib", "lzma", "none"], default="zlib", help="(default zlib)")
    _add_smoothing_arguments(p)
    p.add_argument("--reset-at", type=int, action="append", default=[], metavar="FRAME",
                   help="reset the receiver's reference pose at this capture frame (repeatable)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    http = p.add_argument_group("calling a receiver's HTTP endpoint (what `adasr receive` prints)")
    http.add_argument("--url", default=None, help="http://HOST:PORT of `adasr receive` (without it: TCP signaling, "
                                                  "this side listening on --signaling-host/--signaling-port)")
    _add_token_argument(http, "the token `adasr receive` printed")
    _add_network_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_send)


def _smoothing(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from adasr.one_euro import OneEuroParams
    from realtime.smoothing import SmoothingOptions

    params = OneEuroParams()
    changes = {name: value for name, value in (("min_cutoff_hz", args.smooth_min_cutoff), ("beta", args.smooth_beta),
                                               ("d_cutoff_hz", args.smooth_d_cutoff)) if value is not None}
    return SmoothingOptions(enabled=args.smoothing, filter=replace(params, **changes))


def run_send(args: argparse.Namespace) -> int:
    from adasr.video_io import read_image
    from realtime.call import run_sender
    from realtime.capture import CaptureOptions
    from realtime.http_signaling import HttpSignaling, offer_url
    from realtime.sender import SenderOptions, SourceOptions
    from realtime.signaling import tcp_signaling

    read_image(args.source)  # refuse a bad portrait before loading anything
    if args.url is not None:
        signaling: Any = HttpSignaling(args.url, args.token or "", timeout_s=args.connect_timeout)
        peer_host = urlsplit(offer_url(args.url)).hostname or ""
        waiting = f"calling {signaling.url}"
    else:
        signaling = tcp_signaling(args.signaling_host, args.signaling_port)
        peer_host = args.signaling_host
        waiting = f"waiting for `adasr receive` on {args.signaling_host}:{args.signaling_port}"
    options = SenderOptions(
        capture=CaptureOptions(camera=args.camera, video=args.video, images=args.images, fps=args.fps,
                               max_frames=args.max_frames, loop=args.loop),
        source=SourceOptions(args.source, send_image=args.send_image, quantization=args.quantization,
                             compression=args.compression, crop=args.source_crop),
        smoothing=_smoothing(args), crop=args.crop, reset_at_frames=tuple(args.reset_at), show_progress=args.progress)
    head = head_from_args(args)
    transport = _transport(args, peer_host)
    print(f"adasr send: {waiting}", file=sys.stderr)
    stats = asyncio.run(run_sender(head, options, signaling, transport))
    summary = {
        "frames_captured": stats.frames_captured, "frames_sent": stats.frames_sent,
        "frames_skipped": stats.frames_skipped, "face_lost_frames": stats.face_lost_frames,
        "motion_payload_bytes_per_frame": stats.motion_bytes / max(stats.frames_sent, 1),
        "source_state_bytes": stats.source_state_bytes, "source_state_kind": stats.source_kind,
        "resets_sent": stats.resets_sent, "receiver_vanished": stats.peer_timed_out,
        "send_fps_followed": stats.send_fps,
        "peer_frames_rendered": stats.peer.frames_rendered if stats.peer else None,
        "peer_frames_dropped": stats.peer.frames_dropped if stats.peer else None,
    }
    _write_json(args.stats_json, summary)
    print("adasr send: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if stats.peer_timed_out:  # the call did not end as agreed: say so, and in the exit status
        print("adasr send: the receiver vanished (it stopped answering): its numbers above may be stale",
              file=sys.stderr)
        return 1
    return 0


# ---- receive ----------------------------------------------------------------------------------

def add_receive(sub: SubParsers) -> None:
    """Register ``receive``: take calls and render the caller's face."""
    p = sub.add_parser("receive", help="take calls: render the sender's face from its motion", description=(
        "Serve POST /offer over HTTP (a bearer token, one call at a time) and, for each call, rebuild the sender's "
        "source state and render the newest motion to a virtual camera, a window, an mp4 or nowhere. With "
        "--signaling tcp, connect to one `adasr send` over aiortc's TCP signaling instead."))
    p.add_argument("--sink", choices=SINK_CHOICES, default=None,
                   help="where frames go (default: file when --output is given, else window)")
    p.add_argument("--output", type=Path, default=None, help="OUT.mp4 or a folder, for --sink file")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the virtual camera or the file (30)")
    p.add_argument("--vcam-device", default=None, help="virtual camera device (e.g. /dev/video10)")
    p.add_argument("--overlay", action="store_true", help="draw live statistics on the frames")
    p.add_argument("--absolute", dest="relative", action="store_false",
                   help="absolute motion (default: relative to the first received motion)")
    _add_face_lost_argument(p)
    p.add_argument("--peer-timeout", type=float, default=5.0,
                   help="seconds without any message before the sender counts as vanished and the call ends (5)")
    http = p.add_argument_group("HTTP signaling (the default)")
    http.add_argument("--signaling", choices=["http", "tcp"], default="http",
                      help="http: serve POST /offer (default); tcp: aiortc's TCP signaling, for scripts")
    http.add_argument("--bind", default="127.0.0.1",
                      help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    http.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    _add_token_argument(http, "the secret senders must present (default: a new random one, printed at start)")
    http.add_argument("--max-calls", type=int, default=0, help="exit after N calls (default 0: serve until Ctrl-C)")
    _add_network_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_receive)


def _receive_summary(stats: Any) -> dict[str, Any]:
    from realtime.stats import summarize

    summary: dict[str, Any] = {
        "frames_received": stats.frames_accepted, "frames_rendered": stats.frames_rendered,
        "frames_dropped": stats.frames_dropped, "frames_face_lost": stats.frames_face_lost,
        "frames_before_source": stats.frames_before_source, "packets_rejected": stats.motion.dropped,
        "packets_out_of_order": stats.motion.out_of_order, "motion_gaps": stats.motion_gaps,
        "source_state_bytes": stats.source_state_bytes, "source_errors": stats.source_errors,
        "peer_frames_sent": stats.peer.frames_sent if stats.peer else None, "end_reason": stats.end_reason,
    }
    summary.update(summarize(stats.render_ms, "render_ms"))
    summary.update(summarize(stats.e2e_ms, "e2e_latency_ms"))  # one clock only when both peers share a host
    return summary


def _print_summary(command: str, summary: dict[str, Any]) -> None:
    shown = {k: v for k, v in summary.items() if not k.endswith(("_p90", "_mean"))}
    print(f"adasr {command}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in shown.items()))


def run_receive(args: argparse.Namespace) -> int:
    from realtime.call import run_receiver, serve_calls
    from realtime.http_signaling import OfferServer, OfferServerOptions, generate_token
    from realtime.receiver import ReceiverOptions
    from realtime.signaling import tcp_signaling
    from realtime.sinks import ThreadedSink, open_sink, require_display

    kind: SinkKind = args.sink or ("file" if args.output is not None else "window")
    if kind == "window":
        require_display()  # a headless machine: refused now, not by a Qt abort at the first call's first frame
    options = ReceiverOptions(relative=args.relative, overlay=args.overlay, face_lost=args.face_lost,
                              peer_timeout_s=args.peer_timeout)
    if args.signaling == "tcp":
        head = head_from_args(args)
        sink = open_sink(kind, width=head.size, height=head.size, fps=args.fps, output=args.output,
                         device=args.vcam_device)
        print(f"adasr receive: calling {args.signaling_host}:{args.signaling_port}", file=sys.stderr)
        stats = asyncio.run(run_receiver(head, options, sink, tcp_signaling(args.signaling_host, args.signaling_port,
                                                                            args.connect_timeout),
                                         _transport(args, args.signaling_host)))
        summary = _receive_summary(stats)
        _write_json(args.stats_json, summary)
        _print_summary("receive", summary)
        return 0

    token = args.token or generate_token()
    server = OfferServerOptions(token=token, host=args.bind, port=args.port)  # refuses a short token now
    head = head_from_args(args)
    sink = open_sink(kind, width=head.size, height=head.size, fps=args.fps, output=args.output,
                     device=args.vcam_device)
    if not isinstance(sink, ThreadedSink):  # every call renders on its own thread: one output thread for all
        sink = ThreadedSink(sink, args.fps, repeat_last=kind == "window")
    summaries: list[dict[str, Any]] = []

    def on_ready(offers: OfferServer) -> None:
        shown = token if not args.token else "<your token>"
        print(f"adasr receive: waiting for calls on {offers.url}/offer", file=sys.stderr)
        if not args.token:
            print(f"adasr receive: token {token}", file=sys.stderr)
        print(f"adasr receive: call with: adasr send --url {offers.url} --token {shown} --source PORTRAIT --camera 0",
              file=sys.stderr)

    def on_call_end(stats: Any) -> None:
        summary = _receive_summary(stats)
        summaries.append(summary)
        _write_json(args.stats_json, {"calls": summaries})
        _print_summary("receive", summary)

    asyncio.run(serve_calls(head, options, sink, server, _transport(args, args.bind), max_calls=args.max_calls,
                            on_ready=on_ready, on_call_end=on_call_end))
    return 0


# ---- cam --------------------------------------------------------------------------------------

def add_cam(sub: SubParsers) -> None:
    """Register ``cam``: the local virtual webcam."""
    p = sub.add_parser("cam", help="virtual webcam for Zoom/Meet: your motion, the portrait's face", description=(
        "One process, no network: camera → face tracker → motion → render → virtual camera (or a window, or an "
        "mp4). The rendered face is pasted into the portrait's own framing at the output size. Commands: p "
        "passthrough (the real camera), f freeze, r reset the reference pose, q quit (keys in the window; otherwise "
        "type them + Enter). Needs a virtual camera device: v4l2loopback on Linux, OBS Virtual Camera on "
        "Windows and macOS."))
    p.add_argument("--source", required=True, type=Path, help="portrait whose face is shown")
    p.add_argument("--camera", default="0", metavar="INDEX|VIDEO",
                   help="camera index (cv2.VideoCapture) or a video file standing in for the camera (default 0)")
    p.add_argument("--sink", choices=SINK_CHOICES, default="virtualcam", help="where frames go (default virtualcam)")
    p.add_argument("--output", type=Path, default=None, help="OUT.mp4 or a folder, for --sink file")
    p.add_argument("--width", type=int, default=1280, help="output width (default 1280)")
    p.add_argument("--height", type=int, default=720, help="output height (default 720)")
    p.add_argument("--fps", type=float, default=30.0, help="camera and output frame rate (default 30)")
    p.add_argument("--vcam-device", default=None, help="virtual camera device (e.g. /dev/video10)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N camera frames")
    p.add_argument("--loop", action="store_true", help="replay a video from the start when it ends")
    p.add_argument("--no-crop", dest="crop", action="store_false", help="camera frames already are square face crops")
    p.add_argument("--no-source-crop", dest="source_crop", action="store_false",
                   help="the portrait already is a square face crop")
    p.add_argument("--absolute", dest="relative", action="store_false",
                   help="absolute motion (default: relative to the first pose, and to each reset)")
    _add_face_lost_argument(p)
    _add_smoothing_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_cam)


def run_cam(args: argparse.Namespace) -> int:
    from adasr.video_io import read_image
    from realtime.capture import CaptureOptions, open_reader
    from realtime.sinks import open_sink
    from realtime.webcam import LocalWebcam, WebcamOptions

    read_image(args.source)  # refuse a bad portrait before anything else
    camera = args.camera.strip()
    capture = CaptureOptions(camera=int(camera), fps=args.fps, max_frames=args.max_frames) if camera.isdigit() else \
        CaptureOptions(video=Path(camera), fps=args.fps, max_frames=args.max_frames, loop=args.loop)
    webcam = LocalWebcam(WebcamOptions(
        portrait=args.source, capture=capture, width=args.width, height=args.height, fps=args.fps,
        source_crop=args.source_crop, crop=args.crop, smoothing=_smoothing(args), relative=args.relative,
        face_lost=args.face_lost))
    # The device first: with no virtual camera, exit now (NoVirtualCamera names the fix), before any model loads.
    sink = open_sink(args.sink, width=args.width, height=args.height, fps=args.fps, output=args.output,
                     device=args.vcam_device, on_key=webcam.press)
    try:
        open_reader(capture).close()  # a missing camera or video, also before the model
        head = head_from_args(args)
    except BaseException:
        sink.close()
        raise
    if args.sink != "window" and sys.stdin and sys.stdin.isatty():
        print("adasr cam: type p (passthrough), f (freeze), r (reset the pose) or q (quit), then Enter", file=sys.stderr)
    asyncio.run(webcam.run(head, sink))
    _print_summary("cam", webcam.summary())
    return 0


# ---- demo -------------------------------------------------------------------------------------

def add_demo(sub: SubParsers) -> None:
    """Register ``demo``: the loopback call of the shipped demo."""
    p = sub.add_parser("demo", help="the shipped demo: a loopback WebRTC call, astronaut driven by carphone",
                       description=(
                           "Both peers in one process over a real WebRTC connection on loopback: the sender streams "
                           "the carphone clip's motion, the receiver renders the astronaut. Writes a side-by-side mp4 "
                           "(driving crop | received render) and the call's statistics."))
    p.add_argument("--output", type=Path, default=Path("outputs/demo.mp4"), help="side-by-side mp4")
    p.add_argument("--stats-json", type=Path, default=Path("outputs/demo-stats.json"), help="statistics as JSON")
    p.add_argument("--fps", type=float, default=None,
                   help="send rate (default: what this machine sustains for both peers, at most the clip's 30)")
    p.add_argument("--max-frames", type=int, default=None, help="send at most N clip frames")
    p.add_argument("--send-image", action="store_true", help="send the portrait instead of the feature volume")
    p.add_argument("--quantization", choices=["fp16", "int8", "fp32"], default="fp16")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_backend_arguments(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from adasr.checkpoint import DEFAULT_CHECKPOINT
    from realtime.demo import DemoOptions, format_report, run_demo_call, write_report

    if args.backend == "torch" and checkpoint_of(args) == DEFAULT_CHECKPOINT and not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the demo's weights {DEFAULT_CHECKPOINT} are missing: they ship with the repository (restore them with "
            f"`git checkout -- weights/`), or pass --checkpoint PATH [--config YAML] to run the demo with others")
    head = head_from_args(args)
    options = DemoOptions(output=args.output, stats_json=args.stats_json, fps=args.fps, max_frames=args.max_frames,
                          send_image=args.send_image, quantization=args.quantization, show_progress=args.progress)
    report = asyncio.run(run_demo_call(head, options))
    report["checkpoint"] = str(checkpoint_of(args))
    write_report(report, args.stats_json)
    print(f"adasr demo: {report['frames_rendered']} of {report['frames_sent']} frames rendered over a loopback "
          f"WebRTC call ({report['backend']})")
    print(format_report(report))
    if args.output:
        print(f"  video: {args.output}")
    if args.stats_json:
        print(f"  stats: {args.stats_json}")
    return 0

