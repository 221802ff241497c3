"""The cluster side of ddpm-hpc: submitit jobs, submission, status, logs and cancel (``make submit`` & co).

``ddpm_hpc`` itself never imports SLURM or submitit; this package wraps its pipeline functions:

- :mod:`jobs.tasks`     the job callables (``TrainJob``, ``SampleJob``) that run on the compute node
- :mod:`jobs.executor`  ``slurm:`` section of an experiment -> sbatch parameters -> ``submitit.SlurmExecutor``
- :mod:`jobs.submit`    submit (training + chained sampling), sample-only submit, cancel; the live-job guard
- :mod:`jobs.status`    one status line per experiment, log tails
- :mod:`jobs.registry`  ``experiments/<name>/jobs.json`` (what was submitted) and ``logs/events.jsonl`` (what ran)
- :mod:`jobs.sweep`     ``make sweep``: a sweep's members as training / sampling / eval job arrays; ``cancel SWEEP=``
- :mod:`jobs.sweep_status`, :mod:`jobs.sweep_tasks`   ``make status SWEEP=``; the sampling and eval array jobs
- :mod:`jobs.slurm`     thin wrappers around squeue / sacct / scancel / scontrol
- :mod:`jobs.cli`       the ``ddpm-hpc submit|submit-sample|status|logs|cancel|sweep`` subcommands
"""
