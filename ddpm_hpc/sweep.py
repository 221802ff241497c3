"""Sweeps: a base experiment plus what varies, expanded into ordinary experiments (members). No SLURM here.

A sweep is ``experiments/sweeps/<name>.yaml``::

    description: "learning rate x width, three seeds"
    base: mnist_best                 # experiments/mnist_best.yaml
    set: {train.steps: 5000}         # optional: the same overrides for every member
    grid:                            # the product of these lists is taken
      train.lr: [1.0e-4, 3.0e-4]
      model.channels: [[32, 64, 64], [64, 128, 128]]
    variants:                        # optional, listed by hand; crossed with the grid (name: optional label)
      - {name: plain, train.ema_decay: 0.0}
      - {name: ema, train.ema_decay: 0.999}
    seeds: 3                         # optional: train.seed and data.seed 0, 1, 2 (or a list: [0, 7])
    slurm: {array_parallelism: 4, time_min: 240}   # at most 4 members train at once; other keys: every member
    eval: {n: 1000}                  # optional: make eval after each member's sampling (true: the defaults)

or the same from the command line (``parse_grid``). Members = grid product x variants x seeds, each named
``<sweep>-<what varies>`` (``lr_width-lr3e-4-channels32x64x64-seed2``), so that every command for one experiment
works for a member unchanged. Names and override lists come from :func:`expand`; :func:`ddpm_hpc.sweep_members.prepare`
validates every member before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .config import SECTIONS, _read_yaml, parse_overrides
from .errors import ConfigError

SWEEPS_FOLDER = "sweeps"  # experiments/sweeps/<name>.yaml
SEED_KEYS = ("train.seed", "data.seed")  # what `seeds:` sets, both to the same value
TOP_KEYS = ("description", "base", "set", "grid", "variants", "seeds", "slurm", "eval")
EVAL_KEYS = ("n", "fid_ref_images")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Member:
    """One experiment of a sweep: its name, its overrides over the base, and the values that vary."""

    name: str
    overrides: tuple[str, ...]  # section.key=<YAML>, the sweep's `set:` first
    varied: dict[str, Any]  # key -> value, only what varies between members (for names and the comparison table)

    def varied_text(self) -> dict[str, str]:
        return {key: value_text(value) for key, value in self.varied.items()}


@dataclass(frozen=True)
class Sweep:
    name: str
    base: str
    grid: dict[str, list] = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)  # each: {section.key: value} (+ optional "name")
    seeds: list[int] = field(default_factory=list)
    common: dict[str, Any] = field(default_factory=dict)  # `set:` and the `slurm:` keys other than array_parallelism
    array_parallelism: int | None = None
    eval: dict | None = None  # None: no eval; {} the defaults; else run_eval keywords (n, fid_ref_images)
    description: str = ""
    source: str = "command line"  # where the definition came from, for error messages


# ---------------------------------------------------------------------------------------------------------------------
# Values and names


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
    return _UNSAFE.sub("_", joined)


# ---------------------------------------------------------------------------------------------------------------------
# Definitions


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def check_key(key: str, where: str) -> None:
    """``section.key`` must name a setting (``slurm.additional.<x>`` too); a misspelt one gets the closest."""
    keys = valid_keys()
    if key in keys or (key.startswith("slurm.additional.") and len(key) > len("slurm.additional.")):
        return
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"; did you mean '{match[0]}'?" if match else "; keys are section.key, e.g. train.lr or sample.steps"
    raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def sweep_file(name: str) -> Path:
    return paths.experiments_root() / SWEEPS_FOLDER / f"{paths.check_name(name)}.yaml"


def available_sweeps() -> list[str]:
    folder = paths.experiments_root() / SWEEPS_FOLDER
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def _flat(mapping: Any, where: str) -> dict[str, Any]:
    """``{train.lr: 1}`` or ``{train: {lr: 1}}`` -> ``{"train.lr": 1}``."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of section.key: value, got {mapping!r}")
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and "." not in str(key) and str(key) in SECTIONS:
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[str(key)] = value
    return out


def _seeds(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{where}: seeds: {value} is too small; give a count >= 1 or a list of seeds")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: seeds: {value} lists a seed twice")
        return list(value)
    raise ConfigError(f"{where}: seeds: expected a count (3) or a list of seeds ([0, 7, 9]), got {value!r}")


def _eval(value: Any, where: str) -> dict | None:
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: eval: expected true or a mapping like {{n: 1000}}, got {value!r}")
    for key, item in value.items():
        if key not in EVAL_KEYS:
            match = difflib.get_close_matches(str(key), EVAL_KEYS, n=1)
            raise ConfigError(f"{where}: eval: unknown key '{key}'" + (f"; did you mean '{match[0]}'?" if match else
                                                                       f"; valid keys: {', '.join(EVAL_KEYS)}"))
        if not isinstance(item, int) or isinstance(item, bool) or item < (2 if key == "n" else 0):
            raise ConfigError(f"{where}: eval.{key}: expected a whole number, got {item!r}")
    return dict(value)


def _parallelism(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: slurm.array_parallelism: expected a whole number >= 1, got {value!r}")
    return value


def sweep_from_dict(name: str, data: dict, where: str) -> Sweep:
    """Check the shape of a sweep definition (keys of the grid too); member values are checked by ``prepare``."""
    for key in data:
        if key not in TOP_KEYS:
            match = difflib.get_close_matches(str(key), TOP_KEYS, n=1, cutoff=0.5)
            raise ConfigError(f"{where}: unknown key '{key}'" + (f"; did you mean '{match[0]}'?" if match else
                                                                 f"; valid keys: {', '.join(TOP_KEYS)}"))
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{where}: base: name the experiment the sweep starts from, e.g. base: mnist_best")
    grid = _flat(data.get("grid"), f"{where}: grid")
    for key, values in grid.items():
        check_key(key, f"{where}: grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid: {key}: expected a non-empty list of values, got {values!r}")
    raw_variants = data.get("variants") or []
    if not isinstance(raw_variants, list):
        raise ConfigError(f"{where}: variants: expected a list of mappings (section.key: value)")
    variants = []
    for i, raw in enumerate(raw_variants):
        variant = _flat(raw, f"{where}: variants[{i}]")
        if not variant or set(variant) == {"name"}:
            raise ConfigError(f"{where}: variants[{i}]: empty; give at least one section.key: value")
        for key in variant:
            if key != "name":
                check_key(key, f"{where}: variants[{i}]")
                if key in grid:
                    raise ConfigError(f"{where}: variants[{i}]: {key} is also in the grid; vary it in one place")
        variants.append(variant)
    slurm = _flat({"slurm": data.get("slurm") or {}}, f"{where}: slurm")
    parallelism = _parallelism(slurm.pop("slurm.array_parallelism", None), where)
    common = {**_flat(data.get("set"), f"{where}: set"), **slurm}
    for key in common:
        check_key(key, f"{where}: set" if not key.startswith("slurm.") else f"{where}: slurm")
    seeds = _seeds(data.get("seeds"), where)
    if seeds:
        clash = [k for k in SEED_KEYS if k in grid or any(k in v for v in variants)]
        if clash:
            raise ConfigError(f"{where}: seeds sets {' and '.join(SEED_KEYS)}; {clash[0]} cannot also vary")
    if not grid and not variants and not seeds:
        raise ConfigError(f"{where}: an empty sweep; give a grid (section.key: [values]), variants or seeds")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description: expected text")
    return Sweep(name=paths.check_name(name), base=base, grid=grid, variants=variants, seeds=seeds, common=common,
                 array_parallelism=parallelism, eval=_eval(data.get("eval"), where), description=description,
                 source=where)


def load_sweep(name: str) -> Sweep:
    """``experiments/sweeps/<name>.yaml`` -> :class:`Sweep` (shape and keys checked)."""
    path = sweep_file(name)
    if not path.is_file():
        names = available_sweeps()
        match = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = (f"; did you mean '{match[0]}'?" if match else "") + \
            (f"; sweeps: {', '.join(names)}" if names else f"; there are no sweep files in {path.parent}")
        raise ConfigError(f"no sweep '{name}' in {path.parent}{hint}")
    return sweep_from_dict(name, _read_yaml(path), str(path))


def sweep_from_grid(base: str, items: list[str], name: str | None = None, seeds: int | None = None,
                    common: list[str] | None = None, array_parallelism: int | None = None) -> Sweep:
    """A command-line sweep: ``make sweep EXP=base GRID="..." [NAME=...] [SET=...]``; the name defaults to
    ``<base>-sweep``."""
    grid = parse_grid(items)
    if not grid:
        raise ConfigError("an empty grid; give GRID=\"section.key=value1,value2 ...\", e.g. train.lr=1e-4,3e-4")
    data: dict = {"base": base, "grid": grid, "set": _flat_overrides(common or [])}
    if seeds:
        data["seeds"] = seeds
    if array_parallelism is not None:
        data["slurm"] = {"array_parallelism": array_parallelism}
    return sweep_from_dict(name or f"{base}-sweep", data, "command line")


def _flat_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.partition("=")[0]
        tree = parse_overrides([item])
        for part in key.split("."):
            tree = tree[part]
        out[key] = tree
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Expansion


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


def expand(sweep: Sweep) -> list[Member]:
    """Every member (grid product x variants x seeds), named from what varies, in a stable order."""
    points = grid_points(sweep.grid) if sweep.grid else [{}]
    variants = sweep.variants or [{}]
    seeds = sweep.seeds or [None]
    varying = [k for k in sweep.grid if len(sweep.grid[k]) > 1]
    variant_keys = sorted({k for v in variants for k in v if k != "name"})
    shorts = short_keys(varying + [k for k in variant_keys if k not in varying])
    members = []
    for point, variant, seed in itertools.product(points, variants, seeds):
        values = {**point, **{k: v for k, v in variant.items() if k != "name"}}
        parts = [name_part(shorts[k], point[k]) for k in varying]
        if "name" in variant:
            parts.append(_UNSAFE.sub("_", str(variant["name"])))
        else:
            parts += [name_part(shorts[k], variant[k]) for k in variant_keys if k in variant]
        varied = {k: values[k] for k in varying}
        if len(variants) > 1:
            varied.update({k: values[k] for k in variant_keys if k in values})
            if "name" in variant:
                varied["variant"] = str(variant["name"])
        if seed is not None:
            values.update({k: seed for k in SEED_KEYS})
            parts.append(f"seed{seed}")
            if len(seeds) > 1:
                varied["seed"] = seed
        overrides = tuple(override(k, v) for k, v in {**sweep.common, **values}.items())
        name = "-".join([sweep.name, *parts]) if parts else sweep.name + "-1"
        members.append(Member(name=name, overrides=overrides, varied=varied))
    return members
