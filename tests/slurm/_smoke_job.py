"""A tiny resumable job for test_cluster_smoke.py.

It lives in its own module (not the test file) so that the job can import it: the test puts this folder on
PYTHONPATH, which sbatch passes to the job, and cloudpickle pickles the class by reference.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import submitit


class CountTo(submitit.helpers.Checkpointable):
    """Counts to ``n_steps`` (one step per ``step_s`` s), writing ``step.txt`` after every step.

    ``checkpoint()`` (inherited) pickles ``self``, so a requeued run resumes from the step it reached.
    Every start appends ``<SLURM_RESTART_COUNT> <step>`` to ``starts.txt``.
    """

    def __init__(self, workdir: str, n_steps: int, step_s: float) -> None:
        self.workdir = workdir
        self.n_steps = n_steps
        self.step_s = step_s
        self.step = 0

    def __call__(self) -> int:
        work = Path(self.workdir)
        with open(work / "starts.txt", "a") as f:
            f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')} {self.step}\n")
        while self.step < self.n_steps:
            time.sleep(self.step_s)
            self.step += 1
            (work / "step.txt").write_text(str(self.step))
        return self.step
