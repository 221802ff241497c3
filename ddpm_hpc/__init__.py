"""ddpm_hpc: DDPM and flow-matching training and sampling, resumable, for SLURM clusters and laptops.

The core knows nothing of SLURM: cluster glue lives in the top-level ``jobs`` package.
"""

__version__ = "0.1.0"
