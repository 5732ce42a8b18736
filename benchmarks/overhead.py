"""A finished study's overhead: the share of its wall time × cores not spent in the training loops (a study
without a ladder: a ladder's trunk segments train outside the runs' `train_s`).

    python benchmarks/overhead.py --wall SECONDS [--cores 2] [--runs results/default/tables/runs.parquet]

Issue 15 (and 16) define the overhead of a local study as everything but training, over the whole
study: 1 − Σ train_s / (cores × wall), with train_s each run's time in its training loop (the
runs table) and wall the study's end-to-end time (`bash .ci/run` prints it for the default study).
Process starts, model set-up, final validation, downstream scoring, the fit, the report and idle
cores all count as overhead.
"""

from __future__ import annotations

import argparse

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wall", type=float, required=True, help="the study's wall time in seconds")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--runs", default="results/default/tables/runs.parquet")
    args = p.parse_args()
    runs = pd.read_parquet(args.runs)
    train, in_job = float(runs["train_s"].sum()), float((runs["wall_s"] - runs["train_s"]).sum())
    largest = runs.loc[runs["train_s"].idxmax()]
    total = args.cores * args.wall
    print(f"{len(runs)} runs: {train:.0f} s in training loops, the longest {largest['run_id']} {largest['train_s']:.0f} s; "
          f"{args.cores} cores × {args.wall:.0f} s wall = {total:.0f} core-s; overhead {1 - train / total:.1%}: "
          f"{in_job:.0f} s in the train jobs outside their loops (set-up, final validation, saving), "
          f"{total - train - in_job:.0f} core-s elsewhere (process starts and imports, evaluate jobs, the serial tail, "
          f"idle cores)")


if __name__ == "__main__":
    main()
