"""Shared pytest fixtures. The data writers themselves live in ``tests/fixtures.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import fixtures` works under any pytest import mode

from fixtures import write_cifar10, write_mnist  # noqa: E402


@pytest.fixture
def mnist_root(tmp_path, monkeypatch) -> Path:
    """A data root holding a small synthetic MNIST (200 train, 50 test); DDPM_HPC_DATA points at it."""
    write_mnist(tmp_path)
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch) -> Path:
    """A data root holding a small synthetic CIFAR-10 (5 x 40 train, 40 test); DDPM_HPC_DATA points at it."""
    write_cifar10(tmp_path)
    monkeypatch.setenv("DDPM_HPC_DATA", str(tmp_path))
    return tmp_path


# Small tensors on a shared 2-core machine: more threads only contend (several times slower under load). Set once for
# the whole session: a module-scoped fixture trained under one thread count and compared bitwise with a run under
# another would differ (reduction order), so the count must not change between tests.
torch.set_num_threads(1)
