"""``scaling plan``: the runs a study should train next toward its targets, as a grid block to paste into it.

The candidates are the study's model sizes (explicit shapes and ``params:``
sizes alike) × the token multipliers the user allows (default: those of the
study's grid), less the (size, M) points the grid already holds. Each costs its
learning-rate sweep: as many rates as the study's sweeps have (:func:`sweep_length`),
a factor of 2 apart around the fitted optimal-LR law's η*(N, D) where the study
has one, else around the best rate of the nearest known point
(:func:`scaling.fit.plan.learning_rates`). The current fit is the study's
over-training law on its fit set, calibrated on its held-out runs as the fit
stage does (the law's prior before any run has finished). The design the
candidates add to is the study's fit set, trained or not: its runs will be
trained anyway. :func:`scaling.fit.plan.plan` chooses the batch.

The proposal is YAML: grid blocks to add to the study's ``grid``, and
``fit.fit_on`` filters to add so that the refit uses the new runs. Then
``snakemake`` trains only the new runs (runs are named by their values) and
refits.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import yaml

from scaling.fit.estimators import FitError
from scaling.fit.plan import Planner, current_fit, learning_rates, plan
from scaling.fit.stage import SWEEP
from scaling.fit.tables import best_lr_points, default_fit_on, fit_table, matches
from scaling.study.runs import ConfigError, model_sizes, runs as planned_runs
from scaling.train.flops import flops_6nd, planned_tokens


def parse_target(text: str, sizes: dict[str, int]) -> dict:
    """``N:M`` (N a parameter count such as 7e9, or a model of the study) → {n_params, token_multiplier}."""
    n, sep, m = text.partition(":")
    try:
        n_params = float(sizes[n]) if n in sizes else float(n)
        multiplier = float(m)
    except ValueError:
        n_params = multiplier = float("nan")
    if not sep or not (np.isfinite(n_params) and n_params > 0 and np.isfinite(multiplier) and multiplier > 0):
        raise ConfigError(f"--target {text!r}: give N:M, with N a parameter count (7e9) or a model of the study "
                          f"({', '.join(sizes)}) and M the tokens per parameter, e.g. --target 7e9:20")
    return {"n_params": n_params, "token_multiplier": multiplier}


def _optimal_lr(points: pd.DataFrame):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_table("optimal_lr", points, fit_on=SWEEP, calibrate_intervals=False)[0][0]
    except (FitError, ValueError):
        return None


def plan_study(config: dict, runs: pd.DataFrame, targets: list[dict], budget: float, *,
               dataset: str | None = None, multipliers: list[float] | None = None,
               level: float = 0.95) -> tuple[pd.DataFrame, np.ndarray, str]:
    """``(proposals, half-widths now, YAML)``: the runs to train next on ``dataset`` within ``budget`` FLOPs.

    ``runs`` is the study's ``runs`` table (finished runs); ``targets`` are {n_params, token_multiplier}.
    """
    datasets = list(config["datasets"])
    dataset = dataset or (datasets[0] if len(datasets) == 1 else None)
    if dataset not in datasets:
        raise ConfigError(f"--dataset {dataset}: the study's datasets are {', '.join(datasets)}; fix: name one")
    points = best_lr_points(runs[runs["dataset"] == dataset]) if len(runs) else runs
    grid = planned_runs(config)
    sizes = model_sizes(config)
    in_grid = {(r.size, r.token_multiplier) for r in grid if r.dataset == dataset}
    grid_points = pd.DataFrame([{"size": s, "n_params": float(sizes[s]), "token_multiplier": m}
                                for s, m in sorted(in_grid)])
    fit_on = config["fit"].get("fit_on") or default_fit_on(grid_points)
    design = grid_points[matches(grid_points, fit_on)]  # the fit set the study will have, trained or not
    fit = current_fit("overtraining", points, fit_on, config["fit"].get("method", "huber-log")) if len(points) else None
    allowed = sorted(set(multipliers or [r.token_multiplier for r in grid]))
    candidates = pd.DataFrame([{"size": s, "n_params": float(n), "token_multiplier": float(m)}
                               for s, n in sizes.items() for m in allowed if (s, float(m)) not in in_grid])
    if candidates.empty:
        raise ConfigError("every model size × token multiplier allowed is in the grid already; fix: allow other "
                          "multipliers with --token-multipliers, or add sizes to the study's models")
    candidates["tokens"] = planned_tokens(candidates["n_params"], candidates["token_multiplier"])
    sweep = sweep_length(points)
    optimal = _optimal_lr(points) if len(points) else None
    grid_rates = sorted({r.lr for r in grid})  # nothing trained yet: the study's own rates
    candidates["learning_rates"] = [learning_rates(n, d, points, sweep, optimal) or grid_rates
                                    for n, d in zip(candidates["n_params"], candidates["tokens"])]
    candidates["cost"] = [len(lrs) * flops_6nd(n, d) for n, d, lrs in
                          zip(candidates["n_params"], candidates["tokens"], candidates["learning_rates"])]
    planner = Planner.from_fit("overtraining", fit, level)
    proposals = plan(planner, design, candidates, pd.DataFrame(targets), budget)
    return proposals, proposals.attrs["before"], proposal_yaml(proposals, dataset, fit is not None, optimal)


def sweep_length(points: pd.DataFrame) -> int:
    """How many learning rates a proposed run sweeps: the median count of the study's sweeps (its best-LR points
    with two rates or more; a point trained at one rate is not a sweep), 1 if it has none."""
    counts = points["n_lrs"][points["n_lrs"] >= 2] if "n_lrs" in points else []
    return int(np.median(counts)) if len(counts) else 1


def proposal_yaml(proposals: pd.DataFrame, dataset: str, fitted: bool, optimal_lr) -> str:
    """The proposal as YAML: grid blocks (one per run) and the fit.fit_on filters that put them in the fit set."""
    if proposals.empty:
        return "# scaling plan: no run within the budget narrows the targets' intervals\n"
    blocks = [{"datasets": [dataset], "sizes": [r.size], "token_multipliers": [r.token_multiplier],
               "learning_rates": r.learning_rates, "seeds": [0]}
              for r in proposals.itertuples()]
    fit_on = [{"size": r.size, "token_multiplier": r.token_multiplier} for r in proposals.itertuples()]
    lr = ("from the fitted optimal-LR law" if optimal_lr is not None else
          "around the best rate of the nearest trained point (the grid's rates if none is)")
    head = (f"# scaling plan: {len(blocks)} run(s), {proposals['cost'].sum():.3g} FLOPs; learning rates {lr}"
            + ("" if fitted else "; the runs could not be fitted yet, so the law's prior was used") + ".\n"
            "# Add the blocks to the study's grid and the filters to its fit.fit_on, then run snakemake.\n")
    dump = yaml.safe_dump({"grid": blocks, "fit_on": fit_on}, default_flow_style=None, sort_keys=False, width=120)
    return head + dump
