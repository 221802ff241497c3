"""The eval and classifier jobs: one-process jobs (like :class:`jobs.tasks.SampleJob`) that submitit pickles and runs
on a compute node; a requeue runs them again from the top."""

from __future__ import annotations

from .tasks import Job


class EvalJob(Job):
    """``make eval`` (``run_eval``) or, with a grid, ``make eval-sweep`` (``run_eval_sweep``) on a compute node, with
    the options given at submission. A requeue runs it again from the top: an eval writes its file only at the end,
    an eval-sweep reuses the points its table already holds."""
    kind = "eval"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, options: dict,
                 grid: dict | None = None):
        super().__init__(config_json, roots, max_requeues)
        self.options, self.grid = dict(options), grid
        if grid is not None:
            self.kind = "eval-sweep"

    def _fresh(self) -> "EvalJob":
        return EvalJob(self.config_json, self.roots, self.max_requeues, self.options, self.grid)

    def __call__(self) -> str:
        if self.grid is not None:
            from ddpm_hpc.metrics.eval_sweep import run_eval_sweep

            return self._run_once(lambda exp: run_eval_sweep(exp, self.grid, **self.options))
        from ddpm_hpc.metrics.eval import run_eval

        return self._run_once(lambda exp: run_eval(exp, **self.options))


class ClassifierJob(Job):
    """``ddpm-hpc classifier`` for the experiment's dataset on a compute node (``train.device``: a GPU when given)."""
    kind = "classifier"

    def __init__(self, config_json: str, roots: dict[str, str], max_requeues: int, options: dict):
        super().__init__(config_json, roots, max_requeues)
        self.options = dict(options)

    def _fresh(self) -> "ClassifierJob":
        return ClassifierJob(self.config_json, self.roots, self.max_requeues, self.options)

    def __call__(self) -> str:
        from ddpm_hpc.distributed import DistContext
        from ddpm_hpc.devices import resolve_device
        from ddpm_hpc.metrics.classifier import train_classifier

        def work(exp):
            device = resolve_device(exp.train.device, DistContext())
            return train_classifier(exp.data.dataset, device=device, **self.options).path

        return self._run_once(work)
