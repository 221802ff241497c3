"""The job callables of a sweep's sampling and eval arrays (training runs the ordinary :class:`TrainJob`).

Both are :class:`jobs.tasks.SampleJob`'s kind of job (one process, pickled config, requeued fresh by submitit's
handler on USR2); after their work they refresh the sweep's comparison page, so it follows the members as they
finish. Eval runs ``make eval``'s ``run_eval`` on the member's checkpoint (fresh images; an existing result of the
same settings is kept, not replaced).
"""

from __future__ import annotations

import os

from .tasks import SampleJob, _Job


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


class EvalJob(_Job):
    kind = "eval"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, sweep: str, options: dict):
        super().__init__(config_json, roots, max_requeues)
        self.sweep = sweep
        self.options = dict(options)

    def _fresh(self) -> "EvalJob":
        return EvalJob(self.config_json, self.roots, self.max_requeues, self.sweep, self.options)

    def __call__(self) -> str:
        from ddpm_hpc.metrics.eval import run_eval

        exp, _ = self._setup()
        self._event(exp.name, "start", host=os.uname().nodename)
        try:
            path = run_eval(exp, n=self.options.get("n"), fid_ref_images=self.options.get("fid_ref_images", 0))
        except Exception as exc:
            self._fail(exp.name, exc)
            raise
        self._event(exp.name, "finished", message=str(path))
        _refresh_page(self.sweep)
        return str(path)
