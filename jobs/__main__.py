"""``python -m jobs``: the ``ddpm-hpc`` command, as its console script runs it."""

import sys

from .cli import main

sys.exit(main())
