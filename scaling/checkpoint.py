"""Checkpoints that survive a crash at any instant.

A run keeps one checkpoint, ``<run dir>/ckpt/last.pt``: the run's spec, the
number of steps done, the model and optimizer state, the per-step losses so far,
the training time so far and the torch RNG states, all as tensors and plain
values so that it loads with ``weights_only=True``. It is written to a temporary
file beside the target, fsynced, renamed over the old checkpoint, and the
directory is fsynced, so after a crash (even SIGKILL or power loss) the file is
either the previous checkpoint or the new one, never a torn mix.

The checkpoint lives outside the train job's declared outputs (``metrics.json``,
``curve.parquet``), so Snakemake, which deletes the outputs of a failed job,
leaves it in place and a rerun of the job resumes from it.

Nothing else needs saving for an exact resume: the batch of a step is a pure
function of (seed, step) (:func:`scaling.train.batch_starts`) and the learning
rate a pure function of the step (:mod:`scaling.schedules`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from scaling.io import atomic_path

FORMAT = 1


def path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "ckpt" / "last.pt"


def save(run_dir: str | Path, state: dict) -> None:
    """Write ``state`` as the run's checkpoint atomically (write, fsync, rename, fsync the directory)."""
    target = path(run_dir)
    with atomic_path(target) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(run_dir: str | Path, spec: dict) -> dict | None:
    """The run's checkpoint, or None if there is none or it belongs to another spec or format.

    A checkpoint of another spec (the study changed a run-defining setting) is
    never resumed from: the run starts over and overwrites it.
    """
    p = path(run_dir)
    if not p.exists():
        return None
    state = torch.load(p, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT or state.get("spec") != spec:
        return None
    return state


def remove(run_dir: str | Path) -> None:
    shutil.rmtree(path(run_dir).parent, ignore_errors=True)
