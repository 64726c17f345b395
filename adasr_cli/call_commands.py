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
from realtime.settings import (AUDIO_FRAME_MS_CHOICES, DEFAULT_AUDIO_FRAME_MS, DEFAULT_AUDIO_KBPS, DEFAULT_PORT,
                               SINK_CHOICES, TOKEN_ENV_VAR, TURN_PASSWORD_ENV, TURN_USER_ENV, SinkKind)


def _add_network_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--signaling-host", default="127.0.0.1",
                   help="with --signaling tcp: the address the sender listens on and the receiver connects to; "
                        "LOOPBACK ONLY (TCP signaling has no token and no encryption; between machines use "
                        "`adasr receive`'s HTTPS endpoint and `adasr send --url`) (default 127.0.0.1)")
    g.add_argument("--signaling-port", type=int, default=9999, help="TCP signaling port (default 9999)")
    g.add_argument("--ice-host", action="append", default=None, metavar="ADDR",
                   help="address to offer as ICE host candidate (repeatable); default: 127.0.0.1 when the signaling "
                        "host is a loopback address (both peers on this machine), else every non-loopback interface")
    g.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for the peer (default 60)")
    g.add_argument("--stats-json", type=Path, default=None, help="write the call's statistics here as JSON")
    _add_ice_arguments(p)


def _add_ice_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("across NATs (STUN/TURN; none by default, so no third party is contacted)")
    g.add_argument("--stun", metavar="URL", default=None, help="one STUN server: stun:HOST[:PORT]")
    g.add_argument("--turn", metavar="URL", default=None,
                   help="one TURN server: turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT] (TLS)")
    g.add_argument("--turn-user", default=None, help=f"TURN user name (default ${TURN_USER_ENV})")
    g.add_argument("--turn-password", default=None,
                   help=f"TURN password (default ${TURN_PASSWORD_ENV}, which keeps it out of the process list)")
    g.add_argument("--turn-ca", type=Path, default=None, metavar="PEM",
                   help="CA (or self-signed certificate) a turns: server is verified against")
    g.add_argument("--relay-only", action="store_true",
                   help="send everything through the TURN server (hides both peers' addresses; needs --turn)")


def _ice(args: argparse.Namespace) -> Any:
    from realtime.ice import IceOptions

    return IceOptions.with_environment(stun=args.stun, turn=args.turn, turn_user=args.turn_user,
                                       turn_password=args.turn_password, turn_ca=args.turn_ca,
                                       relay_only=args.relay_only)


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
    return TransportOptions(ice_hosts=hosts, ice=_ice(args), connect_timeout_s=args.connect_timeout)


def _add_token_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    p.add_argument("--token", default=None, help=(
        f"{what} (default: ${TOKEN_ENV_VAR} or --token-file: a token typed here shows in the process list)"))
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE", help="read the token from this file")


def _token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The token and where it came from (--token, --token-file, $ADASR_TOKEN); (None, "") when none was given."""
    if args.token:
        return args.token, "--token"
    if args.token_file is not None:
        try:
            return args.token_file.read_text().strip(), f"--token-file {args.token_file}"
        except OSError as exc:
            raise SystemExit(f"cannot read --token-file {args.token_file}: {exc.strerror or exc}") from None
    if os.environ.get(TOKEN_ENV_VAR):
        return os.environ[TOKEN_ENV_VAR], f"${TOKEN_ENV_VAR}"
    return None, ""


def _device(text: str | None) -> str | int | None:
    """A sound device as typed: an index or a name; None: the system's default."""
    return None if text in (None, "", "default") else int(text) if text.strip().isdigit() else text


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
    _add_capture_arguments(p, required=True)
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the source's; 25 for a folder)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
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
    _add_voice_arguments(p, "voice (Opus, our own encoder)", "on by default with the system's default microphone")
    watch = p.add_argument_group("the receiver's face and voice (a two-way call, when it answers with them)")
    watch.add_argument("--sink", choices=SINK_CHOICES, default=None,
                       help="where the receiver's face goes (default: file when --output is given, else a window where "
                            "there is a display, else none); none: a one-way call, your face only")
    watch.add_argument("--output", type=Path, default=None, help="OUT.mp4 or a folder, for --sink file")
    watch.add_argument("--vcam-device", default=None, help="virtual camera device (e.g. /dev/video10)")
    add_hearing_arguments(watch, "the receiver's")
    http = p.add_argument_group("calling a receiver (what `adasr receive` printed)")
    http.add_argument("--url", default=None,
                      help="https://HOST:PORT of `adasr receive` (required unless --signaling tcp)")
    http.add_argument("--pin", default=None, metavar="SHA256",
                      help="the receiver's certificate fingerprint `adasr receive` printed: any other certificate "
                           "is refused before the token is sent")
    _add_token_arguments(http, "the token `adasr receive` printed")
    http.add_argument("--signaling", choices=["http", "tcp"], default="http",
                      help="http: call --url (default); tcp: aiortc's TCP signaling with a receiver on THIS machine "
                           "(loopback only, no token), this side listening on --signaling-host/--signaling-port")
    _add_network_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_send)


def _add_capture_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    """Where this side's face comes from (``send``; ``receive`` answering with its face)."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--camera", type=int, help="camera index (cv2.VideoCapture)")
    src.add_argument("--video", type=Path, help="video file")
    src.add_argument("--images", type=Path, help="folder of images, in name order")
    p.add_argument("--loop", action="store_true", help="replay a video or folder from the start when it ends")
    p.add_argument("--no-crop", dest="crop", action="store_false", help="frames already are square face crops")
    p.add_argument("--no-source-crop", dest="source_crop", action="store_false",
                   help="the portrait already is a square face crop")


def _add_voice_arguments(p: argparse.ArgumentParser, title: str, mic_default: str) -> None:
    """This side's voice: microphone, file or none, and its coding."""
    voice = p.add_argument_group(title)
    source = voice.add_mutually_exclusive_group()
    source.add_argument("--mic", nargs="?", const="default", default=None, metavar="DEVICE",
                        help="capture this microphone (index or name; `python -m sounddevice` lists them); "
                             f"{mic_default}; none here: the call goes on silent")
    source.add_argument("--audio", type=Path, default=None, metavar="FILE",
                        help="send this sound file instead of the microphone (any format PyAV reads)")
    source.add_argument("--no-audio", action="store_true", help="send no voice")
    voice.add_argument("--audio-kbps", type=float, default=DEFAULT_AUDIO_KBPS,
                       help=f"Opus bitrate (default {DEFAULT_AUDIO_KBPS:g})")
    voice.add_argument("--audio-frame-ms", type=int, choices=AUDIO_FRAME_MS_CHOICES, default=DEFAULT_AUDIO_FRAME_MS,
                       help=f"audio per packet (default {DEFAULT_AUDIO_FRAME_MS}: the whole call stays under 64 kbps; "
                            "20 costs ~14 kbps of headers more and ~80 ms less delay)")


def _voice(args: argparse.Namespace, microphone: bool) -> Any:
    """The VoiceOptions the voice arguments ask for (``microphone``: capture it when nothing else is said)."""
    from realtime.audio.opus import OpusOptions
    from realtime.audio.voice import VoiceOptions

    if args.no_audio or not (args.audio is not None or args.mic is not None or microphone):
        return None
    return VoiceOptions(file=args.audio, microphone=args.audio is None, device=_device(args.mic),
                        opus=OpusOptions(kbps=args.audio_kbps, frame_ms=args.audio_frame_ms))


def add_hearing_arguments(group: argparse._ArgumentGroup, whose: str) -> None:
    """Where the peer's voice goes: a speaker or a WAV file."""
    group.add_argument("--speaker", nargs="?", const="default", default="default", metavar="DEVICE",
                       help=f"play {whose} voice on this output (index or name); on by default with the system's "
                            "default output; none here: the call goes on silent")
    group.add_argument("--audio-out", type=Path, default=None, metavar="FILE.wav",
                       help=f"write {whose} voice to this WAV file instead of playing it")


def open_hearing_sink(args: argparse.Namespace) -> Any:
    """Opens where the peer's voice goes (called when it arrives)."""
    from realtime.audio.playout import open_audio_sink

    return open_audio_sink(args.audio_out, speaker=args.audio_out is None, device=_device(args.speaker))


def _capture(args: argparse.Namespace, fps: float | None, max_frames: int | None) -> Any:
    from realtime.capture import CaptureOptions

    return CaptureOptions(camera=args.camera, video=args.video, images=args.images, fps=fps, max_frames=max_frames,
                          loop=args.loop)


def _smoothing(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from adasr.one_euro import OneEuroParams
    from realtime.smoothing import SmoothingOptions

    params = OneEuroParams()
    changes = {name: value for name, value in (("min_cutoff_hz", args.smooth_min_cutoff), ("beta", args.smooth_beta),
                                               ("d_cutoff_hz", args.smooth_d_cutoff)) if value is not None}
    return SmoothingOptions(enabled=args.smoothing, filter=replace(params, **changes))


def _watch_sink(args: argparse.Namespace) -> SinkKind:
    """Where ``send`` shows the receiver's face (``none``: a one-way call, the receiver's voice not heard either);
    a window where none can open is refused now, before the model loads."""
    from realtime.sinks import require_display

    kind: SinkKind = args.sink or ("file" if args.output is not None else "window" if _has_display() else "none")
    if kind == "window":
        require_display()
    if kind == "none" and args.sink is None:
        print("adasr send: no display here: the receiver's face is not shown (--sink file --output OUT.mp4 keeps it)",
              file=sys.stderr)
    return kind


def _has_display() -> bool:
    from realtime.sinks import require_display

    try:
        require_display()
    except Exception:  # noqa: BLE001 (InputError: no display; the default sink then shows nothing)
        return False
    return True


def run_send(args: argparse.Namespace) -> int:
    from adasr.video_io import read_image
    from realtime.call import run_sender
    from realtime.errors import CallError
    from realtime.http_signaling import HttpSignaling, offer_url
    from realtime.sender import SenderOptions, SourceOptions
    from realtime.signaling import tcp_signaling

    read_image(args.source)  # refuse a bad portrait before loading anything
    if args.signaling == "tcp":
        if args.url is not None:
            raise CallError("--url calls a receiver's HTTPS endpoint; --signaling tcp is for a receiver on this "
                            "machine: give one of them")
        signaling: Any = tcp_signaling(args.signaling_host, args.signaling_port)
        peer_host = args.signaling_host
        waiting = f"waiting for `adasr receive --signaling tcp` on {args.signaling_host}:{args.signaling_port}"
    elif args.url is None:
        raise CallError("adasr send needs --url: the https://HOST:PORT `adasr receive` printed (with its token and "
                        "--pin); for a receiver on this machine over TCP signaling, pass --signaling tcp")
    else:
        token, token_source = _token(args)
        signaling = HttpSignaling(args.url, token or "", timeout_s=args.connect_timeout, pin=args.pin,
                                  token_source=token_source)
        peer_host = urlsplit(offer_url(args.url)).hostname or ""
        waiting = f"calling {signaling.url}"
        # a wrong address, certificate or token is reported now, not after seconds of loading the model
        asyncio.run(signaling.probe())
    voice = _voice(args, microphone=True)
    watch_sink = _watch_sink(args)
    options = SenderOptions(
        capture=_capture(args, args.fps, args.max_frames),
        source=SourceOptions(args.source, send_image=args.send_image, quantization=args.quantization,
                             compression=args.compression, crop=args.source_crop),
        smoothing=_smoothing(args), crop=args.crop, reset_at_frames=tuple(args.reset_at), show_progress=args.progress)
    head = head_from_args(args)
    transport = _transport(args, peer_host)
    print(f"adasr send: {waiting}", file=sys.stderr)
    watching = None
    if watch_sink != "none":
        from realtime.call import Watching
        from realtime.sinks import open_sink

        watching = Watching(open_sink(watch_sink, width=head.size, height=head.size, fps=30.0, output=args.output,
                                      device=args.vcam_device), audio_sink=lambda: open_hearing_sink(args))
    stats = asyncio.run(run_sender(head, options, signaling, transport, voice=voice, watching=watching))
    summary = {
        "frames_captured": stats.frames_captured, "frames_sent": stats.frames_sent,
        "frames_skipped": stats.frames_skipped, "face_lost_frames": stats.face_lost_frames,
        "motion_payload_bytes_per_frame": stats.motion_bytes / max(stats.frames_sent, 1),
        "source_state_bytes": stats.source_state_bytes, "source_state_kind": stats.source_kind,
        "resets_sent": stats.resets_sent, "receiver_vanished": stats.peer_timed_out,
        "send_fps_followed": stats.send_fps,
        "peer_frames_rendered": stats.peer.frames_rendered if stats.peer else None,
        "peer_frames_dropped": stats.peer.frames_dropped if stats.peer else None,
        "ice_pair_type": stats.ice_pair_type, **stats.wire,
    }
    if stats.peer_face is not None:
        summary.update({f"peer_{k}": v for k, v in _receive_summary(stats.peer_face).items()})
    _write_json(args.stats_json, summary)
    print("adasr send: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in summary.items()))
    if stats.peer_timed_out:  # the call did not end as agreed: say so, and in the exit status
        print("adasr send: the receiver vanished (it stopped answering): its numbers above may be stale",
              file=sys.stderr)
        return 1
    return 0


# ---- receive ----------------------------------------------------------------------------------

def add_receive(sub: SubParsers) -> None:
    """Register ``receive``: take calls and render the caller's face."""
    p = sub.add_parser("receive", help="take calls: render the sender's face from its motion", description=(
        "Serve POST /offer over HTTPS (a certificate made once and kept, a bearer token, one call at a time), print "
        "the one line to give the caller, and, for each call, rebuild the sender's source state, render the newest "
        "motion to a virtual camera, a window, an mp4 or nowhere, and play the caller's voice with the face in lip "
        "sync. With --signaling tcp, connect to one `adasr send` on this machine over aiortc's TCP signaling instead."))
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
    add_hearing_arguments(p.add_argument_group("the caller's voice"), "the caller's")
    face = p.add_argument_group("answering with your own face (a two-way call; without --source the caller sees none)")
    face.add_argument("--source", type=Path, default=None, help="your portrait, shown to the caller")
    _add_capture_arguments(p, required=False)
    _add_voice_arguments(p, "your voice back to the caller", "on by default with --source, with the system's "
                                                            "default microphone")
    http = p.add_argument_group("signaling (HTTPS by default)")
    http.add_argument("--signaling", choices=["http", "tcp"], default="http",
                      help="http: serve POST /offer over HTTPS (default); tcp: aiortc's TCP signaling with a sender "
                           "on THIS machine (loopback only: no token), for scripts")
    http.add_argument("--plain-http", action="store_true",
                      help="serve plain HTTP instead of HTTPS: only on a loopback --bind (nothing leaves the machine)")
    http.add_argument("--config-dir", type=Path, default=None,
                      help="where the certificate is made once and kept (default ~/.config/adasr)")
    http.add_argument("--cert", type=Path, default=None, metavar="PEM",
                      help="serve this certificate instead (with --key): one a CA signed, which a browser trusts "
                           "without a warning (a browser cannot check --pin)")
    http.add_argument("--key", type=Path, default=None, metavar="PEM", help="the private key of --cert")
    http.add_argument("--bind", default="127.0.0.1",
                      help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    http.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    _add_token_arguments(http, "the secret senders must present (default: a new random one, printed at start)")
    http.add_argument("--max-calls", type=int, default=0, help="exit after N calls (default 0: serve until Ctrl-C)")
    http.add_argument("--no-page", dest="page", action="store_false",
                      help="serve no browser page (by default the server also serves the page a caller with only a "
                           "browser opens, and prints its link)")
    _add_network_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_receive)


def _answering(args: argparse.Namespace) -> Any:
    """What ``receive`` shows and says back to each caller: a face with --source (and a camera, video or images),
    a voice with --source or --audio/--mic."""
    from adasr.video_io import read_image
    from realtime.call import Answering
    from realtime.errors import CallError
    from realtime.sender import SenderOptions, SourceOptions

    has_capture = args.camera is not None or args.video is not None or args.images is not None
    if has_capture != (args.source is not None):
        raise CallError("answering with your face takes both --source PORTRAIT and --camera, --video or --images")
    face = None
    if args.source is not None:
        read_image(args.source)  # refuse a bad portrait before anything else
        face = SenderOptions(capture=_capture(args, None, None),
                             source=SourceOptions(args.source, crop=args.source_crop), crop=args.crop,
                             show_progress=False)
    return Answering(face=face, voice=_voice(args, microphone=args.source is not None))


def _receive_summary(stats: Any) -> dict[str, Any]:
    from realtime.stats import percentile, summarize

    summary: dict[str, Any] = {
        "frames_received": stats.frames_accepted, "frames_rendered": stats.frames_rendered,
        "frames_dropped": stats.frames_dropped, "frames_face_lost": stats.frames_face_lost,
        "frames_before_source": stats.frames_before_source, "packets_rejected": stats.motion.dropped,
        "packets_out_of_order": stats.motion.out_of_order, "motion_gaps": stats.motion_gaps,
        "source_state_bytes": stats.source_state_bytes, "source_errors": stats.source_errors,
        "peer_frames_sent": stats.peer.frames_sent if stats.peer else None, "end_reason": stats.end_reason,
        "ice_pair_type": stats.ice_pair_type,
        "av_offset_ms_p50": percentile(stats.av_offset_ms, 50), "av_offset_ms_p95": percentile(stats.av_offset_ms, 95),
        "voice_frames_played": stats.voice.frames if stats.voice is not None else 0,
    }
    summary.update(summarize(stats.render_ms, "render_ms"))
    summary.update(summarize(stats.e2e_ms, "e2e_latency_ms"))  # one clock only when both peers share a host
    if stats.own_face is not None:
        summary.update({"own_frames_sent": stats.own_face.frames_sent,
                        "own_frames_rendered_by_caller": stats.own_face.peer.frames_rendered
                        if stats.own_face.peer else None})
    return summary


def _print_summary(command: str, summary: dict[str, Any]) -> None:
    shown = {k: v for k, v in summary.items() if not k.endswith(("_p90", "_mean"))}
    print(f"adasr {command}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in shown.items()))


def run_receive(args: argparse.Namespace) -> int:
    from realtime.call import run_receiver, serve_calls
    from realtime.errors import CallError
    from realtime.http_signaling import OfferServer, OfferServerOptions, generate_token, invitation
    from realtime.signaling import is_loopback
    from realtime.tls_identity import load_identity, load_or_create_identity
    from realtime.receiver import ReceiverOptions
    from realtime.signaling import tcp_signaling
    from realtime.sinks import ThreadedSink, open_sink, require_display

    kind: SinkKind = args.sink or ("file" if args.output is not None else "window")
    if kind == "window":
        require_display()  # a headless machine: refused now, not by a Qt abort at the first call's first frame
    options = ReceiverOptions(relative=args.relative, overlay=args.overlay, face_lost=args.face_lost,
                              peer_timeout_s=args.peer_timeout)
    answering = _answering(args)

    def audio_sink() -> Any:  # opened when a caller's voice arrives
        return open_hearing_sink(args)

    if args.signaling == "tcp":
        head = head_from_args(args)
        sink = open_sink(kind, width=head.size, height=head.size, fps=args.fps, output=args.output,
                         device=args.vcam_device)
        print(f"adasr receive: calling {args.signaling_host}:{args.signaling_port}", file=sys.stderr)
        stats = asyncio.run(run_receiver(head, options, sink, tcp_signaling(args.signaling_host, args.signaling_port,
                                                                            args.connect_timeout),
                                         _transport(args, args.signaling_host), audio_sink=audio_sink,
                                         answering=answering))
        summary = _receive_summary(stats)
        _write_json(args.stats_json, summary)
        _print_summary("receive", summary)
        return 0

    given, _ = _token(args)
    token = given or generate_token()
    if args.plain_http and not is_loopback(args.bind):
        raise CallError(f"--plain-http would send the token and the session in clear text: only on a loopback "
                        f"--bind, not {args.bind}")
    if (args.cert is None) != (args.key is None):
        raise CallError("--cert and --key go together: a certificate and its private key")
    tls = None if args.plain_http else load_identity(args.cert, args.key) if args.cert is not None \
        else load_or_create_identity(args.config_dir)
    try:  # refuses a short token or a bad port now, in one line
        server = OfferServerOptions(token=token, host=args.bind, port=args.port, tls=tls)
    except ValueError as exc:
        raise CallError(str(exc)) from None
    head = head_from_args(args)
    if args.page:
        from dataclasses import replace

        from adasr_cli.browser_page import page_routes

        server = replace(server, page=page_routes(head, options.max_message))
    sink = open_sink(kind, width=head.size, height=head.size, fps=args.fps, output=args.output,
                     device=args.vcam_device)
    if not isinstance(sink, ThreadedSink):  # every call renders on its own thread: one output thread for all
        sink = ThreadedSink(sink, args.fps, repeat_last=kind == "window")
    summaries: list[dict[str, Any]] = []

    def on_ready(offers: OfferServer) -> None:
        url = _advertised_url(offers.url, args.bind)
        print(f"adasr receive: waiting for calls on {url}/offer", file=sys.stderr)
        line = invitation(url, token if not given else "<the token you gave>", offers.pin)
        print(f"adasr receive: give the caller this line: {line} --source PORTRAIT --camera 0", file=sys.stderr)
        if server.page is not None:
            from realtime.web_page import page_link

            link = page_link(url, token if not given else "<the token you gave>")
            print(f"adasr receive: or, to someone with only a browser, this link: {link}", file=sys.stderr)

    def on_call_end(stats: Any) -> None:
        summary = _receive_summary(stats)
        summaries.append(summary)
        _write_json(args.stats_json, {"calls": summaries})
        _print_summary("receive", summary)

    asyncio.run(serve_calls(head, options, sink, server, _transport(args, args.bind), max_calls=args.max_calls,
                            on_ready=on_ready, on_call_end=on_call_end, audio_sink=audio_sink,
                            answering=answering))
    return 0


def _advertised_url(url: str, bind: str) -> str:
    """The URL a caller can use: a wildcard bind (0.0.0.0, ::) names this machine's outgoing address instead."""
    if bind not in ("0.0.0.0", "::"):
        return url
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent, the route picks the source
            address = probe.getsockname()[0]
        except OSError:
            return url
    return url.replace(f"//{bind}:", f"//{address}:").replace("//[::]:", f"//{address}:")


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
        print("adasr cam: type p (passthrough), f (freeze), r (reset the pose) or q (quit), then Enter",
              file=sys.stderr)
    asyncio.run(webcam.run(head, sink))
    _print_summary("cam", webcam.summary())
    return 0


# ---- demo -------------------------------------------------------------------------------------

def add_demo(sub: SubParsers) -> None:
    """Register ``demo``: the loopback call of the shipped demo."""
    p = sub.add_parser("demo", help="the shipped demo: a loopback WebRTC call, astronaut driven by carphone",
                       description=(
                           "Both peers in one process over a real WebRTC connection on loopback: the sender streams "
                           "the carphone clip's motion and a voice, the receiver renders the astronaut and plays the "
                           "voice in lip sync. Writes a side-by-side mp4 (driving crop | received render) with the "
                           "received voice, and the call's statistics (wire kbps, ICE path, audio-to-face offset)."))
    p.add_argument("--output", type=Path, default=Path("outputs/demo.mp4"), help="side-by-side mp4")
    p.add_argument("--stats-json", type=Path, default=Path("outputs/demo-stats.json"), help="statistics as JSON")
    p.add_argument("--fps", type=float, default=None,
                   help="send rate (default: what this machine sustains for both peers, at most the clip's 30)")
    p.add_argument("--max-frames", type=int, default=None, help="send at most N clip frames")
    p.add_argument("--send-image", action="store_true", help="send the portrait instead of the feature volume")
    p.add_argument("--quantization", choices=["fp16", "int8", "fp32"], default="fp16")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    voice = p.add_argument_group("voice")
    source = voice.add_mutually_exclusive_group()
    source.add_argument("--audio", type=Path, default=None, metavar="WAV",
                        help="send this sound file as the voice (default: a synthetic voice)")
    source.add_argument("--no-audio", action="store_true", help="a silent call")
    voice.add_argument("--audio-kbps", type=float, default=DEFAULT_AUDIO_KBPS,
                       help=f"Opus bitrate (default {DEFAULT_AUDIO_KBPS:g})")
    voice.add_argument("--audio-frame-ms", type=int, choices=AUDIO_FRAME_MS_CHOICES, default=DEFAULT_AUDIO_FRAME_MS,
                       help=f"audio per packet (default {DEFAULT_AUDIO_FRAME_MS})")
    _add_ice_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from realtime.errors import CallError
    from adasr.checkpoint import DEFAULT_CHECKPOINT
    from realtime.audio.opus import OpusOptions
    from realtime.demo import DemoOptions, format_report, run_demo_call, write_report

    if args.onnx is None and checkpoint_of(args) == DEFAULT_CHECKPOINT and not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the demo's weights {DEFAULT_CHECKPOINT} are missing: they ship with the repository (restore them with "
            f"`git checkout -- weights/`), or pass --checkpoint PATH [--config YAML] to run the demo with others")
    ice = _ice(args)  # a mistyped TURN URL is reported before the model loads
    if args.audio is not None and not args.audio.is_file():
        raise CallError(f"--audio {args.audio}: no such file")
    head = head_from_args(args)
    options = DemoOptions(output=args.output, stats_json=args.stats_json, fps=args.fps, max_frames=args.max_frames,
                          send_image=args.send_image, quantization=args.quantization, show_progress=args.progress,
                          voice=not args.no_audio, audio=args.audio, ice=ice,
                          opus=OpusOptions(kbps=args.audio_kbps, frame_ms=args.audio_frame_ms))
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

