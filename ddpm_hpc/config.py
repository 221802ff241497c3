"""Experiment files: YAML -> validated, frozen dataclasses.

Config flows one way: ``load_experiment`` reads ``experiments/<name>.yaml`` (with ``yaml.safe_load``; the reading is
in ``config_files.py``), merges the cluster defaults (``experiments/_cluster.yaml`` or ``$DDPM_HPC_CLUSTER_CONFIG``)
under its ``slurm:`` section, applies command-line overrides (``train.steps=100``), and validates everything into an
:class:`Experiment` (each field by ``config_checks.py``, the rules across sections here). Every mistake is a
:class:`ConfigError` of one line that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from . import paths
from .config_checks import build_section, closest
from .config_files import experiment_file_data, with_cluster_defaults, with_overrides
from .errors import ConfigError

SEED = 2**32 - 1  # the largest seed: step seeds (seed * 1_000_003 + step) must stay within torch's 64 bits
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_DEVICE_GUESSES = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "cuda:0": "cuda:0", "gpu": "cuda"}


def _range(lo=None, hi=None, **extra) -> dict:
    return {"min": lo, "max": hi, **extra}


def check_device(value: str, where: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether that device exists is checked when it is used."""
    if not DEVICE.match(value):
        match = difflib.get_close_matches(value.strip().lower(), _DEVICE_GUESSES, n=1, cutoff=0.5)
        hint = f"; did you mean '{_DEVICE_GUESSES[match[0]]}'?" if match else ""
        raise ConfigError(f"{where}: {value!r} is not a device; choose auto, cpu, cuda or cuda:N (N: GPU index){hint}")
    return value


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["mnist", "cifar10", "digits"] = "mnist"
    root: Optional[str] = None  # default: $DDPM_HPC_DATA or ./data
    batch_size: int = field(default=16, metadata=_range(1))  # global batch, over all ranks
    seed: int = field(default=0, metadata=_range(0, SEED))  # data order: a pure function of (seed, step)
    on_device: bool = True  # keep the decoded uint8 dataset on the training device


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["conv", "seed_unet", "unet"] = "seed_unet"
    # seed_unet: encoder widths, the last one is the bottleneck. unet: widths per resolution level.
    channels: tuple[int, ...] = (72, 96, 128, 196, 256)
    conditioning: Literal["none", "onehot", "embedding"] = "none"
    time_embedding: bool = False  # the seed's nets do not see t
    norm: Literal["batch", "group"] = "batch"  # the seed uses BatchNorm
    dropout: float = field(default=0.0, metadata=_range(0.0, 1.0))


DEFAULT_BETAS = {"beta1": 1e-4, "beta2": 0.02}  # Ho et al.'s; they set the linear schedule only


@dataclass(frozen=True)
class DiffusionConfig:
    objective: Literal["ddpm", "flow"] = "ddpm"
    schedule: Literal["linear", "cosine"] = "linear"
    T: int = field(default=400, metadata=_range(1))
    beta1: float = field(default=DEFAULT_BETAS["beta1"], metadata=_range(0.0, 1.0))
    beta2: float = field(default=DEFAULT_BETAS["beta2"], metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(default=2000, metadata=_range(1))
    lr: float = field(default=1e-4, metadata=_range(0.0))
    seed: int = field(default=0, metadata=_range(0, SEED))  # model init and per-step noise
    ema_decay: float = field(default=0.0, metadata=_range(0.0, 1.0))  # 0 disables EMA
    label_dropout: float = field(default=0.0, metadata=_range(0.0, 1.0))  # for classifier-free guidance
    grad_clip: float = field(default=0.0, metadata=_range(0.0))  # 0 disables clipping
    log_every: int = field(default=100, metadata=_range(1))
    # Saves: every N steps (0: by time only) and every checkpoint_minutes (0: not by time), whichever comes first.
    # auto: by time only on a GPU (1,000 steps take seconds there), every 1,000 steps on a CPU (ddpm_hpc/cadence.py)
    checkpoint_every: Union[int, Literal["auto"]] = field(default="auto", metadata=_range(0))
    checkpoint_minutes: float = field(default=10.0, metadata=_range(0.0))  # 0 disables the wall-clock cadence
    report_minutes: float = field(default=5.0, metadata=_range(0.0))  # plot + page at a save at most this often
    keep_checkpoints: int = field(default=3, metadata=_range(2))
    restart: bool = False  # ignore existing checkpoints and start over
    device: str = field(default="auto", metadata={"check": check_device})  # auto | cpu | cuda | cuda:N
    # Fast paths (docs/performance.md has the measurements behind the defaults). None of them changes what is
    # trained: a checkpoint made with one setting resumes under any other.
    # Autocast dtype (weights and optimizer stay fp32); fp16 adds loss scaling. auto: bf16 on GPUs with native bf16
    # (compute capability 8.0+) and CPUs with native bf16, fp16 on 7.x GPUs (Volta, Turing), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Exact resume on the same GPU model: deterministic algorithms, no cuDNN autotuning, no TF32 (slower on a GPU)
    deterministic: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the network; the first step compiles (a minute on a small CPU)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    adam: Literal["auto", "fused", "foreach", "for-loop"] = "auto"  # auto: fused (foreach for channels_last on a CPU)
    cudnn_benchmark: bool = True  # CUDA only: let cuDNN pick the fastest convolution algorithms
    sync_batchnorm: bool = True  # multi-GPU only
    tensorboard: bool = False  # also write TensorBoard events to experiments/<name>/tensorboard/ (an optional extra)


def _check_interval(value: tuple, where: str) -> None:
    if len(value) != 2 or not 0 <= value[0] < value[1]:
        raise ConfigError(f"{where}: expected [lo, hi] with 0 <= lo < hi (noise-to-signal ratios), got {list(value)}")


@dataclass(frozen=True)
class SampleConfig:
    # ddpm/ddim/dpmpp2m for diffusion.objective=ddpm, euler/heun/flow_dpmpp2m for flow (docs/quality.md)
    sampler: Literal["ddpm", "ddim", "dpmpp2m", "euler", "heun", "flow_dpmpp2m"] = "ddpm"
    steps: int = field(default=0, metadata=_range(0))  # 0: all T steps for ddpm/ddim, 50 for flow samplers
    # DDIM's noise: 0 = deterministic; 1 (with all T steps) = DDPM with sigma_t^2 = beta-tilde_t, the posterior
    # variance (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, not the ddpm sampler's sigma_t^2 = beta_t. Above 1
    # the noise would exceed 1 - alpha_bar_{t-1} and leave no room for the predicted direction.
    eta: float = field(default=0.0, metadata=_range(0.0, 1.0))
    guidance: float = field(default=1.0, metadata=_range(0.0))  # classifier-free guidance scale, 1 = off
    per_class: int = field(default=10, metadata=_range(1))  # conditional grids: one row per class
    n: int = field(default=100, metadata=_range(1))  # unconditional grids
    batch_size: int = field(default=256, metadata=_range(1))
    seed: int = field(default=1234, metadata=_range(0, SEED))  # fixed so grids from different steps are comparable
    checkpoint: str = "latest"  # latest | <step> | <path>
    every: int = field(default=0, metadata=_range(0))  # small grid every N training steps, 0 = off
    trajectory: bool = True  # also write an x_T ... x_0 strip
    # Few-step sampling (docs/quality.md): uniform steps in the model's time, EDM's rho-spaced noise levels, or the
    # uniform steps with every noise level multiplied by shift (SD3's shifted timesteps)
    time_grid: Literal["uniform", "edm", "shift"] = "uniform"
    rho: float = field(default=7.0, metadata=_range(0.1, 100.0))  # time_grid=edm only; EDM uses 7
    shift: float = field(default=1.0, metadata=_range(0.01, 100.0))  # time_grid=shift only; 1 = uniform
    # Guidance only while the noise-to-signal ratio sigma is in (lo, hi] (Kynkäänniemi et al. 2024); none = always
    guidance_interval: Optional[tuple[float, ...]] = field(default=None, metadata=_range(check=_check_interval))
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"  # w over time, from noise to data

    @property
    def grid_parameter(self) -> float | None:
        """The setting that shapes the time grid (``GRID_PARAMETERS``); None for the uniform grid."""
        key = GRID_PARAMETERS.get(self.time_grid)
        return None if key is None else getattr(self, key)


GRID_PARAMETERS = {"edm": "rho", "shift": "shift"}  # time_grid -> the sample setting only that grid uses


@dataclass(frozen=True)
class SlurmConfig:
    partition: str = "ug-gpu-small"
    qos: Optional[str] = "short"
    account: Optional[str] = None
    gres: Optional[str] = "gpu:1"
    gpus_per_node: int = field(default=1, metadata=_range(0))
    nodes: int = field(default=1, metadata=_range(1))
    # Processes (ranks) per node: 0 = one per GPU (gpus_per_node or the count in gres), 1 without GPUs. Set it only
    # for CPU-only data-parallel jobs (gpus_per_node: 0); with GPUs it must equal the GPUs per node.
    tasks_per_node: int = field(default=0, metadata=_range(0))
    time_min: int = field(default=120, metadata=_range(1))
    mem_gb: float = field(default=16.0, metadata=_range(0.0))
    cpus_per_task: int = field(default=4, metadata=_range(1))
    signal_delay_s: int = field(default=120, metadata=_range(0))
    max_requeues: int = field(default=20, metadata=_range(0))
    sample_time_min: int = field(default=30, metadata=_range(1))
    additional: dict = field(default_factory=dict)  # extra #SBATCH options, e.g. {constraint: ampere}
    setup: tuple[str, ...] = ("source /etc/profile",)  # shell lines run before the job


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    slurm: SlurmConfig = SlurmConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **sections) -> "Experiment":
        return dataclasses.replace(self, **sections)

    @property
    def sample_steps(self) -> int:
        """Network evaluations budget of the configured sampler when ``sample.steps`` is 0."""
        if self.sample.steps:
            return self.sample.steps
        return self.diffusion.T if self.sample.sampler in ("ddpm", "ddim", "dpmpp2m") else 50


SECTIONS = {k: v for k, v in typing.get_type_hints(Experiment).items() if k not in ("name", "description")}


# ---------------------------------------------------------------------------------------------------------------------
# Validation (each field's type and range: config_checks.py; the file reading: config_files.py)


def _check_consistency(exp: Experiment, where: str) -> None:
    flow_samplers = ("euler", "heun", "flow_dpmpp2m")
    if exp.diffusion.objective == "flow" and exp.sample.sampler not in flow_samplers:
        raise ConfigError(f"{where}: sample.sampler={exp.sample.sampler} needs diffusion.objective=ddpm; "
                          f"flow matching samples with {', '.join(flow_samplers[:-1])} or {flow_samplers[-1]}")
    if exp.diffusion.objective == "ddpm" and exp.sample.sampler in flow_samplers:
        raise ConfigError(f"{where}: sample.sampler={exp.sample.sampler} needs diffusion.objective=flow; "
                          f"a ddpm model samples with ddpm, ddim or dpmpp2m")
    if exp.sample.sampler == "ddpm" and exp.sample.time_grid != "uniform":
        raise ConfigError(f"{where}: sample.time_grid={exp.sample.time_grid} needs a few-step sampler; the ddpm "
                          f"sampler takes all T steps (use ddim or dpmpp2m)")
    for grid, key in GRID_PARAMETERS.items():
        default = SampleConfig.__dataclass_fields__[key].default
        if getattr(exp.sample, key) != default and exp.sample.time_grid != grid:
            raise ConfigError(f"{where}: sample.{key}={getattr(exp.sample, key):g} would be ignored: it sets "
                              f"sample.time_grid={grid}, not {exp.sample.time_grid}")
    if exp.sample.guidance == 1.0 and (exp.sample.guidance_interval or exp.sample.guidance_schedule != "constant"):
        raise ConfigError(f"{where}: sample.guidance_interval and sample.guidance_schedule change guidance, which is "
                          f"off (sample.guidance=1)")
    if exp.sample.sampler in ("ddpm", "ddim", "dpmpp2m") and exp.sample.steps > exp.diffusion.T:
        raise ConfigError(f"{where}: sample.steps={exp.sample.steps} exceeds diffusion.T={exp.diffusion.T}")
    if exp.sample.sampler == "ddpm" and exp.sample.steps not in (0, exp.diffusion.T):
        raise ConfigError(f"{where}: the ddpm sampler always takes all T={exp.diffusion.T} steps; "
                          f"use sample.sampler=ddim for fewer")
    if exp.diffusion.beta1 >= exp.diffusion.beta2 and exp.diffusion.schedule == "linear":
        raise ConfigError(f"{where}: diffusion.beta1 must be smaller than diffusion.beta2")
    betas_set = [f"{k}={getattr(exp.diffusion, k):g}" for k in ("beta1", "beta2")
                 if getattr(exp.diffusion, k) != DEFAULT_BETAS[k]]
    if exp.diffusion.schedule == "cosine" and betas_set:
        raise ConfigError(f"{where}: diffusion.{' and diffusion.'.join(betas_set)} would be ignored: the cosine "
                          f"schedule has no betas to set (they set the linear schedule); remove them or use "
                          f"diffusion.schedule=linear")
    if exp.model.arch == "conv" and exp.model.conditioning != "none":
        raise ConfigError(f"{where}: model.arch=conv cannot be conditional; use seed_unet or unet")
    if exp.train.label_dropout > 0 and exp.model.conditioning == "none":
        raise ConfigError(f"{where}: train.label_dropout needs a conditional model (model.conditioning)")
    if exp.sample.guidance != 1.0 and exp.model.conditioning == "none":
        raise ConfigError(f"{where}: sample.guidance needs a conditional model (model.conditioning)")
    if exp.sample.guidance != 1.0 and exp.train.label_dropout == 0:  # conditional: the null class was never seen
        raise ConfigError(f"{where}: sample.guidance={exp.sample.guidance:g} needs a model trained with "
                          f"train.label_dropout > 0 (guidance uses the unconditional prediction, learnt only from "
                          f"dropped labels), but train.label_dropout is 0; use sample.guidance=1, or train with e.g. "
                          f"train.label_dropout=0.1")
    if exp.model.arch == "seed_unet" and len(exp.model.channels) != 5:
        raise ConfigError(f"{where}: model.channels for seed_unet needs 5 widths (4 skip levels + bottleneck)")


def build_experiment(name: str, data: dict, where: str) -> Experiment:
    """Validate a raw mapping (file contents merged with overrides) into an Experiment."""
    valid_top = ["description", *SECTIONS]
    sections = {}
    for key, value in data.items():
        if key not in valid_top:
            raise ConfigError(f"{where}: unknown section '{key}'{closest(str(key), valid_top)}")
        if key == "description":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: description: expected text")
            continue
        sections[key] = build_section(SECTIONS[key], value or {}, f"{where}: {key}")
    exp = Experiment(name=name, description=data.get("description", ""), **sections)
    _check_consistency(exp, where)
    return exp


def load_experiment(name: str, overrides: list[str] | None = None) -> Experiment:
    data = with_cluster_defaults(experiment_file_data(name))
    where = str(paths.experiment_file(name))
    if overrides:
        data = with_overrides(data, overrides)
        where = f"{where} (with overrides {' '.join(overrides)})"
    return build_experiment(name, data, where)


def experiment_from_json(text: str) -> Experiment:
    """Rebuild an Experiment from :meth:`Experiment.to_json` (as stored in checkpoint metadata)."""
    raw = json.loads(text)
    name = raw.pop("name")
    return build_experiment(name, raw, f"stored config of {name}")
