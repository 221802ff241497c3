"""Where a CPU training step's time goes inside oneDNN: every convolution pass and layout reorder of the shipped
defaults (seed U-Net, batch 16), and the compute-bound ceiling they imply.

    python benchmarks/conv_breakdown.py [--batch 16] [--steps 5] [--weight-grad]

The step is ``Run.train_step`` with ``TrainConfig()`` defaults on generated MNIST-format files. After warm-up, a
child process runs ``--steps`` steps under ``torch.backends.mkldnn.verbose`` (oneDNN prints one line per executed
primitive with its time); this script sums those lines per primitive and pass, and per layer. The ceiling is the
step's multiply-accumulates (``torch.utils.flop_counter``) at the rate of the fastest large convolution pass seen.
``--weight-grad`` also times three ways of computing the transposed convolutions' weight gradient (oneDNN's
deconvolution, the same as a forward convolution's weight gradient with input and gradient swapped, and
unfold + one GEMM) on the four up-block shapes. CPU only: oneDNN is PyTorch's CPU convolution library.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import flops_per_image, toolkit_loop, toolkit_run, write_mnist  # noqa: E402

UP_BLOCKS = [(452, 256, 2), (384, 196, 4), (292, 128, 8), (200, 96, 16)]  # (in, out channels, input side) by default


def child(batch: int, steps: int) -> None:
    """Runs in the subprocess: warm up, then ``steps`` timed steps with oneDNN's verbose output on."""
    with tempfile.TemporaryDirectory(prefix="breakdown-") as tmp:
        write_mnist(Path(tmp), n_train=max(256, batch), n_test=10)
        step = toolkit_loop(toolkit_run(Path(tmp), torch.device("cpu"), batch), 1)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        print(f"wall_ms_per_step {(time.perf_counter() - t0) * 1000 / steps:.2f}", flush=True)
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            for _ in range(steps):
                step()


def parse(lines: list[str], steps: int) -> tuple[dict, dict]:
    """oneDNN v1 verbose ``exec`` lines -> ms per step by (primitive, pass) and by (primitive, pass, shape)."""
    by_pass, by_layer = defaultdict(float), defaultdict(float)
    for line in lines:
        fields = line.split(",")
        if len(fields) < 8 or fields[0] != "onednn_verbose" or fields[3] != "exec":
            continue
        primitive, prop, shape, ms = fields[5], fields[7], fields[-2], float(fields[-1])
        key = ("reorder", "") if primitive == "reorder" else (primitive, prop)
        by_pass[key] += ms / steps
        by_layer[(*key, shape if primitive != "reorder" else "")] += ms / steps
    return by_pass, by_layer


def layer_macs(primitive: str, shape: str) -> float:
    """Multiply-accumulates of one pass of a oneDNN (de)convolution descriptor (``mb16_ic200oc96_ih16oh32kh4…``):
    each output pixel of a convolution, or each input pixel of a deconvolution, meets kh x kw taps."""
    d = {k: int(v) for k, v in re.findall(r"(mb|ic|oc|ih|oh|kh|iw|ow|kw)(\d+)", shape)}
    pixels = d["ih"] * d["iw"] if primitive == "deconvolution" else d["oh"] * d["ow"]
    return d["mb"] * d["ic"] * d["oc"] * pixels * d["kh"] * d["kw"]


def weight_grad_paths(batch: int, repeats: int = 20) -> list[dict]:
    """The transposed convolutions' weight gradient computed three ways, in bf16, median ms."""
    aten, rows = torch.ops.aten, []

    def median_ms(fn):
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    for c_in, c_out, side in UP_BLOCKS:
        x = torch.randn(batch, c_in, side, side, dtype=torch.bfloat16)
        w = torch.randn(c_in, c_out, 4, 4, dtype=torch.bfloat16)
        gy = torch.randn(batch, c_out, 2 * side, 2 * side, dtype=torch.bfloat16)
        paths = {
            "deconvolution": lambda: aten.convolution_backward(gy, x, w, None, [2, 2], [1, 1], [1, 1], True, [0, 0],
                                                               1, [False, True, False])[1],
            # y = conv_transpose(x, w) has grad_x = conv2d(gy, w): so dW is that convolution's weight gradient
            "swapped conv": lambda: aten.convolution_backward(x, gy, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0],
                                                              1, [False, True, False])[1],
            "unfold+GEMM": lambda: torch.einsum("ncl,nkl->ck", x.flatten(2),
                                                F.unfold(gy, 4, padding=1, stride=2)).view(c_in, c_out, 4, 4),
        }
        reference = paths["deconvolution"]().float()
        row = {"shape": f"{c_in}->{c_out} @{side}x{side}"}
        for name, fn in paths.items():
            row[name] = median_ms(fn)
            error = (fn().float() - reference).abs().max().item() / reference.abs().max().item()
            assert error < 2e-2, f"{name} disagrees with oneDNN's weight gradient ({error:.3g})"
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="steps recorded with oneDNN's verbose output")
    p.add_argument("--weight-grad", action="store_true", help="also time three transposed-conv weight gradients")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.batch, args.steps)
        return 0
    out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(args.batch), "--steps", str(args.steps)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    wall = float(next(line.split()[1] for line in out if line.startswith("wall_ms_per_step")))
    by_pass, by_layer = parse(out, args.steps)
    total = sum(by_pass.values())
    print(f"seed U-Net, batch {args.batch}, defaults, {torch.get_num_threads()} threads: {wall:.1f} ms per step "
          f"without verbose output; oneDNN primitives {total:.1f} ms per step (verbose run)\n")
    print(f"{'primitive':<16}{'pass':<18}{'ms/step':>8}{'share':>8}")
    for (primitive, prop), ms in sorted(by_pass.items(), key=lambda kv: -kv[1]):
        print(f"{primitive:<16}{prop:<18}{ms:8.2f}{ms / total:8.0%}")
    passes = [(layer_macs(prim, shape), ms, shape) for (prim, _, shape), ms in by_layer.items() if prim != "reorder"]
    largest = max(macs for macs, _, _ in passes)  # small passes are overhead-bound: take the rate of the large ones
    best = max((macs / ms / 1e6, shape) for macs, ms, shape in passes if macs >= largest / 4)
    macs_per_step = flops_per_image(torch.device("cpu")) / 2 * args.batch
    print(f"\nfastest of the largest passes: {best[0]:.0f} GMAC/s ({best[1]})")
    print(f"step: {macs_per_step / 1e9:.2f} GMAC -> {macs_per_step / best[0] / 1e6:.1f} ms at that rate "
          f"(a floor for the convolutions; measured {total - by_pass.get(('reorder', ''), 0):.1f} ms + "
          f"{by_pass.get(('reorder', ''), 0):.1f} ms of reorders)")
    print(f"\n{'layer':<68}{'pass':<18}{'ms/step':>8}{'GMAC/s':>8}")
    for (primitive, prop, shape), ms in sorted(by_layer.items(), key=lambda kv: -kv[1])[:15]:
        rate = f"{layer_macs(primitive, shape) / ms / 1e6:8.0f}" if shape else ""
        label = {"deconvolution": "deconv", "convolution": "conv"}.get(primitive, primitive)
        print(f"{label + ' ' + shape:<68}{prop:<18}{ms:8.2f}{rate}")
    if args.weight_grad:
        print(f"\ntransposed-conv weight gradient, bf16, batch {args.batch}, median ms:")
        rows = weight_grad_paths(args.batch)
        names = [k for k in rows[0] if k != "shape"]
        print(f"{'up block':<20}" + "".join(f"{n:>16}" for n in names))
        for row in rows:
            print(f"{row['shape']:<20}" + "".join(f"{row[n]:16.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
