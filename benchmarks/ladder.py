"""The ladder's compute: what a study on a ladder trains, against training every run from scratch.

    python benchmarks/ladder.py                  # 4 sizes (MODELS) × M ∈ {20, 40, 80, 160, 320}
    python benchmarks/ladder.py --cooldown 0.1
    python benchmarks/ladder.py --quality        # 3 sizes × M ∈ {8, 12, 16} × 3 seeds, three ways (~15 min)
    python benchmarks/ladder.py --quality --smoke  # 2 tiny models at M ≤ 1, 1 warmup step: checks it runs (< 1 min)

Goal (issue 14): the grid spends no more than the arithmetic minimum of its design,
(1 − f)·M_max + f·ΣM of ΣM token-units per size: 380/620 = 0.613 of the from-scratch
compute with f = 0.2 (0.565 with f = 0.1), and trains no step twice. The figures come
from the study's plan (scaling.study.runs.ladders), in whole optimizer steps, so they
differ from the ideal by the rounding of each run to whole steps; the FLOPs are 6·N·D
with D the tokens of those steps. Nothing is trained: it takes a few seconds.

Quality (``--quality``): every (size, M, seed) of a small grid at lr 0.01 (past the
loss plateau these tiny models sit on at higher rates) is trained three ways with the
same WSD schedule: on the ladder, whose warmup is ``training.warmup_steps`` (100 by
default: with a shorter one many of these runs stay on the plateau longer); from
scratch with the same ``warmup_steps``, for the first seed (which the ladder should
equal exactly: the script prints the largest difference); and from scratch warming up
over ``warmup_fraction`` of each run's own steps, the default without a ladder. Runs
one after another, one thread each. Goals, against the latter:

1. each ladder run's final validation loss lies within the seed-to-seed spread
   (max − min over the seeds) of the from-scratch runs of its (size, M), around their mean;
2. the over-training law fitted on the ladder runs predicts the held-out points as well as
   the one fitted on the from-scratch runs. Both go through the fit stage itself
   (:func:`scaling.fit.stage.fit_study`, :func:`scaling.fit.stage.backtest_table`) with
   Gadre et al.'s design scaled down: the smallest size at every M and every size at the
   second-largest M are fitted, the other points held out. "As well as": the ladder's mean
   |predicted / measured − 1| on them is at most the from-scratch one's plus the noise of
   a measured point (the median over held-out points of the seeds' SD of log loss / √seeds).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scaling.data.prepare import prepare
from scaling.fit.stage import backtest_table, fit_study
from scaling.fit.tables import matches
from scaling.study import runs as S
from scaling.study.config import load
from scaling.train.flops import flops_6nd
from scaling.train.loop import train

REPO = Path(__file__).resolve().parents[1]
MODELS = [{"name": f"d{d}", "d_model": d, "n_layers": 2, "n_heads": 2} for d in (32, 40, 48, 64)]
"""The previous default study's four fit sizes, trained as it trained them (64-token windows, 512 tokens a step)."""
SIZES = [m["name"] for m in MODELS]
MULTIPLIERS = [20, 40, 80, 160, 320]
LR = 0.01


def study(cooldown: float, warmup_steps: int, sizes=SIZES, multipliers=MULTIPLIERS, seeds=(0,)) -> dict:
    """The default study's corpus with the models :data:`MODELS`, ``sizes`` over ``multipliers`` at lr :data:`LR`
    on a ladder, checked as the pipeline checks it."""
    config = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    config["models"] = MODELS
    config["training"] = {"seq_len": 64, "batch_tokens": 512, "eval_tokens": 65536, "schedule": "wsd", "ladder": True,
                          "cooldown_fraction": cooldown, "warmup_steps": warmup_steps}
    config["grid"] = [{"sizes": sizes, "token_multipliers": multipliers, "learning_rates": [LR],
                       "seeds": list(seeds)}]
    config["fit"] = {"fit_on": [{"size": sizes}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_text(yaml.safe_dump(config))
        return load([path])


def quality(config: dict, work: Path) -> pd.DataFrame:
    """Final validation loss of every run of the ladder study ``config`` trained on its ladder, from scratch with
    its ``warmup_steps`` (``same``: the first seed's runs only, NaN for the others), and from scratch with each
    run's own ``warmup_fraction`` (``scratch``): one row per run."""
    data = work / "data"
    prepare(config["datasets"]["bible"], data)
    same = copy.deepcopy(config)
    same["training"]["ladder"] = False
    scratch = copy.deepcopy(same)
    del scratch["training"]["warmup_steps"]
    quiet = {"log": lambda _: None, "compile_model": False}
    for trunk, spec in S.trunk_segments(config).items():  # in order: each starts from the one before
        first = spec["segment"][0]
        train(spec, data, work / "trunks" / spec["run_id"], start_from=work / "trunks" / spec["run_id"] /
              f"step{first}.pt" if first else None, **quiet)
    rows = []
    for run in S.runs(config):
        spec = S.run_spec(config, run)
        b = spec["ladder"]["branch_step"]
        ladder_run = train(spec, data, work / "ladder" / run.id, start_from=work / "trunks" / run.trunk /
                           f"step{b}.pt" if b else None, **quiet)
        first_seed = run.seed == config["grid"][0]["seeds"][0]
        equal = train(S.run_spec(same, run), data, work / "same" / run.id, **quiet) if first_seed else {}
        own = train(S.run_spec(scratch, run), data, work / "scratch" / run.id, **quiet)
        rows.append({"size": run.size, "M": run.token_multiplier, "seed": run.seed, "ladder": ladder_run["val_loss"],
                     "same": equal.get("val_loss", np.nan), "scratch": own["val_loss"]})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def print_quality(df: pd.DataFrame) -> None:
    """The ladder against from scratch with the same warmup (the largest difference), then per (size, M) against
    from scratch with each run's own warmup: both means over seeds, their seed spreads, and the goal."""
    both = df[df["same"].notna()]
    print(f"ladder vs from scratch with the same warmup_steps: largest |difference| of final validation loss "
          f"{(both['ladder'] - both['same']).abs().max():.3g} nats over {len(both)} runs (seed {both['seed'].min()})")
    print("diverged (no final loss): " + ", ".join(f"{how} {df[how].isna().sum()}" for how in ("ladder", "scratch")))
    g = df.groupby(["size", "M"])
    out = pd.DataFrame({"ladder_mean": g["ladder"].mean(), "scratch_mean": g["scratch"].mean(),
                        "ladder_minus_scratch": g["ladder"].mean() - g["scratch"].mean(),
                        "ladder_spread": g["ladder"].max() - g["ladder"].min(),
                        "scratch_spread": g["scratch"].max() - g["scratch"].min(),
                        "ladder_off_most": g.apply(lambda x: (x["ladder"] - x["scratch"].mean()).abs().max(),
                                                   include_groups=False)})
    out["within_spread"] = out["ladder_off_most"] <= out["scratch_spread"]
    print(out.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"goal 1 {'met' if out['within_spread'].all() else 'NOT met'}: at {out['within_spread'].sum()} of "
          f"{len(out)} (size, M) points every ladder run is within the from-scratch seed spread of its mean")


def fit_on(config: dict, df: pd.DataFrame) -> list[dict]:
    """Gadre et al.'s fit set scaled down: the smallest size at every M, every size at the second-largest M."""
    return [{"size": min(df["size"], key=S.model_sizes(config).get)},
            {"token_multiplier": float(sorted(df["M"].unique())[-2])}]


def law_backtest(config: dict, df: pd.DataFrame) -> pd.DataFrame:
    """The fit stage's over-training backtest of the runs ``df`` on the ladder and from scratch: one row each."""
    sizes, fit = S.model_sizes(config), {**config["fit"], "fit_on": fit_on(config, df)}
    rows = []
    for how in ("ladder", "scratch"):
        runs = pd.DataFrame({"dataset": "bible", "size": df["size"], "n_params": df["size"].map(sizes),
                             "token_multiplier": df["M"].astype(float), "lr": config["grid"][0]["learning_rates"][0],
                             "seed": df["seed"], "val_loss": df[how],
                             "status": np.where(df[how].notna(), "ok", "diverged")})
        table = backtest_table(fit_study(runs, pd.DataFrame(), fit, sizes, None))
        rows.append({"fitted_on": how, **table.loc[table["law"] == "overtraining"].iloc[0].to_dict()})
    return pd.DataFrame(rows).set_index("fitted_on")


def print_law(config: dict, df: pd.DataFrame) -> None:
    """The two backtests side by side, and whether the ladder's law predicts as well as from scratch's."""
    table = law_backtest(config, df)
    print(table[["n", "mean_abs_rel_error", "median_abs_rel_error", "coverage", "median_half_width",
                 "max_compute_ratio", "calibrated"]].to_string(float_format=lambda v: f"{v:.4f}"))
    held_out = df[~matches(df.rename(columns={"M": "token_multiplier"}), fit_on(config, df))]
    log_loss = np.log(held_out["scratch"]).groupby([held_out["size"], held_out["M"]])
    noise = float((log_loss.std() / np.sqrt(log_loss.count())).median())
    ladder, scratch = table.loc["ladder", "mean_abs_rel_error"], table.loc["scratch", "mean_abs_rel_error"]
    print(f"goal 2 {'met' if ladder - scratch <= noise else 'NOT met'}: the law fitted on the ladder misses the "
          f"held-out points by {ladder:.2%} on average, the one fitted from scratch by {scratch:.2%} (difference "
          f"{ladder - scratch:+.2%}; the noise of a measured point, seeds' SD of log loss / √seeds: {noise:.2%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cooldown", type=float, default=0.2, help="the cooldown fraction f (default 0.2)")
    parser.add_argument("--quality", action="store_true", help="train a small grid on the ladder and from scratch")
    parser.add_argument("--warmup-steps", type=int, default=100, help="with --quality: training.warmup_steps of the "
                        "ladder (default 100)")
    parser.add_argument("--smoke", action="store_true", help="with --quality: 2 tiny sizes, M ≤ 1, 2 seeds")
    args = parser.parse_args()
    if args.quality:
        sizes, multipliers, seeds = ((["d32", "d40"], [0.25, 0.5, 0.75, 1], (0, 1)) if args.smoke else
                                     (["d32", "d40", "d48"], [8, 12, 16], (0, 1, 2)))
        config = study(args.cooldown, 1 if args.smoke else args.warmup_steps, sizes, multipliers, seeds)
        if args.smoke:
            config["fit"]["bootstrap"] = 50
        print(f"warmup_steps {config['training']['warmup_steps']}, lr {LR}, cooldown fraction {args.cooldown:g}")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            df = quality(config, Path(work))
        print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min")
        print_quality(df)
        print_law(config, df)
        return
    config = study(args.cooldown, args.warmup_steps)
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
