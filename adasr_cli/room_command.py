"""``adasr room``: join a group call through Janus's VideoRoom: publish your voice and face, see everyone else's.

Building the parser imports nothing heavy; the call, the model and aiortc load when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from adasr_cli.backend_args import add_backend_arguments, head_from_args
from adasr_cli.call_commands import add_hearing_arguments, open_hearing_sink
from adasr_cli.command import SubParsers
from realtime.settings import SINK_CHOICES, SinkKind

#: Environment variables the secrets are read from when not given (keeps them out of the process list).
API_SECRET_ENV_VAR = "ADASR_JANUS_API_SECRET"
PIN_ENV_VAR = "ADASR_ROOM_PIN"


def add_room(sub: SubParsers) -> None:
    """Register ``room``: a group call through a Janus VideoRoom."""
    p = sub.add_parser("room", help="join a group call through Janus: publish your face and voice, see the others",
                       description=(
        "Join (or create) a Janus VideoRoom: publish this person's voice and face motion once (Janus forwards them "
        "to every other participant), send the portrait's source state to each participant as it subscribes, and "
        "render every other participant's face into one grid. Run one per participant. Ctrl-C (or SIGTERM) leaves."))
    p.add_argument("--janus", required=True, metavar="URL",
                   help="Janus's HTTP API, e.g. https://HOST:8089/janus (plain http:// only to this machine)")
    p.add_argument("--room", required=True, type=int, help="the room's numeric id")
    p.add_argument("--source", required=True, type=Path, help="portrait image the others will see")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, help="camera index (cv2.VideoCapture)")
    src.add_argument("--video", type=Path, help="video file driving the face")
    p.add_argument("--loop", action="store_true", help="replay --video from the start when it ends")
    p.add_argument("--fps", type=float, default=None, help="capture rate (default: the source's)")
    p.add_argument("--no-source-crop", dest="source_crop", action="store_false",
                   help="the portrait already is a square face crop")
    p.add_argument("--send-volume", dest="send_image", action="store_false",
                   help="send the encoded feature volume (~1.5 MB for lite) instead of the portrait crop (~0.1 MB, "
                        "the default: in a room every late joiner asks for it again, and each receiver encodes "
                        "it once, ~0.1 s)")
    p.add_argument("--display", default=None, help="your name in the room (default: the user name)")
    access = p.add_argument_group("access")
    access.add_argument("--pin", default=os.environ.get(PIN_ENV_VAR),
                        help=f"the room's PIN (set on a room we create; default ${PIN_ENV_VAR})")
    access.add_argument("--room-secret", default=None, help="the room's secret, set on a room we create")
    access.add_argument("--api-secret", default=os.environ.get(API_SECRET_ENV_VAR),
                        help=f"Janus's API secret (default ${API_SECRET_ENV_VAR})")
    access.add_argument("--janus-plain-http", action="store_true",
                        help="allow a plain http:// --janus on another machine: the API secret, the PIN and the "
                             "streams' keys then cross the network readable and rewritable (trusted networks only)")
    access.add_argument("--no-create", dest="create", action="store_false", help="join only an existing room")
    access.add_argument("--ice-host", action="append", default=None, metavar="ADDR",
                        help="address to offer as ICE host candidate (repeatable; default every interface)")
    voice = p.add_argument_group("voice").add_mutually_exclusive_group()
    voice.add_argument("--audio", type=Path, default=None, help="send this sound file as your voice")
    voice.add_argument("--no-audio", action="store_true", help="publish no voice")
    add_hearing_arguments(p.add_argument_group("the others' voices (mixed)"), "every other participant's")
    out = p.add_argument_group("the grid")
    out.add_argument("--sink", choices=SINK_CHOICES, default=None,
                     help="where the grid goes (default: file when --output is given, else window)")
    out.add_argument("--output", type=Path, default=None, help="OUT.mp4 or a folder, for --sink file")
    out.add_argument("--grid-fps", type=float, default=30.0, help="frame rate of the file or virtual camera (30)")
    out.add_argument("--vcam-device", default=None, help="virtual camera device (e.g. /dev/video10)")
    out.add_argument("--silence-timeout", type=float, default=5.0,
                     help="seconds without a message before a participant leaves the grid (5; Janus waits 60)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="leave after this long in the room (0: no limit)")
    p.add_argument("--stats-json", type=Path, default=None,
                   help="write the call's report here as JSON, every second and at the end (per face: frames "
                        "rendered, lip sync, and its voice: milliseconds heard, mouth-to-ear delay, losses)")
    add_backend_arguments(p)
    p.set_defaults(func=run_room)


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Replace ``path`` with the report in one step: a reader never sees half of it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def run_room(args: argparse.Namespace) -> int:
    import getpass

    from adasr.video_io import read_image
    from realtime.audio.voice import VoiceOptions
    from realtime.capture import CaptureOptions
    from realtime.janus.api import JanusOptions
    from realtime.janus.participant import ParticipantOptions
    from realtime.janus.videoroom import RoomOptions
    from realtime.room.remote_face import FaceOptions
    from realtime.room.room import GroupCall, GroupCallOptions
    from realtime.sender import SenderOptions, SourceOptions
    from realtime.sinks import open_sink
    from realtime.transport import TransportOptions

    read_image(args.source)  # refuse a bad portrait, or an unsafe Janus URL, before loading anything
    janus = JanusOptions(args.janus, api_secret=args.api_secret, plain_http=args.janus_plain_http)
    kind: SinkKind = args.sink or ("file" if args.output is not None else "window")
    head = head_from_args(args)
    sink = open_sink(kind, width=2 * head.size, height=2 * head.size, fps=args.grid_fps, output=args.output,
                     device=args.vcam_device)
    options = GroupCallOptions(
        participant=ParticipantOptions(
            janus,
            RoomOptions(args.room, args.display or getpass.getuser(), pin=args.pin, secret=args.room_secret,
                        create=args.create),
            TransportOptions(ice_hosts=tuple(args.ice_host) if args.ice_host else None)),
        sender=SenderOptions(capture=CaptureOptions(camera=args.camera, video=args.video, fps=args.fps,
                                                    loop=args.loop),
                             source=SourceOptions(args.source, crop=args.source_crop, send_image=args.send_image)),
        voice=VoiceOptions(file=args.audio, microphone=not args.no_audio),
        faces=FaceOptions(silence_timeout_s=args.silence_timeout),
        max_seconds=args.max_seconds)
    call = GroupCall(head, options, sink, audio_sink=lambda: open_hearing_sink(args))

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, call.stop, f"signal {signal.Signals(signum).name}")
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        return await call.run(on_report=lambda report: _write_json(args.stats_json, report))

    print(f"adasr room: joining room {args.room} at {args.janus}", file=sys.stderr)
    report = asyncio.run(run())
    _write_json(args.stats_json, report)
    print(summary_line(report))
    return 0


def summary_line(report: dict[str, Any]) -> str:
    """The line printed when we leave. Names, departure and end reasons are other people's (or Janus's) words:
    escaped, whatever escaped them before."""
    from realtime.peer_text import escaped

    faces = ", ".join(f"{escaped(face['display'])}: {face['frames_rendered']} frames"
                      + (f" (left: {escaped(face['left'])})" if face["left"] else "")
                      for face in report["faces"].values())
    return (f"adasr room: left ({escaped(report['end_reason'])}); faces: {faces or 'none'}; wire bytes sent "
            f"{report['wire_bytes_sent']}, received {report['wire_bytes_received']}")
