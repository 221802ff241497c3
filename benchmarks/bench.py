"""Side-by-side speed benchmark: this toolkit's trainer against a faithful copy of the practical's loop.

    python benchmarks/bench.py [--device cpu|cuda] [--quick] [--json]

Everything runs in one process, one after the other, on the same generated MNIST-format files and the same model,
so the ratios are fair even on a busy shared machine. Each measurement: warm-up steps, then several timed repeats;
the median is reported. Results are printed as a table and written to benchmarks/results/<host>-<date>.json.
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
from ddpm_hpc.samplers import SAMPLERS, network_evaluations  # noqa: E402
from ddpm_hpc.schedules import linear_schedule  # noqa: E402
from ddpm_hpc.trainer import Run  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
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
    state = {"loss_smooth": 1.0}

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
            state["loss_smooth"] += 0.01 * (loss.item() - state["loss_smooth"])

    return run


def toolkit_loop(data_root: Path, device, batch: int, steps_per_repeat: int, **train_options):
    exp = Experiment(
        name="bench", data=DataConfig(dataset="mnist", root=str(data_root), batch_size=batch),
        model=ModelConfig(), diffusion=DiffusionConfig(),
        train=TrainConfig(steps=10**9, device=str(device), **train_options))
    run = Run(exp, log_fn=lambda *_: None)

    def step():
        for _ in range(steps_per_repeat):
            run.train_step()

    return step, run


def bench_training(data_root, device, args, results):
    variants = [("practical loop (DataLoader, loss.item())", None, {})]
    variants += [("toolkit fp32", "toolkit", {}),
                 ("toolkit channels_last", "toolkit", {"channels_last": True})]
    if device.type == "cuda" or args.bf16_cpu:
        variants.append(("toolkit bf16 autocast", "toolkit", {"precision": "bf16"}))
        variants.append(("toolkit bf16 + channels_last", "toolkit", {"precision": "bf16", "channels_last": True}))
    if args.compile:
        variants.append(("toolkit compile", "toolkit", {"compile": True}))
    for batch in args.batches:
        base = None
        for label, kind, options in variants:
            if kind is None:
                fn = practical_loop(data_root, device, batch, args.steps)
            else:
                fn, _ = toolkit_loop(data_root, device, batch, args.steps, **options)
            times = timed(fn, device, args.warmup, args.repeats)
            rate = batch * args.steps / statistics.median(times)
            base = base or rate
            results["training"].append({"variant": label, "batch": batch, "img_per_s": rate,
                                        "ratio_vs_practical": rate / base,
                                        "repeats_s": [round(t, 4) for t in times]})
            print(f"  train  batch {batch:4d}  {label:<42s} {rate:9.1f} img/s   x{rate / base:5.2f}", flush=True)


def bench_sampling(device, args, results):
    torch.manual_seed(0)
    net = build_model(ModelConfig(time_embedding=True), 10).to(device).eval()
    schedule = linear_schedule(400).to(device)
    n = args.sample_batch
    cases = [("ddpm", 400), ("ddim", 100), ("ddim", 50), ("euler", 50), ("euler", 20), ("heun", 10)]
    if args.quick:
        cases = [("ddim", 20), ("euler", 10), ("heun", 5)]
    for sampler, steps in cases:
        def fn():
            with torch.inference_mode():
                x = torch.randn(n, 3, 32, 32, device=device)
                SAMPLERS[sampler](lambda x, t: net(x, t, None), x, schedule, steps=steps)
        times = timed(fn, device, 1 if device.type == "cuda" else 0, max(1, args.repeats // 2))
        rate = n / statistics.median(times)
        nfe = network_evaluations(sampler, steps, 1.0)
        results["sampling"].append({"sampler": sampler, "steps": steps, "nfe_per_image": nfe, "batch": n,
                                    "img_per_s": rate})
        print(f"  sample {sampler:5s} {steps:4d} steps  NFE {nfe:4d}  {rate:9.2f} img/s", flush=True)


def bench_checkpoint(data_root, device, args, results):
    step, run = toolkit_loop(data_root, device, 16, args.steps)
    step()
    folder = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    save = timed(lambda: checkpoint.save_checkpoint(folder, run.step, run.tensors(), run.metadata(), keep=2),
                 device, 1, args.repeats)
    load = timed(lambda: checkpoint.load_latest(folder, warn=lambda *_: None), device, 1, args.repeats)
    size = checkpoint.read_pointer(folder)["file"]
    size = (folder / size).stat().st_size
    step_time = statistics.median(timed(step, device, 0, args.repeats)) / args.steps
    every = TrainConfig().checkpoint_every
    share = statistics.median(save) / (statistics.median(save) + every * step_time)
    results["checkpoint"] = {"bytes": size, "save_s": statistics.median(save), "load_s": statistics.median(load),
                             "train_step_s": step_time, "checkpoint_every": every, "share_of_training": share}
    print(f"  checkpoint {size / 1e6:.1f} MB  save {statistics.median(save):.3f} s  load {statistics.median(load):.3f} s"
          f"  step {step_time * 1000:.1f} ms  -> {100 * share:.2f}% of training at every {every} steps", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="warm-up repeats")
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also time train.compile=true")
    p.add_argument("--bf16-cpu", action="store_true", help="also time bf16 autocast on the CPU")
    p.add_argument("--quick", action="store_true", help="a smoke run of every section (CI, tests)")
    p.add_argument("--skip", nargs="*", default=[], choices=["training", "sampling", "checkpoint"])
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout too")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    args.batches = args.batches or ([16, 128, 256] if cuda else [16, 128])
    args.steps = args.steps or (2 if args.quick else (50 if cuda else 10))
    args.sample_batch = args.sample_batch or (256 if cuda else 16)
    if args.quick:
        args.batches, args.repeats, args.sample_batch = [8], 2, 4
    results = {"host": socket.gethostname(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "args": {k: str(v) for k, v in vars(args).items()}, "training": [], "sampling": []}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data_root = Path(tmp)
        write_mnist(data_root, n_train=2000 if not args.quick else 64, n_test=10)
        print(f"benchmark on {results['device_name']} ({device}), torch {torch.__version__}", flush=True)
        if "training" not in args.skip:
            bench_training(data_root, device, args, results)
        if "sampling" not in args.skip:
            bench_sampling(device, args, results)
        if "checkpoint" not in args.skip:
            bench_checkpoint(data_root, device, args, results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{results['host']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
