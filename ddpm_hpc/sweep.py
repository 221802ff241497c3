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

or the same from the command line (``parse_grid``, in ddpm_hpc.sweep_grid with the value texts). Members = grid
product x variants x seeds, each named ``<sweep>-<what varies>`` (``lr_width-lr3e-4-channels32x64x64-seed2``), so
that every command for one experiment works for a member unchanged. Names and override lists come from
:func:`expand`; :func:`ddpm_hpc.sweep_members.prepare` validates every member before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .config import SECTIONS, _read_yaml, parse_overrides
from .errors import ConfigError
from .sweep_grid import UNSAFE, grid_points, name_part, override, parse_grid, short_keys, split_values, value_text

__all__ = ["Member", "Sweep", "available_sweeps", "check_key", "expand", "grid_points", "load_sweep", "override",
           "parse_grid", "split_values", "sweep_from_dict", "sweep_from_grid", "value_text", "with_common"]

SWEEPS_FOLDER = "sweeps"  # experiments/sweeps/<name>.yaml
SEED_KEYS = ("train.seed", "data.seed")  # what `seeds:` sets, both to the same value
TOP_KEYS = ("description", "base", "set", "grid", "variants", "seeds", "slurm", "eval")
EVAL_KEYS = ("n", "fid_ref_images")


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


def with_common(sweep: Sweep, overrides: list[str]) -> Sweep:
    """``sweep`` with command-line ``section.key=value`` overrides (``SET=``) for every member."""
    extra = _flat_overrides(overrides)
    for key in extra:
        check_key(key, f"{sweep.source} (with overrides {' '.join(overrides)})")
        if key in sweep.grid or any(key in v for v in sweep.variants) or (sweep.seeds and key in SEED_KEYS):
            raise ConfigError(f"{sweep.source}: {key} varies in the sweep; it cannot also be set for every member")
    return dataclasses.replace(sweep, common={**sweep.common, **extra}) if extra else sweep


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
            parts.append(UNSAFE.sub("_", str(variant["name"])))
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
