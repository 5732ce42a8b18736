"""Fit and bootstrap timings of the laws on published data.

    python benchmarks/bench_fit.py            # 1,000 resamples, every method (about a minute)
    python benchmarks/bench_fit.py --smoke    # 20 resamples: checks the script runs (seconds)

Goal (issue 5): a bootstrap of 1,000 resamples of the over-training law in at
most 10 s on a 2-core machine. The fit set is Figure 1's (RedPajama, 5 runs);
Chinchilla's Approach 3 uses Epoch AI's 240 points when ../shared is beside the
repository. Timings are wall-clock, one process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from scaling.testbeds import gadre
from scaling.fit.chinchilla import fit_chinchilla
from scaling.fit.tables import matches
from scaling.fit.overtraining import METHODS, fit_overtraining

GOAL_S = 10.0
CHINCHILLA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "chinchilla" / "points.csv"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="20 resamples, to check the script runs")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    resamples = 20 if args.smoke else args.resamples

    runs = gadre.load_runs()
    rpj = runs[runs["dataset"] == "rpj"].reset_index(drop=True)
    fs = rpj[matches(rpj, gadre.LOSS_FIT_ON)]
    data = fs["n_params"], fs["token_multiplier"], fs["loss"]
    print(f"over-training law, Gadre et al. Figure 1 fit set ({len(fs)} runs), {resamples} resamples")
    for method in METHODS:
        _, fit_s = timed(lambda: fit_overtraining(*data, method=method))
        boot, total_s = timed(lambda: fit_overtraining(*data, method=method, resamples=resamples, seed=0))
        boot_s = total_s - fit_s
        verdict = "" if args.smoke else f"  goal <= {GOAL_S:g} s: {'met' if boot_s <= GOAL_S else 'MISSED'}"
        print(f"  {method:10} fit {fit_s:6.2f} s   bootstrap {boot_s:6.2f} s "
              f"({1000 * boot_s / resamples:5.1f} ms/resample){verdict}")

    if not CHINCHILLA.exists():
        print(f"Chinchilla: {CHINCHILLA} not found, skipped")
        return
    p = pd.read_csv(CHINCHILLA)
    p = p[~p["epoch_excluded_outlier"]]
    chin = p["n_params"], p["tokens"], p["loss"]
    _, fit_s = timed(lambda: fit_chinchilla(*chin))
    fit, total_s = timed(lambda: fit_chinchilla(*chin, resamples=resamples, seed=0))
    lo, hi = fit.intervals["E"]
    print(f"Chinchilla Approach 3 ({len(p)} points, 4,500 starts screened to 100), {resamples} resamples")
    print(f"  fit {fit_s:6.2f} s   bootstrap {total_s - fit_s:6.2f} s   E = {fit.params['E']:.4f} "
          f"[{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
