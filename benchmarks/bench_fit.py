"""Fit and bootstrap timings of the laws on published data, and of a study's fit stage.

    python benchmarks/bench_fit.py            # 1,000 resamples, every method (about a minute)
    python benchmarks/bench_fit.py --smoke    # 20 resamples: checks the script runs (seconds)
    python benchmarks/bench_fit.py --stage workflow/studies/smoke.yaml   # + the fit stage of that finished study

Goals (issue 16): the ``huber-log`` fit and 1,000 resamples in at most 5 s, the
smoke study's fit stage in at most 10 s, on a 2-core machine. The fit set is
Figure 1's (RedPajama, 5 runs). A ``huber-log`` resample is refitted from the
point fit (:func:`scaling.fit.estimators.huber_log_refit`); the script also
prints how its objective compares with a full :func:`~scaling.fit.estimators.huber_log`
from the same start, polished to ``ftol = 1e-15`` (positive: the refit ends higher). Chinchilla's
Approach 3 uses Epoch AI's 240 points when ../shared is beside the repository.
The fit stage is timed as the pipeline runs it: one ``scaling fit-study``
process on the study's tables (process start included), with 1 thread and with
the 2 that ``snakemake --cores 2`` gives it (its bootstrap refits in 2 processes). Timings are
wall-clock, one process, printed with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.testbeds import gadre
from scaling.fit.chinchilla import fit_chinchilla
from scaling.fit.tables import matches
from scaling.fit.bootstrap import run_weights
from scaling.fit.estimators import hoffmann_grid, huber_log, huber_log_refit, lse_design, lse_huber_objective
from scaling.fit.overtraining import METHODS, fit_overtraining

GOAL_S = 5.0  # huber-log fit + 1,000 resamples
STAGE_GOAL_S = 10.0
CHINCHILLA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "chinchilla" / "points.csv"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def refit_quality(N, M, L, resamples: int) -> np.ndarray:
    """The Huber objective of the refit over that of a full (polished) ``huber_log`` from the same start, − 1,
    per resample."""
    N, M, L = (np.asarray(v, dtype=float) for v in (N, M, L))
    logs = np.log(N), np.log(N * M), np.log(L)
    theta, _ = huber_log(*logs, hoffmann_grid(shared_exponent=True), shared_exponent=True)
    X, out = lse_design(*logs[:2], shared_exponent=True), []
    for w in run_weights(len(L), resamples, seed=0):
        polished = huber_log(*logs, [theta], shared_exponent=True, weights=w, screen=None)[0]
        refit = huber_log_refit(*logs, theta, w, shared_exponent=True)
        f = [lse_huber_objective(x, X, logs[2], w, 1e-3)[0] for x in (refit, polished)]
        out.append(f[0] / f[1] - 1)
    return np.array(out)


def fit_stage(study_file: str, threads: int) -> float:
    """Wall time of ``scaling fit-study`` on the finished study's tables, as rules/fit.smk runs it with ``threads``."""
    from scaling.study import runs as S
    from scaling.study.config import load

    config = load([study_file])
    results = Path("results") / config["study"] / "tables"
    task = S.downstream_task(config)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "scaling.cli", "fit-study", "--runs", str(results / "runs.parquet"),
               "--downstream", str(results / "downstream.parquet"), "--fit-config",
               json.dumps(config["fit"], sort_keys=True), "--sizes", json.dumps(S.model_sizes(config)),
               *(["--task", task] if task else []), "--out-dir", out]
        cmd += [a for t in ("fits", "parameters", "predictions", "backtest")
                for a in (f"--{'fits-table' if t == 'fits' else t}", f"{out}/{t}.parquet")]
        cmd += ["--threads", str(threads)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="20 resamples, to check the script runs")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--stage", metavar="STUDY_FILE", help="also time the fit stage of this finished study")
    args = parser.parse_args()
    resamples = 20 if args.smoke else args.resamples
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    runs = gadre.load_runs()
    rpj = runs[runs["dataset"] == "rpj"].reset_index(drop=True)
    fs = rpj[matches(rpj, gadre.LOSS_FIT_ON)]
    data = fs["n_params"], fs["token_multiplier"], fs["loss"]
    print(f"over-training law, Gadre et al. Figure 1 fit set ({len(fs)} runs), {resamples} resamples")
    for method in METHODS:
        fit_overtraining(*data, method=method)  # once untimed: the first call pays one-off set-up (imports, caches)
        _, fit_s = timed(lambda: fit_overtraining(*data, method=method))
        boot, total_s = timed(lambda: fit_overtraining(*data, method=method, resamples=resamples, seed=0))
        boot_s = max(total_s - fit_s, 0.0)  # the resamples' share; at a few resamples, within the fit's own noise
        verdict = ("" if args.smoke or method != "huber-log"
                   else f"  goal fit + bootstrap <= {GOAL_S:g} s: {'met' if total_s <= GOAL_S else 'MISSED'}")
        print(f"  {method:10} fit {fit_s:6.2f} s   bootstrap {boot_s:6.2f} s "
              f"({1000 * boot_s / resamples:5.1f} ms/resample){verdict}")
    q = refit_quality(*data, min(resamples, 200))
    print(f"  huber-log refit vs a polished huber_log, objective / its − 1: median {np.median(q):+.1e}, "
          f"worst {q.max():+.1e}, best {q.min():+.1e} ({len(q)} resamples)")
    if CHINCHILLA.exists():
        chinchilla(resamples)
    else:
        print(f"Chinchilla: {CHINCHILLA} not found, skipped")
    for threads in (1, 2) if args.stage else ():  # `snakemake --cores 2` gives the fit job 2
        stage_s = fit_stage(args.stage, threads)
        print(f"fit stage of {args.stage}, {threads} thread(s): {stage_s:.2f} s (process start included)  "
              f"goal <= {STAGE_GOAL_S:g} s: {'met' if stage_s <= STAGE_GOAL_S else 'MISSED'}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def chinchilla(resamples: int) -> None:
    """Chinchilla's Approach 3 on Epoch AI's points: fit and bootstrap timings."""
    p = pd.read_csv(CHINCHILLA)
    p = p[~p["epoch_excluded_outlier"]]
    chin = p["n_params"], p["tokens"], p["loss"]
    fit_chinchilla(*chin)  # once untimed, as above
    _, fit_s = timed(lambda: fit_chinchilla(*chin))
    fit, total_s = timed(lambda: fit_chinchilla(*chin, resamples=resamples, seed=0))
    lo, hi = fit.intervals["E"]
    print(f"Chinchilla Approach 3 ({len(p)} points, 4,500 starts screened to 100), {resamples} resamples")
    print(f"  fit {fit_s:6.2f} s   bootstrap {max(total_s - fit_s, 0.0):6.2f} s   E = {fit.params['E']:.4f} "
          f"[{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
