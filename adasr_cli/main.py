"""The ``adasr`` command: one entry point, one subcommand per job.

Only this module installs logging handlers and turns domain errors into one-line messages with a
non-zero exit; the library raises and logs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from adasr.errors import AdaSRError
from adasr_cli.call_commands import add_cam, add_demo, add_receive, add_send
from adasr_cli.command import Registrar
from adasr_cli.eval_command import add_eval_parser
from adasr_cli.export_commands import add_build_engine_parser, add_export_parser
from adasr_cli.model_commands import add_animate, add_degrade
from adasr_cli.room_command import add_room
from adasr_cli.training_commands import add_prepare_parser, add_train_parser

#: Registration functions of every subcommand, in the order ``--help`` lists them.
REGISTRARS: list[Registrar] = [add_animate, add_prepare_parser, add_train_parser, add_eval_parser, add_degrade,
                               add_export_parser, add_build_engine_parser, add_send, add_receive, add_cam, add_demo,
                               add_room]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adasr", description="AdaSR one-shot talking heads")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AdaSRError as exc:
        print(f"adasr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasr {args.command}: interrupted", file=sys.stderr)
        return 130
