"""Typed dataclass trees from YAML mappings, and back: the one loader every config uses.

Unknown keys are errors that name their path (``degradation.stage1.noise: unknown key(s) …``), and
each value is checked against its field's type, so a misspelt or mistyped option never passes
silently. Lists in YAML become the field's list or tuple type.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Literal, TypeVar

from adasr.errors import ConfigError

T = TypeVar("T")


def build_dataclass(cls: type[T], data: Any, where: str, error: type[Exception] = ConfigError) -> T:
    """Recursively turn ``data`` into ``cls``; raise ``error`` naming the offending field."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; valid keys are {names}")
    kwargs = {name: _coerce(hints[name], data[name], f"{where}.{name}", error) for name in names if name in data}
    try:
        return cls(**kwargs)
    except error as err:  # a __post_init__ check: prefix it with where it came from
        raise error(f"{where}: {err}") from None


def to_plain(value: Any) -> Any:
    """A dataclass tree → nested dicts and lists (YAML- and torch.save-friendly)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def _coerce(tp: Any, value: Any, where: str, error: type[Exception]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        return build_dataclass(tp, value, where, error)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, error) if len(inner) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {value!r}")
        if origin is list:
            return [_coerce(args[0], v, f"{where}[{i}]", error) for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]", error) for i, v in enumerate(value))
        if len(value) != len(args):
            raise error(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]", error) for i, (a, v) in enumerate(zip(args, value)))
    if origin is Literal:
        if value not in args:
            raise error(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error(f"{where}: expected a string, got {value!r}")
        return value
    return value  # Any and other annotations: taken as given
