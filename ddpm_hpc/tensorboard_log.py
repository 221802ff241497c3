"""TensorBoard events for ``train.tensorboard: true`` (an optional extra: ``pip install ddpm-hpc[tensorboard]``).

``experiments/<name>/tensorboard/`` receives the scalars of every ``metrics.jsonl`` line (loss, smoothed loss, img/s,
at the same steps) and the preview grids written when ``sample.every`` fires, so ``tensorboard --logdir
experiments/`` compares any runs. It hangs off the trainer's callbacks (``after_step``, ``every_steps``,
``on_checkpoint``) and reads the metrics lines the trainer has just written, so the training loop knows nothing of it.
Only rank 0 writes. A resumed run opens its writer with ``purge_step`` = the first step it trains, so TensorBoard
hides what an earlier process logged after the checkpoint it resumed from (the same lines ``metrics.jsonl`` moves to
``metrics.rewound.jsonl``), and a rewound run shows no duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import paths
from .errors import UserError

FOLDER = "tensorboard"
INSTALL = "train.tensorboard needs `pip install ddpm-hpc[tensorboard]`"
SCALARS = {"loss": "train/loss", "loss_smooth": "train/loss_smooth", "img_per_s": "train/img_per_s"}


def require() -> None:
    """Fail before training starts (one line, exit code 2) when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - raises ImportError without tensorboard
    except ImportError:
        raise UserError(f"{INSTALL} (the tensorboard package is not installed), or set train.tensorboard=false") \
            from None


class TensorBoardLog:
    """The callbacks of one training process on rank 0. The writer opens at the first step this process trains."""

    def __init__(self, name: str):
        self.name = name
        self.folder = paths.experiment_dir(name) / FOLDER
        self.metrics = paths.experiment_dir(name) / "metrics.jsonl"
        self.writer = None
        self.first_step = 0
        self.offset = 0  # bytes of metrics.jsonl already turned into events

    def _open(self, first_step: int, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.first_step = first_step
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=first_step)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", first_step)

    def after_step(self, run) -> None:
        """Every step: open the writer once; send the metrics lines written since the last call (a stat per step)."""
        if self.writer is None:
            self._open(run.step, run.exp.to_dict())
        try:
            size = self.metrics.stat().st_size
        except OSError:
            return
        if size <= self.offset:
            return
        with open(self.metrics, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line is written whole before the trainer returns to us
        self.offset += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("step"), int) or \
                    record["step"] < self.first_step:
                continue  # a line of an earlier process (already in TensorBoard)
            for key, tag in SCALARS.items():
                if isinstance(record.get(key), (int, float)):
                    self.writer.add_scalar(tag, record[key], record["step"])

    def preview(self, run, png: Path | None) -> None:
        """After a preview grid: the same picture, at its step."""
        if png is None or not Path(png).is_file():
            return
        if self.writer is None:
            self._open(run.step, run.exp.to_dict())
        import numpy as np
        from PIL import Image  # matplotlib's dependency

        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image("samples/preview", pixels, run.step, dataformats="HWC")

    def flush(self, *_args) -> None:
        """At each checkpoint: what the checkpoint covers is on disk too."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
