"""The ladder's compute: what a study on a ladder trains, against training every run from scratch.

    python benchmarks/ladder.py                  # the default study's 4 fit sizes × M ∈ {20, 40, 80, 160, 320}
    python benchmarks/ladder.py --cooldown 0.1

Goal (issue 14): the grid spends no more than the arithmetic minimum of its design,
(1 − f)·M_max + f·ΣM of ΣM token-units per size: 380/620 = 0.613 of the from-scratch
compute with f = 0.2 (0.565 with f = 0.1), and trains no step twice. The figures come
from the study's plan (scaling.study.runs.ladders), in whole optimizer steps, so they
differ from the ideal by the rounding of each run to whole steps; the FLOPs are 6·N·D
with D the tokens of those steps. Nothing is trained: it takes a few seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from scaling.study import runs as S
from scaling.study.config import load
from scaling.train.flops import flops_6nd

REPO = Path(__file__).resolve().parents[1]
SIZES = ["d32", "d40", "d48", "d64"]
MULTIPLIERS = [20, 40, 80, 160, 320]


def study(cooldown: float) -> dict:
    """The default study with its fit sizes on a ladder over MULTIPLIERS, checked as the pipeline checks it."""
    config = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    config["training"].update(schedule="wsd", ladder=True, cooldown_fraction=cooldown)
    config["grid"] = [{"sizes": SIZES, "token_multipliers": MULTIPLIERS, "learning_rates": [0.02]}]
    config["fit"] = {"fit_on": [{"size": SIZES, "token_multiplier": 20}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_text(yaml.safe_dump(config))
        return load([path])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cooldown", type=float, default=0.2, help="the cooldown fraction f (default 0.2)")
    args = parser.parse_args()
    config = study(args.cooldown)
    batch, sizes = config["training"]["batch_tokens"], S.model_sizes(config)
    ideal = ((1 - args.cooldown) * max(MULTIPLIERS) + args.cooldown * sum(MULTIPLIERS)) / sum(MULTIPLIERS)

    print(f"cooldown fraction f = {args.cooldown:g}, M ∈ {MULTIPLIERS}, batch {batch} tokens")
    print(f"{'trunk':<28} {'N':>8} {'segments':>8} {'trunk steps':>11} {'spent steps':>11} {'scratch steps':>13} "
          f"{'ratio':>6}")
    spent_flops = scratch_flops = 0.0
    for trunk, (runs, plan) in S.ladders(config).items():
        n = sizes[runs[0].size]
        assert sum(end - first for first, end in plan.segments) == plan.trunk_steps  # no trunk step twice
        assert abs(sum(plan.spent_steps()) - plan.total_steps()) < 1e-6  # the runs' shares add up to the spend
        spent_flops += flops_6nd(n, plan.total_steps() * batch)
        scratch_flops += flops_6nd(n, sum(plan.steps) * batch)
        print(f"{trunk:<28} {n:>8,} {len(plan.segments):>8} {plan.trunk_steps:>11,} {plan.total_steps():>11,} "
              f"{sum(plan.steps):>13,} {plan.total_steps() / sum(plan.steps):>6.3f}")
    ratio = spent_flops / scratch_flops
    print(f"study: {spent_flops:.4g} FLOPs on the ladder, {scratch_flops:.4g} from scratch: {ratio:.4f}× "
          f"(the design's minimum (1 − f)·M_max + f·ΣM over ΣM: {ideal:.4f}×)")


if __name__ == "__main__":
    main()
