"""Stopping a run cleanly when its job is preempted or reaches its time limit.

Clusters end a job with SIGTERM and, some seconds later, SIGKILL (SLURM on
preemption, ``scancel`` and ``scontrol requeue``, after ``KillWait`` seconds;
torchrun forwards SIGTERM to its workers and kills them 30 s later; the SLURM
executor plugin sends it on SLURM's warning and kills 60 s later), or warn it
with SIGUSR2 before its time limit (``sbatch --signal``); a user at a terminal
presses Ctrl-C, which sends SIGINT to Snakemake and its jobs. :func:`stop_signals`
turns each into a flag: the handler only records the signal. The training loop
(:func:`scaling.train.loop.train`) reads it after each optimizer step (a DDP run, whose
processes must agree, at its next loss read), saves a checkpoint at that step and
raises :class:`Stopped`, and ``scaling train`` exits with status 128 + the signal
number (143 for SIGTERM, 140 for SIGUSR2, 130 for SIGINT), the shell's code for "ended by this
signal". Snakemake records the job as failed and keeps the checkpoint; its next
run, or SLURM's requeue of the job, resumes from it, having lost no step.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class Stopped(Exception):
    """The run saved a checkpoint and stopped on signal ``signum``."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], int]]:
    """Record SIGTERM, SIGUSR2 and SIGINT instead of dying; yield a function that returns the last received (0: none).

    After the first SIGINT a second one raises KeyboardInterrupt, as Ctrl-C does in Python: a run that
    does not reach its next step (a hung rendezvous, a long compile) can still be stopped from the keyboard.
    A signal that the parent process set to be ignored stays ignored: the SLURM
    executor's commands ignore SIGUSR2, on which submitit sends them SIGTERM.
    The previous handlers come back on exit.
    """
    received = 0

    def record(signum: int, frame) -> None:
        nonlocal received
        received = signum
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once a run that hangs before its next step
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, record) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield lambda: received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
