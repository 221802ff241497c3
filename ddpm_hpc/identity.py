"""What a checkpoint was trained as: the parts of an experiment that define what is being trained.

A checkpoint made under other values of these is refused (by training, and by ``make train`` before it submits);
everything else (learning rate, step count, sampling settings) may change between runs of one experiment.
"""

from __future__ import annotations

import json

from .checkpoint import Checkpoint, CorruptCheckpoint
from .config import Experiment, experiment_from_json
from .errors import CheckpointMismatch

# Whole sections (None) or the named keys of a section.
IDENTITY = {"model": None, "diffusion": None, "data": ("dataset", "seed", "batch_size"), "train": ("seed",)}


def identity_of(exp: Experiment) -> dict:
    full = exp.to_dict()
    return {sec: full[sec] if keys is None else {k: full[sec][k] for k in keys} for sec, keys in IDENTITY.items()}


def _json_lists(value):
    return json.loads(json.dumps(value))


def check_same_experiment(exp: Experiment, ckpt: Checkpoint) -> None:
    """Raise CheckpointMismatch naming the first identity key ``ckpt`` (anything with ``.path`` and ``.metadata``)
    was trained with another value of; CorruptCheckpoint if its stored config does not parse."""
    try:
        stored = experiment_from_json(ckpt.metadata["config"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptCheckpoint(f"{ckpt.path.name}: stored config is not valid JSON") from None
    ours, theirs = _json_lists(identity_of(exp)), _json_lists(identity_of(stored))
    for section, values in ours.items():
        for key, value in values.items():
            if theirs[section][key] != value:
                raise CheckpointMismatch(
                    f"{ckpt.path} was trained with {section}.{key}={theirs[section][key]!r}, but {exp.name} now "
                    f"says {value!r}; set train.restart=true to start over (the old checkpoints are kept aside)")
