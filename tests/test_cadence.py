"""The rules of ddpm_hpc/cadence.py: the save cadence by device, the bounded report refresh, and when several ranks
compare their stop flags. Pure functions and fake clocks; the real multi-process run is in test_distributed.py."""

from __future__ import annotations

import pytest

from ddpm_hpc import cadence
from ddpm_hpc.cadence import Agreement, Throttle, agreement_interval, checkpoint_every_steps


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("setting, minutes, device, steps", [
    ("auto", 10.0, "cuda", 0),  # a GPU: by time only
    ("auto", 10.0, "cpu", 1000),  # a CPU: as before
    ("auto", 0.0, "cuda", 1000),  # no time cadence: auto still saves periodically
    (500, 10.0, "cuda", 500),  # an explicit number means the same everywhere
    (500, 10.0, "cpu", 500),
    (0, 10.0, "cpu", 0),  # 0: by time only, on any device
])
def test_checkpoint_every_by_device(setting, minutes, device, steps):
    assert checkpoint_every_steps(setting, minutes, device) == steps


def test_saves_by_steps_time_signal_and_at_the_end():
    assert [s for s in range(1, 11) if cadence.save_due(s, 10, 4, False, False)] == [4, 8, 10]
    assert [s for s in range(1, 11) if cadence.save_due(s, 10, 0, False, False)] == [10]  # time only: just the end
    assert cadence.save_due(3, 10, 0, True, False) and cadence.save_due(3, 10, 0, False, True)


@pytest.mark.parametrize("pace, steps", [(0.005, 100), (0.02, 50), (0.3, 3), (1.0, 1), (30.0, 1), (0.0, 1),
                                         (float("nan"), 1), (float("inf"), 1)])
def test_agreement_interval_is_about_a_second_and_at_most_100_steps(pace, steps):
    assert agreement_interval(pace) == steps


def test_ranks_with_different_clocks_stop_at_the_same_step_within_the_bound():
    """Three ranks with their own clocks (one slower): a signal reaches rank 2 only, after step 40. Each rank follows
    its own Agreement; at its agreement steps the flags and paces are all-reduced (max), as in the trainer. Every rank
    agrees at the same steps, and all stop at the first agreement after the signal. (Step times are powers of two, so
    the clock sums are exact.)"""
    clocks = [Clock() for _ in range(3)]
    ranks = [Agreement(0, 1000, 3, clock=c) for c in clocks]
    seconds_per_step = [1 / 64, 1 / 64, 1 / 32]
    signalled, stopped, agreed_at = [False] * 3, [None] * 3, []
    for step in range(1, 1001):
        for c, dt in zip(clocks, seconds_per_step):
            c.now += dt
        if step == 40:
            signalled[2] = True
        due = [a.due(step) for a in ranks]
        assert len(set(due)) == 1, f"ranks disagree on whether step {step} is an agreement step"
        if due[0]:
            agreed_at.append(step)
            flag, pace = max(signalled), max(a.pace(step) for a in ranks)  # the all-reduce
            for r, a in enumerate(ranks):
                a.agreed(step, pace)
                if flag:
                    stopped[r] = step
            if flag:
                break
    assert stopped[0] == stopped[1] == stopped[2] 
    assert agreed_at == [1, 33, 65]  # the slowest rank's 1/32 s per step: every 32 steps (1 s)
    assert stopped[0] == 65  # the first agreement after the signal: a bounded delay (25 steps, 0.8 s here)


def test_a_single_process_checks_every_step():
    alone = Agreement(5, 100, 1)
    assert all(alone.due(s) for s in range(6, 101))


def test_agreement_always_at_the_last_step():
    a = Agreement(0, 10, 2, clock=Clock())
    a.agreed(1, 0.001)  # 1,000 steps a second: the next one would be at step 101
    assert not any(a.due(s) for s in range(2, 10)) and a.due(10)


def test_report_throttle_passes_at_most_once_per_interval():
    clock = Clock()
    throttle = Throttle(300, clock=clock)
    passed = []
    for t in range(0, 1000, 60):  # a save every minute
        clock.now = t
        if throttle.ready():
            passed.append(t)
    assert passed == [0, 300, 600, 900]
    assert all(Throttle(0, clock=clock).ready() for _ in range(3))


@pytest.mark.parametrize("report_minutes, interrupt, refreshes", [
    (60.0, False, [2, 6]),  # the first save, then nothing for an hour: only the end (after the forward figure)
    (0.0, False, [2, 4, 6, 6]),  # every save, and again at the end
    (60.0, True, [2, 4]),  # stopped at step 4: the page is redrawn to show it
])
def test_the_report_is_refreshed_at_a_bounded_rate_and_at_the_end(tmp_path, monkeypatch, report_minutes, interrupt,
                                                                   refreshes):
    """A real tiny training run (saves at steps 2, 4, 6) through pipeline.run_training, the function the jobs and
    make local call; the plot and page refreshes are counted (they record the step the page would show)."""
    import json

    from _train_helpers import TINY, roots
    from ddpm_hpc import pipeline
    from ddpm_hpc.config import build_experiment

    raw = json.loads(json.dumps(TINY))
    raw["model"]["channels"] = [4, 4, 4, 4, 4]
    raw["train"].update(steps=6, checkpoint_every=2, report_minutes=report_minutes, ema_decay=0.0)
    exp = build_experiment("tiny", raw, "test")
    seen, step = [], {"now": 0}
    monkeypatch.setattr(pipeline, "refresh_report", lambda name, log_fn=None: seen.append(step["now"]))
    monkeypatch.setattr(pipeline, "refresh_loss_plot", lambda exp: None)
    monkeypatch.setattr(pipeline, "write_forward_figure", lambda run: "forward_process.png")

    def after_step(run):
        step["now"] = run.step
        if interrupt and run.step == 4:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGUSR2)

    with roots(tmp_path):
        outcome = pipeline.run_training(exp, log_fn=lambda *_: None, after_step=after_step)
    assert outcome.status == ("interrupted" if interrupt else "finished")
    assert seen == refreshes


def test_a_stop_signal_after_training_neither_interrupts_the_figures_nor_reaches_the_job(tmp_path, monkeypatch):
    """A time-limit warning (real SIGUSR2) that arrives while a finished run draws its figures: the figures are
    finished and the signal never reaches the handler the caller installed (in a SLURM job: submitit's, which would
    requeue the finished job)."""
    import json
    import os
    import signal

    from _train_helpers import TINY, roots
    from ddpm_hpc import pipeline
    from ddpm_hpc.config import build_experiment

    raw = json.loads(json.dumps(TINY))
    raw["model"]["channels"] = [4, 4, 4, 4, 4]
    raw["train"].update(steps=2, checkpoint_every=2, ema_decay=0.0)
    exp = build_experiment("tiny", raw, "test")
    drawn, reached, said = [], [], []

    def forward_figure(run):
        os.kill(os.getpid(), signal.SIGUSR2)  # delivered at once: the next bytecode runs the Python handler
        drawn.append(run.step)
        return "forward_process.png"

    monkeypatch.setattr(pipeline, "refresh_report", lambda name, log_fn=None: None)
    monkeypatch.setattr(pipeline, "refresh_loss_plot", lambda exp: None)
    monkeypatch.setattr(pipeline, "write_forward_figure", forward_figure)
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: reached.append(signum))
    try:
        with roots(tmp_path):
            outcome = pipeline.run_training(exp, log_fn=said.append)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert outcome.status == "finished" and drawn == [2]
    assert reached == []
    assert "SIGUSR2 received after training finished at step 2: nothing left to save" in said


def test_save_overhead_at_a_cadence():
    """1 s saves every 10 min of 5 ms steps (a GPU, by time): 1/601; every 1,000 steps instead: a save every 5 s."""
    gpu = cadence.save_overhead(0.005, 1.0, 0.0, 0, 10, 5)
    assert gpu["seconds_between_saves"] == 600 and gpu["fraction"] == pytest.approx(1 / 601)
    old = cadence.save_overhead(0.005, 1.0, 0.0, 1000, 10, 5)
    assert old["seconds_between_saves"] == 5 and old["fraction"] == pytest.approx(1 / 6)
    # saves every 2 min, report refresh (2 s) at most every 5 min: every 3rd save
    cpu = cadence.save_overhead(0.12, 0.3, 2.0, 1000, 10, 5)
    assert cpu["saves_per_refresh"] == 3 and cpu["fraction"] == pytest.approx((0.3 + 2 / 3) / (120 + 0.3 + 2 / 3))
    assert cadence.save_overhead(0.1, 1.0, 1.0, 0, 0, 5)["fraction"] == 0.0  # no periodic saves at all


@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="needs a CUDA GPU: checks that a training step never makes the host wait for the GPU")
def test_a_training_step_on_a_gpu_makes_no_host_sync(tmp_path):
    """torch's sync debug mode raises on any operation that waits for the GPU (a pageable copy, .item(), ...).
    After warm-up steps (cuDNN autotuning, the first epoch's permutation), train_step must run without one.
    Written for a GPU session; this machine has none, so it has not run here."""
    import json

    import torch
    from _train_helpers import TINY, roots
    from ddpm_hpc.config import build_experiment
    from ddpm_hpc.trainer import Run

    raw = json.loads(json.dumps(TINY))
    raw["train"].update(device="cuda", precision="auto")
    with roots(tmp_path):
        run = Run(build_experiment("tiny", raw, "test"), log_fn=lambda *_: None)
        run.model.train()
        for _ in range(3):
            run.train_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                run.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
