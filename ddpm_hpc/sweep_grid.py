"""The command-line side of sweeps and the text of values: ``parse_grid`` for ``GRID="train.lr=1e-4,3e-4 ..."``,
the product of a grid, and how a value reads in member names and tables (``3e-4``, ``32x64x64``). Shared by
training sweeps (ddpm_hpc.sweep) and sample-time sweeps over one checkpoint."""

from __future__ import annotations

import itertools
import re
from typing import Any

import yaml

from .config import parse_overrides
from .errors import ConfigError

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")  # what an experiment name may not contain (paths.check_name)


def split_values(text: str) -> list[str]:
    """``1e-4,3e-4`` -> two values; commas inside brackets, braces or quotes belong to the value."""
    pieces, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(current)
            current = ""
            continue
        current += ch
    pieces.append(current)
    return [p.strip() for p in pieces]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["train.lr=1e-4,3e-4", "model.channels=[32,64,64],[64,128,128]"]`` -> ``{key: [values]}``; values are
    YAML like ``config.parse_overrides``'. Keys are checked later (:func:`check_key`), with the closest valid key."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"grid {item!r}: expected section.key=value1,value2,... e.g. train.lr=1e-4,3e-4")
        if key in grid:
            raise ConfigError(f"grid: {key} is given twice; list all its values once: {key}=a,b,c")
        pieces = split_values(raw)
        if not raw.strip() or any(p == "" for p in pieces):
            raise ConfigError(f"grid {item!r}: an empty value; write {key}=value1,value2,...")
        grid[key] = [parse_overrides([f"v={p}"])["v"] for p in pieces]
    return grid


def value_text(value: Any) -> str:
    """How a value reads in names and tables: ``3e-4``, ``0.999``, ``32x64x64``, ``ddim``, ``true``."""
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        plain = repr(value)
        for digits in range(17):  # the shortest scientific form that reads back as the same float
            sci = f"{value:.{digits}e}"
            if float(sci) == value:
                break
        mantissa, exponent = sci.split("e")
        sci = f"{mantissa}e{int(exponent)}"
        return sci if len(sci) < len(plain) else plain
    if isinstance(value, (list, tuple)):
        return "x".join(value_text(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{value_text(v)}" for k, v in value.items())
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """``train.lr`` -> ``lr``, unless two varied keys end the same way (``train.steps``, ``sample.steps``)."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (tail if last.count(tail) == 1 else k) for k, tail in zip(keys, last)}


def name_part(short: str, value: Any) -> str:
    """``lr`` + 3e-4 -> ``lr3e-4``; text values get an underscore (``sampler_ddim``)."""
    text = value_text(value)
    joined = f"{short}{text}" if re.match(r"^-?[0-9]", text) else f"{short}_{text}"
    return UNSAFE.sub("_", joined)


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The product of the grid, in key order then value order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def override(key: str, value: Any) -> str:
    """``section.key=<value as flow YAML>``, read back by ``config.parse_overrides`` as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if text.endswith("\n...") or text.endswith("..."):
        text = text.rsplit("\n", 1)[0].strip()
    return f"{key}={text}"
