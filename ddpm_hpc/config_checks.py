"""Checks of one config section: each key known (else the closest valid key), each value of its field's type (the
few safe conversions: int -> float, list -> tuple), finite, and within the field's ``min``/``max``/``check``."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from .errors import ConfigError


def closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(valid)}"


def _finite(value: int | float, where: str) -> float:
    """NaN and infinity pass every range check (all comparisons with NaN are false): refuse them here."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return number


_KIND = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint``; convert the few safe cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):  # Optional[...]
            return None
        if len(args) == 1:
            return coerce(value, args[0], where)
        for arg in args:  # e.g. int | Literal["auto"]: the first type that takes the value
            with contextlib.suppress(ConfigError):
                return coerce(value, arg, where)
        kinds = [" or ".join(map(str, typing.get_args(a))) if typing.get_origin(a) is Literal else _KIND.get(a, str(a))
                 for a in args]
        raise ConfigError(f"{where}: expected {' or '.join(kinds)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        if abs(value) >= 2**63:
            raise ConfigError(f"{where}: {value} is too large for a 64-bit integer")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-4` without a dot as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return _finite(value, where)
    if hint is str:
        if isinstance(value, int) and not isinstance(value, bool):  # e.g. sample.checkpoint=5000
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        for key, item in value.items():
            if isinstance(item, float):
                _finite(item, f"{where}.{key}")
        return dict(value)
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this file, not a user error


def build_section(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{closest(str(key), fields)}")
        field_where = f"{where}.{key}"
        value = coerce(value, hints[key], field_where)
        lo, hi = fields[key].metadata.get("min"), fields[key].metadata.get("max")
        if not isinstance(value, (int, float)):  # a word such as auto: its range is its list of choices
            lo = hi = None
        if lo is not None and value is not None and value < lo:
            raise ConfigError(f"{field_where}: {value!r} is too small; must be >= {lo}")
        if hi is not None and value is not None and value > hi:
            raise ConfigError(f"{field_where}: {value!r} is too large; must be <= {hi}")
        check = fields[key].metadata.get("check")
        if check and value is not None:
            check(value, field_where)
        kwargs[key] = value
    return cls(**kwargs)
