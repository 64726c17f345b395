"""What a subcommand module hands the parser: a registrar that adds its subcommand to ``adasr``'s subparsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""``add_subparsers()``'s action (private in typeshed, hence the alias)."""
Registrar: TypeAlias = Callable[[SubParsers], object]
"""Adds one subcommand's parser, with its handler as ``func``."""
