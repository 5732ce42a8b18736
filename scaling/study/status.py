"""A study's grid at a glance: which runs are done, running, failed, diverged or not started.

The planned grid comes from the study config (loaded and checked by
:func:`scaling.study.config.load`, as the Snakefile does); each run's state from its
files under ``results/<study>/``:

- ``done`` / ``diverged``: ``runs/<run_id>/metrics.json`` exists (it is written
  last) with that status;
- ``running``: no metrics.json yet, and the job's log
  ``logs/train/<run_id>.log`` was written to in the last ``stale_after``
  seconds (training logs every few seconds) without a Python traceback;
- ``failed``: a log but no metrics.json otherwise, or a metrics.json that
  cannot be read;
- ``not_started``: neither.

Compute spent is the training compute of done runs plus the part of each
diverged run trained before it stopped; compute left is the planned
C = 6·N·D of every run not done or diverged (a running run counts in full).
On a ladder a run costs its share of its trunk and its cooldown
(:func:`scaling.train.ladder.spent_steps`), not its C from scratch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from scaling.study import runs as S
from scaling.train.flops import flops_6nd

STATES = ("done", "running", "failed", "diverged", "not_started")


def run_state(run_dir: Path, log: Path, now: float, stale_after: float) -> tuple[str, dict | None]:
    """A run's state and, when it finished, its metrics."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            return "failed", None
        return ("done" if metrics.get("status") == "ok" else "diverged"), metrics
    if not log.exists():
        return "not_started", None
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 8192))
        crashed = b"Traceback (most recent call last)" in f.read()
    fresh = now - log.stat().st_mtime < stale_after
    return ("running" if fresh and not crashed else "failed"), None


def grid(config: dict, results_root: str | Path = "results", stale_after: float = 120.0) -> pd.DataFrame:
    """One row per planned run: its grid coordinates, state, and compute spent and left (FLOPs)."""
    results = Path(results_root) / config["study"]
    sizes = S.model_sizes(config)
    share = {run.id: spent / steps for group, plan in S.ladders(config).values()  # the ladder's cost / from scratch
             for run, spent, steps in zip(group, plan.spent_steps(), plan.steps)}
    now, rows = time.time(), []
    for run in S.runs(config):
        n = sizes[run.size]
        planned = flops_6nd(n, S.run_spec(config, run)["tokens"]) * share.get(run.id, 1.0)
        state, m = run_state(results / "runs" / run.id, results / "logs" / "train" / f"{run.id}.log", now, stale_after)
        spent = 0.0
        if state in ("done", "diverged"):
            spent = m.get("flops", planned) * share.get(run.id, 1.0)
        if state == "diverged":
            spent *= m.get("tokens_seen", 0) / max(1, m.get("tokens", 1))
        rows.append({"run_id": run.id, "dataset": run.dataset, "size": run.size, "n_params": n,
                     "token_multiplier": run.token_multiplier, "lr": run.lr, "seed": run.seed, "state": state,
                     "flops_spent": spent, "flops_left": 0.0 if state in ("done", "diverged") else planned})
    return pd.DataFrame(rows)


def summarize(per_run: pd.DataFrame) -> pd.DataFrame:
    """Counts of each state and compute per (dataset, size, M)."""
    keys = ["dataset", "size", "n_params", "token_multiplier"]
    counts = pd.crosstab([per_run[k] for k in keys], per_run["state"]).reindex(columns=list(STATES), fill_value=0)
    flops = per_run.groupby(keys)[["flops_spent", "flops_left"]].sum()
    out = counts.join(flops).reset_index().sort_values(["dataset", "n_params", "token_multiplier"])
    out.columns.name = None
    return out.rename(columns={"token_multiplier": "M"}).reset_index(drop=True)


def report(config: dict, per_run: pd.DataFrame, list_runs: bool = False) -> str:
    """The status as text: totals, compute, the per-(size, M) table, and optionally every run not done."""
    totals = per_run["state"].value_counts().reindex(list(STATES), fill_value=0)
    table = summarize(per_run)
    table["M"] = table["M"].map(S.fmt)
    for col in ("flops_spent", "flops_left"):
        table[col] = table[col].map(lambda x: f"{x:.3g}")
    lines = [
        f"study {config['study']!r}: {len(per_run)} runs planned; "
        + ", ".join(f"{totals[s]} {s.replace('_', ' ')}" for s in STATES),
        f"compute: {per_run['flops_spent'].sum():.3g} FLOPs spent, {per_run['flops_left'].sum():.3g} left",
        "",
        table.to_string(index=False),
    ]
    if list_runs:
        todo = per_run[per_run["state"] != "done"]
        lines += ["", "runs not done:", todo[["run_id", "state"]].to_string(index=False) if len(todo) else "(none)"]
    return "\n".join(lines)
