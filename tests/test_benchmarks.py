"""The benchmark scripts run and report what they claim (no timings are asserted: speed numbers come from running
them, see docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import conv_breakdown  # noqa: E402


def run_script(*args: str, env: dict | None = None, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_quick_times_the_practical_loop_and_the_trainer_side_by_side(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = run_script("benchmarks/bench.py", "--quick", "--threads", "1", "--out", str(tmp_path / "results"),
                     env={"TMPDIR": str(scratch)})
    (result_file,) = (tmp_path / "results").glob("*.json")
    result = json.loads(result_file.read_text())
    rows = {row["name"]: row for row in result["training"]}
    assert {"practical", "plain", "defaults"} <= set(rows), rows.keys()
    for row in rows.values():
        assert row["img_per_s"] > 0 and row["batch"] == 8 and len(row["repeats_s"]) == 2
    assert rows["practical"]["ratio_vs_practical"] == pytest.approx(1.0)
    assert rows["defaults"]["ratio_vs_practical"] == pytest.approx(
        rows["defaults"]["img_per_s"] / rows["practical"]["img_per_s"], rel=1e-6)
    samplers = {row["sampler"] for row in result["sampling"]}
    assert {"ddim", "euler", "heun"} <= samplers  # --quick leaves out DDPM-400
    assert all(row["nfe_per_image"] >= 1 for row in result["sampling"])
    ckpt = result["checkpoint"]
    assert ckpt["bytes"] > 0 and 0 < ckpt["share_of_training"] < 1 and ckpt["report_refresh_s"] > 0
    gpu = result["device"].startswith("cuda")
    assert ckpt["checkpoint_every"] == "auto" and ckpt["checkpoint_every_steps_here"] == (0 if gpu else 1000)
    assert f"save overhead: {100 * ckpt['share_of_training']:.2f} % of training time at the default cadence" in out
    assert "target < 1 %" in out
    assert "practical" in out and str(result_file) in out
    assert [p.name for p in scratch.glob("bench-*")] == [], "the benchmark left its temporary files behind"


@pytest.mark.parametrize("layer, x_shape, descriptor", [
    (nn.ConvTranspose2d(200, 96, 4, 2, 1, bias=False), (2, 200, 16, 16),
     "mb2_ic200oc96_ih16oh32kh4sh2dh0ph1_iw16ow32kw4sw2dw0pw1"),
    (nn.Conv2d(72, 96, 4, 2, 1, bias=False), (2, 72, 16, 16), "mb2_ic72oc96_ih16oh8kh4sh2dh0ph1_iw16ow8kw4sw2dw0pw1"),
    (nn.Conv2d(196, 256, 3, 1, 1, bias=False), (2, 196, 2, 2), "mb2_ic196oc256_ih2oh2kh3sh1dh0ph1_iw2ow2kw3sw1dw0pw1"),
])
def test_layer_macs_matches_torch_flop_counter(layer, x_shape, descriptor):
    primitive = "deconvolution" if isinstance(layer, nn.ConvTranspose2d) else "convolution"
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(x_shape))
    assert conv_breakdown.layer_macs(primitive, descriptor) == counter.get_total_flops() / 2


def test_parse_sums_onednn_exec_lines_per_pass_and_layer():
    shape = "mb16_ic200oc96_ih16oh32kh4sh2dh0ph1_iw16ow32kw4sw2dw0pw1"
    lines = [
        f"onednn_verbose,v1,primitive,exec,cpu,deconvolution,brg_deconv:avx512_core_bf16,forward_training,"
        f"src:bf16 wei:bf16,attr-scratchpad:user,alg:deconvolution_direct,{shape},3.0",
        f"onednn_verbose,v1,primitive,exec,cpu,deconvolution,brg_deconv:avx512_core_bf16,forward_training,"
        f"src:bf16 wei:bf16,attr-scratchpad:user,alg:deconvolution_direct,{shape},1.0",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16 dst:bf16,attr-scratchpad:user,,"
        "96x200x4x4,0.5",
        "onednn_verbose,v1,primitive,create:cache_hit,cpu,reorder,jit:uni,undef,src dst,,,96x200x4x4,0.01",
        "wall_ms_per_step 40.0",
    ]
    by_pass, by_layer = conv_breakdown.parse(lines, steps=2)
    assert by_pass == {("deconvolution", "forward_training"): 2.0, ("reorder", ""): 0.25}
    assert by_layer[("deconvolution", "forward_training", shape)] == 2.0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN (mkldnn)")
def test_conv_breakdown_reports_every_pass_of_a_real_step():
    out = run_script("benchmarks/conv_breakdown.py", "--batch", "4", "--steps", "1")
    assert "ms per step" in out
    for prop in ("forward_training", "backward_data", "backward_weights"):
        assert f"deconvolution   {prop}" in out
    assert "GMAC ->" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the script does on a machine without a GPU")
def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sees no CUDA GPU" in proc.stderr
    assert "none visible" in (tmp_path / "gpu-info.txt").read_text()
