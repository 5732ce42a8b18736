"""The ladder: the runs of one (dataset, size, learning rate, seed) at several budgets, as one trunk and cooldowns.

Under a warmup-stable-decay schedule (:func:`scaling.train.schedules.wsd`) a run
of S steps with cooldown fraction f trains at the constant peak LR until its
cooldown start b = S − round(f·S), then decays. Before b it is the same
computation for every S: the batch of a step is a pure function of (seed,
step) and the LR of the step alone, once the warmup is the same length for
all of them, which a ladder's study gives as ``training.warmup_steps``
(:func:`scaling.train.schedules.warmup_length`). So the runs of one (dataset,
size, lr, seed) share a *trunk*, trained once at the constant LR up to the
largest run's b, and each run is a *branch*: its cooldown, started from the
trunk's checkpoint at its own b (Hägele et al. 2024, §4; OLMo-core's model
ladder trains its sizes this way).

Every branch is then step for step the from-scratch WSD run of its length with
the same ``warmup_steps``, and adding a longer run leaves the trunk so far
unchanged: the trunk is extended, not retrained. Its checkpoints at the branch
points split it into *segments* (:attr:`Plan.segments`), each a job of its
own, so a branch starts as soon as its checkpoint exists.

Compute, in steps of ``batch_tokens`` tokens: a run from scratch costs S; on
the ladder the study spends the trunk, max b, plus each run's cooldown S − b.
Each trunk segment is shared equally by the runs that branch at or after its
end (:func:`sharers`, :meth:`Plan.spent_steps`), so the runs' shares add up to what was spent.
For budgets D ∝ M ∈ {20, 40, 80, 160, 320} and f = 0.2 that is
(0.8·320 + 0.2·620)/620 = 380/620 = 0.613 of training each from scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.train.schedules import cooldown_start

TRUNK_KEYS = ("dataset", "size", "shape", "lr", "seed", "training")
"""The fields of a run's spec that define its trunk (all but its token budget and id)."""

BRANCH_ONLY = ("cooldown_fraction", "cooldown_shape", "min_lr_ratio", "eval_tokens")
"""The ``training`` settings a trunk does not use (the cooldown's, and the final validation's): changing one
retrains the branches, not the trunks. The cooldown fraction moves the branch points, so the segments' ends."""


def run_steps(tokens: int, batch_tokens: int) -> int:
    """Optimizer steps of a run of ``tokens`` tokens: whole batches, at least one."""
    return max(1, math.ceil(tokens / batch_tokens))


@dataclass(frozen=True)
class Plan:
    """One trunk and its branches: each run's steps and the step its cooldown branches off at."""

    steps: tuple[int, ...]  # each run's steps, ascending
    branch_steps: tuple[int, ...]  # each run's cooldown start, in the same order

    @property
    def trunk_steps(self) -> int:
        """Steps the trunk trains: to the last branch point."""
        return max(self.branch_steps)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """The trunk's segments (:func:`segments`)."""
        return segments(self.branch_steps)

    def spent_steps(self) -> tuple[float, ...]:
        """Each run's steps actually spent (:func:`spent_steps`); they add up to :meth:`total_steps`."""
        return spent_steps(self.steps, self.branch_steps)

    def total_steps(self) -> int:
        """Steps the ladder trains: its trunk and every cooldown."""
        return self.trunk_steps + sum(s - b for s, b in zip(self.steps, self.branch_steps))


def segments(branch_steps) -> tuple[tuple[int, int], ...]:
    """(first step, end step) of each segment of a trunk with these branch points: from one to the next, the first
    from step 0."""
    ends = sorted(set(branch_steps) - {0})
    return tuple(zip([0, *ends[:-1]], ends))


def sharers(branch_steps) -> tuple[int, ...]:
    """How many runs share each segment of a trunk (:func:`segments`): those that branch at or after its end."""
    return tuple(sum(1 for c in branch_steps if c >= end) for _, end in segments(branch_steps))


def spent_steps(steps, branch_steps) -> tuple[float, ...]:
    """The steps actually spent on each run of one trunk, given every run's steps and branch step: its cooldown,
    plus an equal share of every trunk segment up to its branch point with the other runs that branch there or
    later."""
    shared = list(zip(segments(branch_steps), sharers(branch_steps)))
    return tuple(sum((end - first) / n for (first, end), n in shared if end <= b) + s - b
                 for s, b in zip(steps, branch_steps))


def job_tokens(spec: dict) -> int:
    """Tokens one train job trains: a run's D from scratch; a trunk segment's steps, or a ladder's run's cooldown
    steps, of ``batch_tokens`` each (what its time limit is sized by)."""
    batch = spec["training"]["batch_tokens"]
    if "segment" in spec:
        first, end = spec["segment"]
        return (end - first) * batch
    if "ladder" in spec:
        return (run_steps(spec["tokens"], batch) - spec["ladder"]["branch_step"]) * batch
    return spec["tokens"]


def plan(tokens: list[int], batch_tokens: int, cooldown_fraction: float) -> Plan:
    """The ladder of runs of these token budgets (one trunk): steps and branch steps."""
    steps = sorted(run_steps(d, batch_tokens) for d in tokens)
    return Plan(steps=tuple(steps), branch_steps=tuple(cooldown_start(s, cooldown_fraction) for s in steps))


def trunk_spec(spec: dict) -> dict:
    """The spec of the trunk a run of the ladder (its spec with ``ladder``) branches from: what the trunk's
    checkpoints are checked against, so that a branch never starts from another trunk's."""
    ladder = spec["ladder"]
    return {"run_id": ladder["trunk"], **{k: spec[k] for k in TRUNK_KEYS},
            "training": {k: v for k, v in spec["training"].items() if k not in BRANCH_ONLY}}
