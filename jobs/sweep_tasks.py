"""The job callables of a sweep's sampling and eval arrays (training runs the ordinary :class:`TrainJob`).

Both are :class:`jobs.tasks.SampleJob`'s kind of job (one process, pickled config, requeued fresh by submitit's
handler on USR2); after their work they refresh the sweep's comparison page, so it follows the members as they
finish. Eval runs ``make eval``'s ``run_eval`` on the member's checkpoint (fresh images; an existing result of the
same settings is kept, not replaced).
"""

from __future__ import annotations


from .tasks import EvalJob as _EvalJob
from .tasks import SampleJob


def _refresh_page(sweep: str) -> None:
    from ddpm_hpc.sweep_members import write_page

    page = write_page(sweep, log_fn=lambda line: print(line, flush=True))
    if page:
        print(f"wrote {page}", flush=True)


class SweepSampleJob(SampleJob):
    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, sweep: str):
        super().__init__(config_json, roots, max_requeues)
        self.sweep = sweep

    def _fresh(self) -> "SweepSampleJob":
        return SweepSampleJob(self.config_json, self.roots, self.max_requeues, self.sweep)

    def __call__(self) -> str:
        png = super().__call__()
        _refresh_page(self.sweep)
        return png


class EvalJob(_EvalJob):
    """``make eval``'s job (jobs.tasks.EvalJob) for one member; options: the sweep's ``eval:`` (n, fid_ref_images)."""

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, sweep: str, options: dict):
        super().__init__(config_json, roots, max_requeues, options)
        self.sweep = sweep

    def _fresh(self) -> "EvalJob":
        return EvalJob(self.config_json, self.roots, self.max_requeues, self.sweep, self.options)

    def __call__(self) -> str:
        path = super().__call__()
        _refresh_page(self.sweep)
        return path
