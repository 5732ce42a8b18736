"""Checkpoints that survive a crash at any instant, and the run's log across restarts.

A run keeps its two newest checkpoints in ``<run dir>/ckpt/``: ``last.pt`` and the
one before it, ``prev.pt``. Each holds the run's spec, the number of steps done, the
model and optimizer state, the per-step training losses and the curve's validation
losses so far, the training time so far and the torch RNG states, all as tensors and
plain values so that it loads with ``weights_only=True``. A new checkpoint is
written in full to a temporary file beside ``last.pt``; only then does ``last.pt``
become ``prev.pt``, and the new file, fsynced, ``last.pt`` (renames, then the
directory is fsynced). So after a crash at any instant (even SIGKILL or power loss)
the newest complete checkpoint is ``last.pt``, or ``prev.pt`` if the crash fell
between the two renames.

Loading takes ``last.pt`` and falls back to ``prev.pt`` when ``last.pt`` cannot be
read (truncated or corrupted after it was written: a copy, a full disk, a
filesystem fault), saying so in the log; with neither readable the run starts
over, saying so. Corruption inside tensor data that torch reads without error
goes unnoticed (the file has no checksum).

The checkpoints live outside the train job's declared outputs (``metrics.json``,
``curve.parquet``), so Snakemake, which deletes the outputs of a failed job,
leaves them in place and a rerun of the job resumes from them.

Nothing else needs saving for an exact resume: the batch of a step is a pure
function of (seed, step) (:func:`scaling.train.loop.batch_starts`) and the learning
rate a pure function of the step (:mod:`scaling.train.schedules`).

A ladder's trunk (:mod:`scaling.train.ladder`) writes the same state as a file of
its own at each branch point (:func:`write`), an output of the trunk segment that
ends there; a run or the next segment starts from it after checking that it is
of its trunk and step (:func:`read`).

Only one process trains a run at a time (:func:`claim`): after snakemake itself is killed (SIGKILL) its train
job can live on, and the rerun would otherwise write the same checkpoints beside it.

``ckpt/train.log`` keeps the trainer's log lines of every attempt at the run
(:func:`journal`): Snakemake deletes a job's log file before it runs the job
again, so a resumed run copies them to the top of its new log.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import IO, Callable

import torch

from scaling.io import atomic_path

FORMAT = 2  # 2: with the validation losses of the curve so far


def write(target: str | Path, state: dict) -> None:
    """Write ``state`` as a checkpoint file of its own, atomically (a ladder's trunk at a branch point)."""
    with atomic_path(target) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def read(target: str | Path, spec: dict, step: int) -> dict:
    """The checkpoint file ``target``, which must be of ``spec`` after ``step`` steps (a trunk's, for a branch or the
    trunk's next segment to start from); a ValueError names what differs and the fix."""
    state = torch.load(target, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT or state.get("spec") != spec or state.get("step") != step:
        raise ValueError(f"{target} is not the checkpoint of {spec['run_id']} after {step} steps (it is of "
                         f"{state.get('spec', {}).get('run_id')} after {state.get('step')}, or of another format or "
                         f"spec); fix: delete it, so that the trunk segment that writes it runs again")
    return state


def path(run_dir: str | Path) -> Path:
    """The newest checkpoint."""
    return Path(run_dir) / "ckpt" / "last.pt"


def previous_path(run_dir: str | Path) -> Path:
    """The checkpoint before the newest, kept until a newer one is complete."""
    return Path(run_dir) / "ckpt" / "prev.pt"


def save(run_dir: str | Path, state: dict) -> None:
    """Write ``state`` as the run's newest checkpoint; the newest so far becomes the previous one."""
    last, prev = path(run_dir), previous_path(run_dir)
    with atomic_path(last) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
        if last.exists():
            os.replace(last, prev)
    fd = os.open(last.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(run_dir: str | Path, spec: dict, log: Callable[[str], None]) -> dict | None:
    """The newest readable checkpoint of the run, or None to start over (saying why through ``log``).

    An unreadable checkpoint is reported and the previous one tried. A checkpoint
    of another spec (the study changed a run-defining setting) or format is never
    resumed from: the run starts over and overwrites it.
    """
    def say(msg: str) -> None:
        log(f"[{spec['run_id']}] {msg}")

    unreadable = False
    for p in (path(run_dir), previous_path(run_dir)):
        if not p.exists():
            continue
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or corrupt: torch raises many kinds (RuntimeError, EOFError, OSError, ...)
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            say(f"checkpoint {p} is unreadable ({reason})")
            unreadable = True
            continue
        if state.get("format") != FORMAT or state.get("spec") != spec:
            say(f"checkpoint {p} is of another spec or format: starting over")
            return None
        if unreadable:
            say(f"falling back to the previous checkpoint, {p}")
        return state
    if unreadable:
        say("no readable checkpoint: starting over")
    return None


class Claimed(RuntimeError):
    """Another process is training the run."""


def claim(run_dir: str | Path, log: Callable[[str], None]) -> IO | None:
    """Lock the run for this process, through ``ckpt/lock``, until the process ends or the returned file is closed.

    A POSIX record lock (``fcntl.lockf``), which the kernel drops when its process ends, even on SIGKILL. On NFS it
    holds across nodes where the mount has locking (not ``nolock`` or ``local_lock``), and a node that crashes may
    keep it until the server recovers. A second process that claims the run raises :class:`Claimed`, naming the
    holder's host and pid. A filesystem that takes no locks at all: the run trains unlocked, saying so via ``log``.
    """
    lock = Path(run_dir) / "ckpt" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock, "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # EAGAIN, EACCES: another process holds it
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise Claimed(f"another process ({holder}) is training this run, in {run_dir}; fix: wait for it to end, or "
                      f"stop it (a process left over from a snakemake that was killed), then run again; if it no "
                      f"longer exists (its node crashed), delete {lock}") from None
    except OSError as e:  # ENOLCK, EOPNOTSUPP, ...: a filesystem without locks
        f.close()
        log(f"the filesystem of {lock} takes no lock ({e.strerror}): nothing stops a second process from training "
            f"this run at the same time")
        return None
    f.truncate(0)
    f.write(f"{socket.gethostname()} pid {os.getpid()}")
    f.flush()
    return f


def journal(run_dir: str | Path, log: Callable[[str], None]) -> Callable[[str], None]:
    """Replay the log lines of earlier attempts at the run through ``log``; return ``log`` that also keeps each line.

    The lines are kept in ``ckpt/train.log`` until the checkpoints are removed.
    """
    kept = Path(run_dir) / "ckpt" / "train.log"
    if kept.exists():
        log(f"=== earlier attempts at this run (kept in {kept}) ===")
        for line in kept.read_text().splitlines():
            log(line)
        log("=== this attempt ===")

    def say(line: str) -> None:
        log(line)
        kept.parent.mkdir(parents=True, exist_ok=True)
        with open(kept, "a") as f:
            f.write(line + "\n")

    return say


def remove(run_dir: str | Path) -> None:
    """Delete the run's checkpoints and kept log lines."""
    shutil.rmtree(path(run_dir).parent, ignore_errors=True)
