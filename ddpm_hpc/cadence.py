"""When the training loop saves, refreshes the report and, with several ranks, compares the stop flags: small rules
on steps and seconds, kept apart from the loop so they are tested without a GPU or a cluster.

- Saves: every ``train.checkpoint_every`` steps and every ``train.checkpoint_minutes`` (whichever comes first), on a
  stop signal, and at the last step. ``checkpoint_every: auto`` (the default) saves by time only on a GPU, where
  1,000 steps take seconds, and every 1,000 steps on a CPU (:func:`checkpoint_every_steps`).
- The loss plot and the report page are redrawn at a save, at most once per ``train.report_minutes``, and at the end.
- Stop flags (a signal arrived, a timed save is due): a single process reads them after every step (free). Several
  ranks must act on them at the same step, which needs an all-reduce and a host sync, so they compare them only at
  agreed steps (:class:`Agreement`): about once a second of training and at least every ``AGREE_MAX_STEPS`` steps.
  Every rank computes the same schedule from the same all-reduced numbers, so all stop at the same step; a signal
  waits at most one interval (a second or so) on top of the step it arrived in.
"""

from __future__ import annotations

import math
import time

CPU_CHECKPOINT_EVERY = 1000  # what checkpoint_every: auto means on a CPU (a save every few minutes there)
AGREE_SECONDS = 1.0  # several ranks: compare stop flags about this often...
AGREE_MAX_STEPS = 100  # ...and at least every this many steps


def checkpoint_every_steps(setting: int | str, minutes: float, device_type: str) -> int:
    """``train.checkpoint_every`` for a run on ``device_type``: N > 0 saves every N steps; 0 never by steps (only by
    time). ``auto``: 0 on a GPU, where the time cadence (``checkpoint_minutes``) keeps saves under 1 % of the training
    time, else :data:`CPU_CHECKPOINT_EVERY`; also on a GPU when ``checkpoint_minutes`` is 0, so that a run always
    has periodic saves."""
    if setting != "auto":
        return int(setting)
    return 0 if device_type == "cuda" and minutes > 0 else CPU_CHECKPOINT_EVERY


def save_due(step: int, last_step: int, every_steps: int, stopping: bool, timed: bool) -> bool:
    return (every_steps > 0 and step % every_steps == 0) or step >= last_step or stopping or timed


def agreement_interval(seconds_per_step: float, target_s: float = AGREE_SECONDS,
                       max_steps: int = AGREE_MAX_STEPS) -> int:
    """Steps until the next agreement: about ``target_s`` of training at the slowest rank's pace, 1 to max_steps."""
    if not (seconds_per_step > 0 and math.isfinite(seconds_per_step)):
        return 1
    return max(1, min(max_steps, int(target_s / seconds_per_step)))


class Agreement:
    """At which steps the ranks of a run compare their stop flags. A single process: every step. Several ranks: the
    first step of this (re)start, then every :func:`agreement_interval` steps at the pace the last agreement
    all-reduced (the slowest rank's), and always at ``last_step``. The schedule depends only on the step numbers and
    on values that every rank received from the same all-reduce, so every rank agrees at the same steps."""

    def __init__(self, start_step: int, last_step: int, world_size: int, clock=time.monotonic):
        self.every_step = world_size <= 1
        self.next_step, self.last_step = start_step + 1, last_step
        self._clock = clock
        self._since_step, self._since = start_step, clock()

    def due(self, step: int) -> bool:
        return self.every_step or step >= self.next_step or step >= self.last_step

    def pace(self, step: int) -> float:
        """This rank's seconds per step since the last agreement (what it contributes to the all-reduce)."""
        return (self._clock() - self._since) / max(step - self._since_step, 1)

    def agreed(self, step: int, slowest_pace: float) -> None:
        self.next_step = step + agreement_interval(slowest_pace)
        self._since_step, self._since = step, self._clock()


class Throttle:
    """True at most once per ``seconds`` (the first call is always True); 0 seconds: always True."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self._clock, self._last = seconds, clock, None

    def ready(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True


def save_overhead(step_s: float, save_s: float, refresh_s: float, every_steps: int, minutes: float,
                  report_minutes: float) -> dict:
    """The share of training time spent in periodic saves at a cadence (for the benchmarks): a save after every
    ``every_steps`` steps of ``step_s`` or ``minutes`` of training, whichever comes first, each costing ``save_s``,
    plus a report refresh of ``refresh_s`` at a save at most every ``report_minutes``."""
    by_steps = every_steps * step_s if every_steps > 0 else math.inf
    interval = min(by_steps, 60 * minutes if minutes > 0 else math.inf)
    if math.isinf(interval):
        return {"seconds_between_saves": interval, "saves_per_refresh": 1, "fraction": 0.0}
    per_refresh = max(1, math.ceil(60 * report_minutes / interval)) if report_minutes > 0 else 1
    cost = save_s + refresh_s / per_refresh
    return {"seconds_between_saves": interval, "saves_per_refresh": per_refresh, "fraction": cost / (interval + cost)}
