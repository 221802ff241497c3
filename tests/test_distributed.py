"""Data-parallel training on the CPU (gloo): W ranks with the global batch B train the same model as 1 process with
batch B, and a W-rank checkpoint resumes with another world size.

The ranks are real processes (``torch.multiprocessing.spawn``) joined through ``distributed.init_from_env``
(MASTER_ADDR=127.0.0.1, a free port), each with one torch thread. The model is a tiny seed U-Net, whose BatchNorm
layers become :class:`ddpm_hpc.distributed.CPUSyncBatchNorm`, with EMA, so every kind of state is compared.

Why "close" and not ``torch.equal``: the maths is the same (same rows, same noise and t, BatchNorm over the global
batch, gradient = mean over the global batch), but the floating-point sums are done in another order. One process
sums the per-pixel squared errors of B rows at once; two ranks sum B/2 rows each, scale by 1/2 (DDP divides each
rank's gradient by W) and add them in the gloo all-reduce. The BatchNorm statistics are likewise sums of per-rank
partial sums. Each reordering changes the last bits (~1e-7 relative, float32), and Adam's update divides by
sqrt(v), which amplifies relative differences of near-zero gradients, so after a few steps the weights agree to
``ATOL`` rather than exactly. Two runs with the same world size do repeat exactly (see tests/slurm).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from _train_helpers import TINY, compare, final_tensors, free_port, roots

STEPS = 6
SIGNAL_AT = 2  # rank 1 gets SIGUSR2 after this step
STEP_DELAY = 0.25  # seconds per step on every rank in the signal test: the ranks then compare flags every <= 4 steps
CONFIG = {**TINY, "data": {**TINY["data"], "batch_size": 8},
          "model": {**TINY["model"], "conditioning": "embedding"},
          # fp32: with bf16 autocast (train.precision=auto on CPUs with native bf16) every activation is rounded to
          # 8 bits of mantissa, and the 1-vs-2-rank differences are those roundings (~1e-2), not the reduction order
          "train": {**TINY["train"], "steps": STEPS, "label_dropout": 0.25, "log_every": 2, "checkpoint_every": 2,
                    "precision": "fp32"}}


def _experiment(steps: int = STEPS):
    from ddpm_hpc.config import build_experiment

    raw = json.loads(json.dumps(CONFIG))
    raw["train"]["steps"] = steps
    return build_experiment("ddp", raw, "test_distributed")


def _rank_main(rank: int, world: int, port: int, root: str, exp_json: str, stop_rank: int) -> None:
    """One rank: environment as a launcher (torchrun, submitit) would set it, then the ordinary training call."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from ddpm_hpc import distributed
    from ddpm_hpc.config import experiment_from_json
    from ddpm_hpc.trainer import train

    def signal_once(run):  # SIGUSR2 reaches this rank only: every rank must still stop at the same step
        if stop_rank >= 0:
            time.sleep(STEP_DELAY)
        if rank == stop_rank and run.step == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGUSR2)

    with roots(Path(root)):
        ctx = distributed.init_from_env("cpu")
        try:
            outcome = train(experiment_from_json(exp_json), ctx, log_fn=lambda *_: None, after_step=signal_once)
        finally:
            distributed.shutdown()
    (Path(root) / f"outcome-{rank}.json").write_text(json.dumps({"status": outcome.status, "step": outcome.step}))


def train_ranks(root: Path, world: int, exp, stop_rank: int = -1) -> list[dict]:
    torch.multiprocessing.spawn(_rank_main, args=(world, free_port(), str(root), exp.to_json(), stop_rank),
                                nprocs=world, join=True)
    return [json.loads((root / f"outcome-{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The reference: one process, global batch 8, STEPS steps."""
    from ddpm_hpc.trainer import train

    root = tmp_path_factory.mktemp("one-rank")
    with roots(root):
        assert train(_experiment(), log_fn=lambda *_: None).step == STEPS
    return final_tensors(root)


def test_two_ranks_train_the_same_weights_as_one_process(tmp_path, one_rank):
    outcomes = train_ranks(tmp_path, 2, _experiment())
    assert outcomes == [{"status": "finished", "step": STEPS}] * 2
    ours = final_tensors(tmp_path)
    worst = compare(ours, one_rank)
    print(f"2 ranks vs 1 process after {STEPS} steps: max |diff| {worst:.2e}")
    # only rank 0 wrote: one metrics file with one line per log step, the global loss
    lines = (tmp_path / "experiments" / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(2, STEPS + 1, 2))


def test_a_signal_on_one_rank_stops_all_and_one_rank_resumes_the_checkpoint(tmp_path, one_rank):
    """The ranks compare stop flags only every few steps (ddpm_hpc/cadence.py: about once a second, so with
    STEP_DELAY every <= 4 steps): both stop at the same step, the first comparison after the signal, and save it."""
    outcomes = train_ranks(tmp_path, 2, _experiment(), stop_rank=1)
    stopped_at = outcomes[0]["step"]
    assert outcomes == [{"status": "interrupted", "step": stopped_at}] * 2  # both ranks stopped at the same step
    assert SIGNAL_AT <= stopped_at < STEPS
    saved = final_tensors(tmp_path)
    assert int(saved["data.next_step"]) == stopped_at
    from ddpm_hpc.trainer import train

    with roots(tmp_path):  # the same experiment with 1 process: continues the same global batches
        outcome = train(_experiment(), log_fn=lambda *_: None)
    assert (outcome.status, outcome.step) == ("finished", STEPS)
    worst = compare(final_tensors(tmp_path), one_rank)
    print(f"2 ranks to step {stopped_at}, then 1 process to {STEPS}, vs 1 process: max |diff| {worst:.2e}")
