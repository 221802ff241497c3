"""Side-by-side speed benchmark: this toolkit's trainer against a faithful copy of the practical's loop.

    python benchmarks/bench.py [--device cpu|cuda] [--quick] [--json] [--loss-steps 2500]   (or: make bench)

Everything runs in one process on the same generated MNIST-format files and the same model (the seed U-Net,
``ModelConfig()`` defaults), so the ratios are fair even on a busy shared machine: the training variants are timed
round-robin (repeat 1 of every variant, then repeat 2 of every variant, ...), so a burst of load from another
process hits all of them alike. Each measurement: warm-up steps (they include torch.compile's compilation), then
several timed repeats; the median is reported. Sections:

- training: images/s of the practical's loop and of the toolkit's ``Run.train_step`` (plus the per-step bookkeeping of
  ``train()``) with each fast path alone and together, at batch 16 and larger batches;
- loss (``--loss-steps N``): the plain fp32 path and the fast path trained N steps each from the same seed
  (interleaved step by step), their smoothed losses (the practical's 0.99/0.01 average) compared at step N;
- sampling: images/s and network evaluations per image of DDPM-400, DDIM-100/50, Euler and Heun, CFG;
- checkpoint: save, load and report-refresh time, and the save overhead: their share of training time at
  the default cadence for the device (``checkpoint_every: auto``), with the target (< 1 %).

It prints a table and writes everything as JSON to benchmarks/results/<host>-<date>.json (``--json``: also stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fixtures import write_mnist  # noqa: E402  (real IDX files, as torchvision reads them)

from ddpm_hpc import checkpoint  # noqa: E402
from ddpm_hpc.config import DataConfig, DiffusionConfig, Experiment, ModelConfig, TrainConfig  # noqa: E402
from ddpm_hpc.models import build_model  # noqa: E402
from ddpm_hpc.samplers import guided, network_evaluations, solve  # noqa: E402
from ddpm_hpc.schedules import linear_schedule  # noqa: E402
from ddpm_hpc.fast_paths import autocast_dtype  # noqa: E402
from ddpm_hpc.trainer import Run  # noqa: E402

# The toolkit's training variants: TrainConfig options on top of PLAIN, the path without any fast path
# (fp32, NCHW, eager, Adam's per-parameter loop: what the practical's loop runs, minus its data pipeline), or on top
# of the shipped defaults (names starting with "defaults"). "threads" sets torch.set_num_threads for that variant.
PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "adam": "for-loop"}
VARIANTS = {
    "plain": {},
    "fused-adam": {"adam": "fused"},
    "foreach-adam": {"adam": "foreach"},
    "channels-last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
    "bf16+fused": {"precision": "bf16", "adam": "fused"},
    "bf16+cl+foreach": {"precision": "bf16", "channels_last": True, "adam": "foreach"},
    "fp16": {"precision": "fp16"},  # autocast fp16 + GradScaler: what precision=auto picks on Volta/Turing GPUs
    "fp16+fused": {"precision": "fp16", "adam": "fused"},
    "compile": {"compile": True},
    "compile+fused": {"compile": True, "adam": "fused"},
    "compile+bf16+fused": {"compile": True, "precision": "bf16", "adam": "fused"},
    "compile-cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "1-thread": {"threads": 1},
    "defaults": {},  # TrainConfig() as shipped: what a user gets without touching any option
    "defaults+cl": {"channels_last": True},
    "defaults+compile": {"compile": True},
    "defaults+cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "defaults-1-thread": {"threads": 1},
    # train.deterministic switches process-wide torch settings: time it in a process of its own (make gpu-check)
    "defaults+deterministic": {"deterministic": True},
}
CPU_SET = ["plain", "fused-adam", "foreach-adam", "channels-last", "bf16", "bf16+cl", "bf16+fused", "bf16+cl+foreach",
           "defaults", "defaults+compile", "1-thread", "defaults-1-thread"]
CPU_LARGE_SET = ["plain", "defaults", "defaults+compile"]
CUDA_SET = ["plain", "fused-adam", "channels-last", "bf16", "bf16+cl", "fp16", "fp16+fused", "defaults", "defaults+cl",
            "defaults+compile", "defaults+cudagraphs"]
PEAK_BF16_TFLOPS = {"H200": 790.0, "H100": 790.0}  # the issue's figure for the H200's dense bf16 peak


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f or "amx" in f or f == "avx512f")
    except OSError:
        pass
    return []


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


class Threads:
    """Run with ``n`` intra-op threads (None: leave as is), restoring the previous count afterwards."""

    def __init__(self, n):
        self.n, self.before = n, None

    def __enter__(self):
        if self.n:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.before:
            torch.set_num_threads(self.before)


def round_robin(fns: dict, device, warmup: int, repeats: int, log=print) -> dict[str, list[float]]:
    """Warm every function up, then time repeat r of each before repeat r+1 of any."""
    for name, (fn, threads) in fns.items():
        t0 = time.perf_counter()
        with Threads(threads):
            for _ in range(warmup):
                fn()
            sync(device)
        log(f"    warm-up {name}: {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, threads) in fns.items():
            with Threads(threads):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)
    return times


# -- the practical's loop, as written in the practical (DataLoader + per-sample transforms, loss.item() each step)
def practical_loop(data_root: Path, device, batch: int, steps_per_repeat: int):
    import torchvision
    from torchvision import transforms

    def cycle(iterable):
        while True:
            yield from iterable

    loader = torch.utils.data.DataLoader(torchvision.datasets.MNIST(
        str(data_root), train=True, download=False, transform=transforms.Compose([
            transforms.ToTensor(), transforms.Resize((32, 32)), transforms.Lambda(lambda x: x.repeat(3, 1, 1)),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])), batch_size=batch, shuffle=True)
    it = iter(cycle(loader))
    T = 400
    beta_t = (0.02 - 1e-4) * torch.arange(0, T + 1, dtype=torch.float32, device=device) / T + 1e-4
    alphabar_t = torch.cumsum(torch.log(1 - beta_t), dim=0).exp()
    sqrtab, sqrtmab = alphabar_t.sqrt().view(-1, 1, 1, 1), (1 - alphabar_t).sqrt().view(-1, 1, 1, 1)
    torch.manual_seed(0)
    net = build_model(ModelConfig(), 10).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    state = {"loss_smooth": None, "losses": []}

    def run():
        for _ in range(steps_per_repeat):
            x, c = next(it)
            x, c = x.to(device), c.to(device)
            _ts = torch.randint(1, T + 1, (x.shape[0],)).to(device)
            eps = torch.randn_like(x)
            x_t = sqrtab[_ts] * x + sqrtmab[_ts] * eps
            loss = F.mse_loss(eps, net(x_t))
            optim.zero_grad()
            loss.backward()
            optim.step()
            value = loss.item()
            state["losses"].append(value)
            smooth = state["loss_smooth"]
            state["loss_smooth"] = value if smooth is None else smooth + 0.01 * (value - smooth)

    run.state = state
    return run


def toolkit_options(variant: str) -> tuple[dict, int | None]:
    options = dict(VARIANTS[variant]) if variant.startswith("defaults") else {**PLAIN, **VARIANTS[variant]}
    threads = options.pop("threads", None)
    return options, threads


def adam_kernel(optimizer) -> str:
    group = optimizer.param_groups[0]
    return "fused" if group["fused"] else "foreach" if group["foreach"] else "for-loop"


def toolkit_run(data_root: Path, device, batch: int, **train_options) -> Run:
    exp = Experiment(
        name="bench", data=DataConfig(dataset="mnist", root=str(data_root), batch_size=batch),
        model=ModelConfig(), diffusion=DiffusionConfig(),
        train=TrainConfig(steps=10**9, device=str(device), **train_options))
    return Run(exp, log_fn=lambda msg: print(f"    {msg}", flush=True))


def toolkit_loop(run: Run, steps_per_repeat: int):
    """``Run.train_step`` with the per-step bookkeeping of ``train()`` (loss sum and smoothed loss on the device)."""
    run.model.train()

    def step():
        for _ in range(steps_per_repeat):
            loss = run.train_step()
            run.loss_sum += loss.float()
            if run.step == 1:
                run.loss_smooth = loss.float().clone()
            run.loss_smooth += 0.01 * (loss.float() - run.loss_smooth)

    return step


def flops_per_image(device) -> float | None:
    """Forward + backward FLOPs of one training image of the seed U-Net (torch.utils.flop_counter)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
        net = build_model(ModelConfig(), 10).to(device)
        x = torch.randn(4, 3, 32, 32, device=device)
        with FlopCounterMode(display=False) as counter:
            net(x).square().mean().backward()
        return counter.get_total_flops() / 4
    except (ImportError, RuntimeError):  # an old torch without the counter: the table just lacks the column
        return None


def bench_training(data_root, device, args, results):
    cuda = device.type == "cuda"
    flops = results["flops_per_train_image"]
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in results["device_name"]), None) if cuda else None
    for batch in args.batches:
        names = args.variants or (CUDA_SET if cuda else (CPU_SET if batch <= 16 else CPU_LARGE_SET))
        if any(VARIANTS[n].get("deterministic") for n in names) and len(names) > 1:
            raise SystemExit("bench.py: error: defaults+deterministic changes process-wide torch settings (every "
                             "variant would run deterministically): time it alone, --variants defaults+deterministic")
        steps = args.steps if batch <= 16 or cuda else max(2, args.steps * 16 // batch)
        print(f"  training, batch {batch}: {steps} steps per repeat, {args.repeats} repeats, "
              f"{args.warmup} warm-up repeat(s)", flush=True)
        fns, info = {}, {}
        try:
            fns["practical"] = (practical_loop(data_root, device, batch, steps), None)
            info["practical"] = {"variant": "practical loop (DataLoader, per-sample transforms, loss.item())"}
            for name in names:
                options, threads = toolkit_options(name)
                run = toolkit_run(data_root, device, batch, **options)
                fns[name] = (toolkit_loop(run, steps), threads)
                resolved = {**TrainConfig().__dict__, **options}
                info[name] = {"options": {k: resolved[k] for k in ("precision", "channels_last", "compile",
                                                                     "compile_mode", "adam", "deterministic")},
                              "autocast": str(run.autocast_dtype), "precision": run.precision,
                              "adam_kernel": adam_kernel(run.optimizer),
                              "threads": threads or torch.get_num_threads()}
            times = round_robin(fns, device, args.warmup, args.repeats)
        except torch.cuda.OutOfMemoryError:
            print(f"  batch {batch}: out of memory, skipped", flush=True)
            results["training"].append({"batch": batch, "skipped": "out of memory"})
            fns.clear()
            torch.cuda.empty_cache()
            continue
        base = batch * steps / statistics.median(times["practical"])
        for name in fns:
            rate = batch * steps / statistics.median(times[name])
            row = {"name": name, **info[name], "batch": batch, "img_per_s": rate, "ratio_vs_practical": rate / base,
                   "repeats_s": [round(t, 4) for t in times[name]]}
            if flops:
                row["tflop_per_s"] = rate * flops / 1e12
                if peak:
                    row["fraction_of_peak"] = row["tflop_per_s"] / peak
            results["training"].append(row)
        fns.clear()


def bench_loss(data_root, device, args, results):
    """Plain fp32 vs the fast path, same seed, same batches and noise: smoothed loss after N steps."""
    n, batch = args.loss_steps, 16
    fast_name = args.loss_fast
    print(f"  loss check: {n} steps at batch {batch}, plain vs {fast_name} (interleaved step by step)", flush=True)
    runs = {"plain": toolkit_run(data_root, device, batch, **toolkit_options("plain")[0]),
            fast_name: toolkit_run(data_root, device, batch, **toolkit_options(fast_name)[0])}
    steps = {name: toolkit_loop(run, 1) for name, run in runs.items()}
    if args.loss_practical:
        steps["practical"] = practical_loop(data_root, device, batch, 1)
    seconds = {name: 0.0 for name in steps}
    smooth = {name: [] for name in steps}
    for i in range(n):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            seconds[name] += time.perf_counter() - t0
            if name in runs and ((i + 1) % 100 == 0 or i + 1 == n):
                smooth[name].append(round(runs[name].loss_smooth.item(), 5))
            elif name == "practical" and ((i + 1) % 100 == 0 or i + 1 == n):
                smooth[name].append(round(fn.state["loss_smooth"], 5))
        if (i + 1) % max(1, n // 10) == 0:
            print(f"    step {i + 1}/{n}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in smooth.items() if v), flush=True)
    final = {name: values[-1] for name, values in smooth.items()}
    rel = abs(final[fast_name] - final["plain"]) / final["plain"]
    results["loss"] = {"steps": n, "batch": batch, "fast": fast_name, "smoothed_loss": final,
                       "relative_difference": rel, "within_5_percent": rel <= 0.05, "every_100_steps": smooth,
                       "img_per_s": {k: n * batch / s for k, s in seconds.items()}}


def bench_sampling(device, args, results):
    torch.manual_seed(0)
    n = args.sample_batch
    net = build_model(ModelConfig(time_embedding=True), 10).to(device).eval()
    cond = build_model(ModelConfig(time_embedding=True, conditioning="embedding"), 10).to(device).eval()
    schedule = linear_schedule(400).to(device)
    labels = torch.arange(n, device=device) % 10
    cases = [("ddpm", 400, 1.0), ("ddim", 100, 1.0), ("ddim", 50, 1.0), ("euler", 50, 1.0), ("euler", 20, 1.0),
             ("heun", 10, 1.0), ("ddim", 50, 3.0)]
    if args.quick:
        cases = [("ddim", 5, 1.0), ("euler", 5, 1.0), ("heun", 3, 1.0), ("ddim", 5, 3.0)]
    for sampler, steps, w in cases:
        model = cond if w != 1.0 else net
        fn_net = guided(model, labels if w != 1.0 else None, w, 10)

        def fn(sampler=sampler, fn_net=fn_net, steps=steps):
            with torch.inference_mode():
                x = torch.randn(n, 3, 32, 32, device=device)
                solve(sampler, fn_net, x, schedule, steps=steps)

        with torch.inference_mode():  # warm-up: one network evaluation
            fn_net(torch.randn(n, 3, 32, 32, device=device), torch.ones(n, device=device))
        sync(device)
        times = round_robin({"s": (fn, None)}, device, 0, args.sample_repeats, log=lambda *_: None)["s"]
        rate = n / statistics.median(times)
        nfe = network_evaluations(sampler, steps, w)
        results["sampling"].append({"sampler": sampler, "steps": steps, "guidance": w, "nfe_per_image": nfe,
                                    "batch": n, "img_per_s": rate, "evals_per_s": rate * nfe})
        cfg = f" CFG w={w:g}" if w != 1 else ""
        print(f"  sample {sampler:5s} {steps:4d} steps{cfg:9s} NFE {nfe:4d}  "
              f"{rate:9.2f} img/s", flush=True)


def _metrics_of_a_long_run(folder: Path, lines: int = 250) -> None:
    """metrics.jsonl as a 25,000-step run logs it (every 100 steps), for the report refresh to draw."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"step": 100 * (i + 1), "loss": 0.1 + 1 / (i + 1), "loss_smooth": 0.1 + 1 / (i + 1), "img_per_s": 1000.0,
             "wall_seconds": 10.0 * (i + 1)} for i in range(lines)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def bench_checkpoint(data_root, device, args, results):
    """A periodic save as train() does it on rank 0 (Run.save: gather, digest, serialise, SHA-256 alongside the
    write, fsync, pointer, rotation), the report refresh that follows it (loss plot, experiment page, index), and
    their share of training time at the default cadence for this device (ddpm_hpc/cadence.py)."""
    from ddpm_hpc import cadence
    from ddpm_hpc.pipeline import refresh_loss_plot
    from ddpm_hpc.report import refresh as refresh_report

    run = toolkit_run(data_root, device, 16)  # the defaults, at the practical's batch
    step = toolkit_loop(run, args.steps)
    step()
    roots = ("DDPM_HPC_EXPERIMENTS", "DDPM_HPC_CHECKPOINTS")
    saved_env = {k: os.environ.get(k) for k in roots}
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        os.environ.update(DDPM_HPC_EXPERIMENTS=str(Path(tmp) / "experiments"),
                          DDPM_HPC_CHECKPOINTS=str(Path(tmp) / "checkpoints"))
        try:
            folder = Path(tmp) / "checkpoints" / run.exp.name
            save = timed(run.save, device, 1, args.repeats)
            load = timed(lambda: checkpoint.load_latest(folder, warn=lambda *_: None), device, 1, args.repeats)
            size = (folder / checkpoint.read_pointer(folder)["file"]).stat().st_size
            _metrics_of_a_long_run(Path(tmp) / "experiments" / run.exp.name)
            refresh = timed(lambda: (refresh_loss_plot(run.exp), refresh_report(run.exp.name, lambda *_: None)),
                            device, 1, args.repeats)
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    step_time = statistics.median(timed(step, device, 0, args.repeats)) / args.steps
    cfg = TrainConfig()
    save_s, refresh_s = statistics.median(save), statistics.median(refresh)
    every = cadence.checkpoint_every_steps(cfg.checkpoint_every, cfg.checkpoint_minutes, device.type)
    default = cadence.save_overhead(step_time, save_s, refresh_s, every, cfg.checkpoint_minutes, cfg.report_minutes)
    by_steps = cadence.save_overhead(step_time, save_s, refresh_s, cadence.CPU_CHECKPOINT_EVERY, cfg.checkpoint_minutes,
                                     0.0)  # every 1,000 steps, plot and page each time (the cadence before "auto")
    results["checkpoint"] = {"bytes": size, "save_s": save_s, "load_s": statistics.median(load),
                             "report_refresh_s": refresh_s, "train_step_s": step_time,
                             "checkpoint_every": cfg.checkpoint_every, "checkpoint_every_steps_here": every,
                             "checkpoint_minutes": cfg.checkpoint_minutes, "report_minutes": cfg.report_minutes,
                             "seconds_between_saves": default["seconds_between_saves"],
                             "saves_per_report_refresh": default["saves_per_refresh"],
                             "share_of_training": default["fraction"], "target_share": 0.01,
                             "share_every_1000_steps_refresh_each_save": by_steps["fraction"]}
    cadence_text = f"every {every} steps or {cfg.checkpoint_minutes:g} min" if every else \
        f"every {cfg.checkpoint_minutes:g} min of training (by time only on a GPU)"
    print(f"  checkpoint {size / 1e6:.1f} MB  save {save_s:.3f} s  load {statistics.median(load):.3f} s  "
          f"report refresh {refresh_s:.3f} s  step {step_time * 1000:.1f} ms", flush=True)
    print(f"  save overhead: {100 * default['fraction']:.2f} % of training time at the default cadence "
          f"(checkpoint_every={cfg.checkpoint_every}: a save {cadence_text}, a save every "
          f"{default['seconds_between_saves']:.0f} s here; report at most every {cfg.report_minutes:g} min); "
          f"target < 1 %: {'met' if default['fraction'] < 0.01 else 'NOT met'}", flush=True)
    print(f"  (every 1000 steps with plot and page at each save, the cadence before checkpoint_every=auto: "
          f"{100 * by_steps['fraction']:.2f} %)", flush=True)


def timed(fn, device, warmup: int, repeats: int) -> list[float]:
    return round_robin({"f": (fn, None)}, device, warmup, repeats, log=lambda *_: None)["f"]


def print_table(results) -> None:
    rows = [r for r in results["training"] if "skipped" not in r]
    if rows:
        print(f"\ntraining on {results['device_name']} ({results['device']}, {results['threads']} threads), "
              f"load average before/after {results['load_average_before']} / {results['load_average_after']}")
        has_flops, has_peak = (any(key in r for r in rows) for key in ("tflop_per_s", "fraction_of_peak"))
        print(f"  {'batch':>5s}  {'variant':<24s} {'img/s':>9s}  {'vs practical':>12s}" +
              ("  TFLOP/s" if has_flops else "") + ("  of peak" if has_peak else ""))
        for r in rows:
            extra = ""
            if has_flops:
                extra = f"  {r['tflop_per_s']:7.3f}" + (f"  {100 * r['fraction_of_peak']:6.2f}%"
                                                         if "fraction_of_peak" in r else "")
            print(f"  {r['batch']:5d}  {r['name']:<24s} {r['img_per_s']:9.1f}  {r['ratio_vs_practical']:11.2f}x{extra}")
    if results.get("loss"):
        loss = results["loss"]
        print(f"\nsmoothed loss after {loss['steps']} steps: " +
              ", ".join(f"{k} {v:.4f}" for k, v in loss["smoothed_loss"].items()) +
              f"; {loss['fast']} vs plain: {100 * loss['relative_difference']:.2f}% "
              f"({'within' if loss['within_5_percent'] else 'NOT within'} 5%)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="toolkit variants to time next to the practical loop (default: a per-device set)")
    p.add_argument("--steps", type=int, default=None, help="training steps per timed repeat at batch 16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="warm-up repeats")
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--sample-repeats", type=int, default=None)
    p.add_argument("--loss-steps", type=int, default=0, help="also run the loss check for this many steps")
    p.add_argument("--loss-fast", default="defaults", choices=list(VARIANTS), help="fast variant of the loss check")
    p.add_argument("--loss-practical", action="store_true", help="also run the practical loop in the loss check")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the whole run")
    p.add_argument("--quick", action="store_true", help="a smoke run of every section (CI, tests)")
    p.add_argument("--skip", nargs="*", default=[], choices=["training", "sampling", "checkpoint"])
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout too")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(f"bench.py: error: --device {args.device}: torch {torch.__version__} sees no CUDA GPU on this machine",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    args.batches = args.batches or ([16, 128, 256] if cuda else [16, 128])
    args.steps = args.steps or (2 if args.quick else (50 if cuda else 10))
    args.sample_batch = args.sample_batch or (256 if cuda else 16)
    args.sample_repeats = args.sample_repeats or (3 if cuda else 1)
    if args.quick:
        args.batches, args.repeats, args.sample_batch = [8], 2, 4
        args.variants = args.variants or ["plain", "defaults"]
    results = {"host": socket.gethostname(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
               "cpu_flags": cpu_flags(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpus": os.cpu_count(), "load_average_before": load_average(),
               "defaults": {k: TrainConfig().__dict__[k] for k in ("precision", "channels_last", "compile", "adam")},
               "default_autocast": str(autocast_dtype(TrainConfig().precision, device)),
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               "args": {k: str(v) for k, v in vars(args).items()}, "training": [], "sampling": []}
    results["flops_per_train_image"] = flops_per_image(device)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data_root = Path(tmp)
        write_mnist(data_root, n_train=2000 if not args.quick else 64, n_test=10)
        print(f"benchmark on {results['device_name']} ({device}), torch {torch.__version__}, "
              f"{results['threads']} threads, load average {results['load_average_before']}", flush=True)
        if "training" not in args.skip:
            bench_training(data_root, device, args, results)
        if args.loss_steps:
            bench_loss(data_root, device, args, results)
        if "sampling" not in args.skip:
            bench_sampling(device, args, results)
        if "checkpoint" not in args.skip:
            bench_checkpoint(data_root, device, args, results)
    results["load_average_after"] = load_average()
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{results['host']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
