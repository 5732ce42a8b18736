"""What someone watching a run sees besides its progress lines: the log's header, and optionally its curve in
TensorBoard.

The header (:func:`log_header`) opens every attempt's log: the run id, N, D, the
steps, the device and the training settings, so a log read on its own says what it
is the log of. With ``engine.tensorboard`` the run's per-step training loss and
learning rate, and its final validation loss, also go to TensorBoard event files
under ``results/<study>/tensorboard/<run_id>/`` (:class:`CurveLog`), written at each
progress line, so ``tensorboard --logdir results/<study>/tensorboard`` shows every
run as it trains. TensorBoard is an optional extra (``pip install -e ".[tensorboard]"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from scaling.train.shapes import count_params

if TYPE_CHECKING:
    from scaling.train.loop import Training


def log_header(run: Training) -> None:
    """The log's first lines: the run, its budget, its device and its training settings."""
    spec, shape, cfg = run.spec, run.shape, run.cfg
    device = (f"cuda ({torch.cuda.get_device_name(run.device)}) × {run.world.size}, bf16 autocast"
              f"{', torch.compile' if run.compiled else ''}" if run.cuda else
              f"cpu × {run.world.size}, {run.threads} thread(s) each, fp32")
    run.say(f"[{run.run_id}] run {run.run_id}: N = {count_params(shape)['n_params']:,} parameters "
            f"(d_model {shape.d_model}, n_layers {shape.n_layers}, n_heads {shape.n_heads}), "
            + (f"trunk segment, steps {run.segment[0]:,} to {run.segment[1]:,}" if run.segment else
               f"D = {spec['tokens']:,} tokens (M = {spec['token_multiplier']:g}), {run.steps:,} steps")
            + f" of {cfg['batch_tokens']:,} tokens, "
            f"lr {spec['lr']:g}, seed {spec['seed']}")
    run.say(f"[{run.run_id}] device: {device}")
    run.say(f"[{run.run_id}] training: {json.dumps(cfg, sort_keys=True)}")


class CurveLog:
    """A run's curve in TensorBoard: ``train_loss`` and ``lr`` per step, ``val_loss`` at the end."""

    def __init__(self, root: str | Path, run: Training, start: int):
        from torch.utils.tensorboard import SummaryWriter  # the optional extra; the study's check asks for it

        self.writer = SummaryWriter(str(Path(root) / run.run_id))
        self.written = start  # a resumed run's earlier steps are in the event files of its earlier attempts

    def add(self, run: Training, done: int) -> None:
        """Every step read since the last call, up to ``done``; then flush, so TensorBoard shows them now."""
        for step in range(self.written, done):
            if np.isfinite(run.losses[step]):
                self.writer.add_scalar("train_loss", run.losses[step], step + 1)
            self.writer.add_scalar("lr", run.lr(step), step + 1)
        self.written = max(self.written, done)
        self.writer.flush()

    def close(self, run: Training, done: int, val_loss: float) -> None:
        """The steps not yet written and the final validation loss."""
        self.add(run, done)
        if np.isfinite(val_loss):
            self.writer.add_scalar("val_loss", val_loss, done)
        self.writer.close()
