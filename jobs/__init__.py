"""The cluster side of ddpm-hpc: submitit jobs, submission, status, logs and cancel (``make submit`` & co).

``ddpm_hpc`` itself never imports SLURM or submitit; this package wraps its pipeline functions:

- :mod:`jobs.tasks`     the job callables (``TrainJob``, ``SampleJob``) that run on the compute node
- :mod:`jobs.eval_tasks`  ``EvalJob``, ``ClassifierJob``: the eval and classifier job callables
- :mod:`jobs.submit_eval`  ``make eval`` / ``eval-sweep`` / ``classifier`` submitted as jobs
- :mod:`jobs.executor`  ``slurm:`` section of an experiment -> sbatch parameters -> ``submitit.SlurmExecutor``
- :mod:`jobs.submit`    submit (training + chained sampling), sample-only submit, cancel; the live-job guard
- :mod:`jobs.status`    one status line per experiment, log tails
- :mod:`jobs.job_state` the one decision of a job's state (make status, and the report pages as data)
- :mod:`jobs.registry`  ``experiments/<name>/jobs.json`` (what was submitted) and ``logs/events.jsonl`` (what ran)
- :mod:`jobs.sweep`     ``make sweep``: a sweep's members as training / sampling / eval job arrays; ``cancel SWEEP=``
- :mod:`jobs.sweep_status`, :mod:`jobs.sweep_tasks`   ``make status SWEEP=``; the sampling and eval array jobs
- :mod:`jobs.slurm`     thin wrappers around squeue / sacct / scancel / scontrol
- :mod:`jobs.doctor`    ``make doctor``: torch, GPUs, partitions vs the ``slurm:`` settings, storage, data, and a probe
  job (``doctor_slurm``/``doctor_fit``: cluster facts and fit; ``doctor_host``; ``doctor_probe``: the job itself)
- :mod:`jobs.cli`       the ``ddpm-hpc`` command (its console script): the core's commands plus ``submit|submit-sample|
                        status|logs|cancel|doctor|sweep|submit-eval[-sweep]|submit-classifier``
"""

from .job_state import register_with_report

# Wherever the cluster side is loaded (the ddpm-hpc command, every job), the report pages show the job states it
# decides; the core itself never asks SLURM.
register_with_report()
