"""Reading experiment files: YAML with unique keys, the cluster defaults, ``section.key=value`` overrides.

Everything here yields plain mappings; ``config.build_experiment`` turns them into validated dataclasses.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key given twice in one mapping is an error (PyYAML keeps the last
    value silently). Keys brought in by a ``<<:`` merge may still be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain data only, never Python objects


def yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f" (line {mark.line + 1})" if mark else ""
    return f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}"


def parse_overrides(items: list[str]) -> dict:
    """``["train.steps=100", "sample.sampler=ddim"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value, e.g. train.steps=100")
        try:
            value = load_yaml(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: {yaml_problem(exc)}") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return tree


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "additional":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict:
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def cluster_defaults_file() -> Path:
    """``$DDPM_HPC_CLUSTER_CONFIG`` (which must exist when set), else ``experiments/_cluster.yaml`` (optional)."""
    chosen = os.environ.get("DDPM_HPC_CLUSTER_CONFIG")
    if not chosen:
        return paths.experiments_root() / "_cluster.yaml"
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise ConfigError(f"DDPM_HPC_CLUSTER_CONFIG={chosen}: no such file; fix the path or unset the variable")
    return path


def available_experiments() -> list[str]:
    root = paths.existing_experiments_root()
    return sorted(p.stem for p in root.glob("*.yaml") if not p.stem.startswith("_") and p.is_file())


def experiment_file_data(name: str) -> dict:
    """The raw mapping of ``experiments/<name>.yaml`` as written (no cluster defaults, no overrides)."""
    path = paths.experiment_file(name)
    if not path.is_file():
        names = available_experiments()
        match = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = (f"; did you mean '{match[0]}'?" if match else "") + \
            (f"; available experiments: {', '.join(names)}" if names else "; there are no experiment files")
        raise ConfigError(f"no experiment '{name}' in {path.parent}{hint}")
    return read_yaml(path)


def with_cluster_defaults(data: dict) -> dict:
    """``data`` with the cluster defaults merged under its ``slurm:`` section."""
    defaults = cluster_defaults_file()
    if defaults.is_file():
        cluster = read_yaml(defaults)
        unknown = set(cluster) - {"slurm"}
        if unknown:
            raise ConfigError(f"{defaults}: only a 'slurm' section is allowed, found {sorted(unknown)}")
        data = merge({"slurm": cluster.get("slurm") or {}}, data)
    return data


def with_overrides(data: dict, overrides: list[str]) -> dict:
    """``data`` with ``section.key=value`` overrides merged over it."""
    return merge(data, parse_overrides(overrides)) if overrides else data
