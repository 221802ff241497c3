"""Test-only hook, a mock of a GPU this machine lacks: tests/slurm/test_unsupported_gpu.py puts this folder on the
PYTHONPATH of a job on the local SLURM cluster (sbatch passes the environment on), so every Python process of the job
runs this at start-up. With ``DDPM_TEST_FAKE_GPU="<name>:<major>.<minor>"`` it replaces ddpm_hpc.devices' capability
queries, so the job sees one GPU of that name and compute capability; the decisions (``runs_on`` against the real
arch list of the installed torch, the exit code, no requeue) are the real code. Nothing outside tests/ knows it.
"""

import os

_spec = os.environ.get("DDPM_TEST_FAKE_GPU")
if _spec:
    from ddpm_hpc import devices

    _name, _, _cap = _spec.rpartition(":")
    _major, _minor = (int(v) for v in _cap.split("."))
    devices.cuda_count = lambda: 1
    devices.device_capability = lambda index: (_major, _minor)
    devices.device_name = lambda index: _name
