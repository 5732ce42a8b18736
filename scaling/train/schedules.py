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
  lr = η until the last ``cooldown`` fraction of all steps, then linear from η
  to r·η over the cooldown: with q the fraction of the cooldown done,
  lr = η·(1 − (1 − r)·q).

At s = steps (one past the last step) every decaying schedule reaches r·η.
Because the LR depends on the step alone, a run resumed from a checkpoint at
step s continues its schedule exactly: the schedule has no state to save.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")


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


def wsd(step: int, steps: int, warmup_steps: int, peak: float, final_ratio: float, cooldown: float) -> float:
    """Warmup-stable-decay: η, then linear to r·η over the last ``cooldown`` fraction of all steps."""
    if step < warmup_steps:
        return warmup(step, warmup_steps, peak)
    start = max(warmup_steps, steps - round(cooldown * steps))
    return peak * (1.0 - (1.0 - final_ratio) * _progress(step, steps, start))


def lr_at(step: int, steps: int, training: dict, peak: float) -> float:
    """The LR at ``step`` under a study's ``training`` settings (schedule, warmup, final LR, cooldown)."""
    warmup_steps = round(training["warmup_fraction"] * steps)
    name, r = training["schedule"], training["min_lr_ratio"]
    if name == "wsd":
        return wsd(step, steps, warmup_steps, peak, r, training["cooldown_fraction"])
    return {"cosine": cosine, "linear": linear, "constant": constant}[name](step, steps, warmup_steps, peak, r)
