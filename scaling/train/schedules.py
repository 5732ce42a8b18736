"""Learning-rate schedules: the LR at a step as a pure function of the step.

Every schedule starts with a linear warmup over ``warmup`` steps,
lr(s) = η·(s+1)/warmup for s < warmup (0-based s, so the first step already
trains), and then follows its own shape from the peak η down to the final LR
r·η over the remaining steps. With p = (s − warmup)/(steps − warmup), the
fraction of the post-warmup steps done:

- ``cosine``  (Loshchilov & Hutter 2017; as Gadre et al. 2024 train their
  testbed): lr = η·(r + (1 − r)·½(1 + cos πp));
- ``linear``: lr = η·(1 − (1 − r)·p);
- ``constant``: lr = η (r is not used);
- ``wsd``, warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024):
  lr = η until the last ``cooldown`` fraction of all steps, then from η down to
  r·η over the cooldown in one of two shapes (:data:`COOLDOWN_SHAPES`): with q
  the fraction of the cooldown done, ``linear`` lr = η·(1 − (1 − r)·q), or
  ``1-sqrt`` lr = η·(1 − (1 − r)·√q), which drops faster at first and so keeps
  the LR lower through most of the cooldown; Hägele et al. (2024) find it
  better than linear at the same length.

The warmup (:func:`warmup_length`) is ``warmup_fraction`` of each run's steps,
or, when the study gives ``warmup_steps``, that many steps for runs of every
length, as Hägele et al. (2024) warm up all their runs. Then a WSD run's LR
before its cooldown does not depend on its length, which is what lets runs of
several lengths share one stable-LR trunk (:mod:`scaling.train.ladder`).

At s = steps (one past the last step) every decaying schedule reaches r·η.
Because the LR depends on the step alone, a run resumed from a checkpoint at
step s continues its schedule exactly: the schedule has no state to save.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")
COOLDOWN_SHAPES = {"linear": lambda q: q, "1-sqrt": math.sqrt}
"""The WSD cooldown's shape: the fraction g(q) of the drop from η to r·η made when a fraction q of it is done."""


def warmup(step: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup: η·(s+1)/warmup."""
    return peak * (step + 1) / warmup_steps


def _progress(step: int, steps: int, start: int) -> float:
    """Fraction of the steps from ``start`` to ``steps`` done at ``step``, in [0, 1]."""
    return min(1.0, max(0.0, (step - start) / max(1, steps - start)))


def cosine(step: int, steps: int, warmup_steps: int, peak: float, final_ratio: float) -> float:
    """η·(r + (1 − r)·½(1 + cos πp)) after warmup."""
    if step < warmup_steps:
        return warmup(step, warmup_steps, peak)
    p = _progress(step, steps, warmup_steps)
    return peak * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


def linear(step: int, steps: int, warmup_steps: int, peak: float, final_ratio: float) -> float:
    """η·(1 − (1 − r)·p) after warmup."""
    if step < warmup_steps:
        return warmup(step, warmup_steps, peak)
    return peak * (1.0 - (1.0 - final_ratio) * _progress(step, steps, warmup_steps))


def constant(step: int, steps: int, warmup_steps: int, peak: float, final_ratio: float) -> float:
    """η after warmup."""
    return warmup(step, warmup_steps, peak) if step < warmup_steps else peak


def cooldown_start(steps: int, cooldown: float) -> int:
    """The first step of a WSD run's cooldown: its last ``round(cooldown · steps)`` steps decay."""
    return steps - round(cooldown * steps)


def wsd(step: int, steps: int, warmup_steps: int, peak: float, final_ratio: float, cooldown: float,
        shape: str = "linear") -> float:
    """Warmup-stable-decay: η, then down to r·η in ``shape`` over the last ``cooldown`` fraction of all steps."""
    if step < warmup_steps:
        return warmup(step, warmup_steps, peak)
    start = max(warmup_steps, cooldown_start(steps, cooldown))
    return peak * (1.0 - (1.0 - final_ratio) * COOLDOWN_SHAPES[shape](_progress(step, steps, start)))


def warmup_length(training: dict, steps: int) -> int:
    """The warmup, in steps, of a run of ``steps`` steps under a study's ``training`` settings: ``warmup_steps``
    when given (the same for runs of every length), else ``round(warmup_fraction · steps)``."""
    fixed = training.get("warmup_steps")
    return round(training["warmup_fraction"] * steps) if fixed is None else fixed


def lr_at(step: int, steps: int, training: dict, peak: float) -> float:
    """The LR at ``step`` of a run of ``steps`` steps under a study's ``training`` settings (schedule, warmup, final
    LR, cooldown)."""
    warmup_steps = warmup_length(training, steps)
    name, r = training["schedule"], training["min_lr_ratio"]
    if name == "wsd":
        return wsd(step, steps, warmup_steps, peak, r, training["cooldown_fraction"], training["cooldown_shape"])
    return {"cosine": cosine, "linear": linear, "constant": constant}[name](step, steps, warmup_steps, peak, r)
