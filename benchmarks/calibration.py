"""The calibration table of the README: how often the prediction intervals hold, at each nominal level.

    python benchmarks/calibration.py            # every backtest of both tables (90 s on 2 cores)
    python benchmarks/calibration.py --smoke    # C4 validation loss only, to check the script runs

Backtests on published data, each prediction judged on a value its fit and its calibration never saw:

- Gadre et al. (2024), the paper's fit design (Figure 1's five runs per training set): every other run
  predicted, on all 8 validation sets × 3 training sets, loss and (C4 only) 17-task error; and the six
  Figure 1 targets (the 1.4B over-trained and 6.9B runs, C4 validation loss);
- the Chinchilla points reconstructed by Epoch AI (when ../shared is beside the repository): fitted
  below 1e21 FLOPs, predicting above; and a second table, fitted below each of seven splits from 1.5e19 to
  1.5e21 FLOPs, predicting every run above, with and without the growth a log loss's error is given beyond
  the distances its calibration's scores tested (scaling.fit.calibration.untested_variance).

The intervals are Student-t with ν = 4 in the calibrated error scale s (scaling.fit.calibration), so one set of
predictions gives every level: a point is inside its level-q interval when |e| ≤ t₄((1+q)/2)·s, with
e the error in the calibration's space (log loss, or the error fraction) and s its 95% half-width / t₄(0.975).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from scaling.testbeds import gadre
from scaling.fit.calibration import NU, untested_variance
from scaling.fit.tables import backtest, fit_table, matches

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
VAL_SETS = ("c4_val", "openlm", "paloma_c4_en", "paloma_dolma_100_programing_languages", "paloma_falcon-refinedweb",
            "paloma_ptb", "paloma_redpajama", "val_de-en_100")
CHINCHILLA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "chinchilla" / "points.csv"


def row(name: str, pred: pd.DataFrame, q: str = "loss") -> dict:
    """Coverage at every level, median 95% half-width and mean |relative error| of ``pred``'s measured points."""
    prefix = "" if q == "loss" else "error_"
    p = pred[pred[f"measured_{q}"].notna()]
    y, m = p[f"predicted_{q}"], p[f"measured_{q}"]
    lo, hi = p[f"predicted_{q}_lo"], p[f"predicted_{q}_hi"]
    if q == "loss":  # log space, symmetric: the standardized error
        z = np.abs(np.log(y / m)) / (np.log(hi / y) / stats.t.ppf(0.975, NU))
    else:
        z = np.abs(y - m) / ((hi - y) / stats.t.ppf(0.975, NU))
    out = {"backtest": name, "points": len(p)}
    for level in LEVELS:
        out[f"{level:.0%}"] = f"{np.mean(z <= stats.t.ppf(0.5 + level / 2, NU)):.1%}"
    out["median half-width (95%)"] = f"{p[f'{prefix}half_width'].median():.2%}"
    out["mean abs. error"] = f"{p[f'{prefix}rel_error'].abs().mean():.2%}"
    return out


SPLITS = (1.5e19, 4e19, 8e19, 1.5e20, 4e20, 8e20, 1.5e21)


def beyond_rows(points: pd.DataFrame) -> list[dict]:
    """Per split: the test runs, those beyond the distances the calibration tested, and the 95% coverage and
    median half-width of each with the untested growth (as shipped) and without it (its variance taken out of
    the same intervals: exact unless the law's scale sits at its floor, noise/√n_fit, see Calibration.scale)."""
    t = stats.t.ppf(0.975, NU)
    out = []
    for split in SPLITS:
        fits, pred = backtest("chinchilla", points, split=split)
        p, cal = pred[pred["role"] == "test"], fits[0].calibration
        up, down = p["extrapolation_up"].to_numpy(), p["extrapolation_down"].to_numpy()
        s_with = np.log(p["predicted_loss_hi"] / p["predicted_loss"]).to_numpy() / t
        s_without = np.sqrt(s_with**2 - untested_variance(up, down, cal.max_up, cal.max_down))
        error = np.abs(np.log(p["predicted_loss"] / p["measured_loss"])).to_numpy()
        beyond = (up > cal.max_up + 1e-9) | (down > cal.max_down + 1e-9)
        row = {"fit below": f"{split:.2g}", "test runs": len(p), "beyond tested": int(beyond.sum())}
        for name, s in (("with", s_with), ("without", s_without)):
            row[f"95% coverage, {name}"] = f"{np.mean(error <= t * s):.1%}"
            row[f"beyond tested, {name}"] = f"{int(np.sum((error <= t * s)[beyond]))}/{int(beyond.sum())}"
            row[f"median half-width, {name}"] = f"{np.median(np.sinh(t * s)):.2%}"
        out.append(row)
    return out


def markdown(rows: list[dict]) -> str:
    table = pd.DataFrame(rows)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="C4 validation loss only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    val_sets = VAL_SETS[:1] if args.smoke else VAL_SETS
    runs = pd.concat([gadre.load_runs(val_set=v).assign(val_set=v) for v in val_sets], ignore_index=True)
    _, pred = fit_table("overtraining", runs, fit_on=gadre.LOSS_FIT_ON, by=["dataset", "val_set"])
    held = pred[pred["role"] == "held_out"]
    rows = [row(f"Gadre et al., paper's fit design, {len(val_sets)} validation set(s) × 3 training sets: loss", held)]
    c4 = held[held["val_set"] == "c4_val"]
    rows.append(row("… C4 validation loss only", c4))
    rows.append(row("… the six Figure 1 targets (C4 validation loss)", c4[matches(c4, gadre.TARGETS)]))
    _, down = fit_table("downstream", gadre.load_runs(), fit_on=gadre.LOSS_FIT_ON, error_fit_on=gadre.ERROR_FIT_ON,
                        by=["dataset"])
    rows.append(row("… 17-task top-1 error, chained to the loss law (C4)", down[down["error_role"] == "held_out"],
                    "error"))
    points = None
    if CHINCHILLA.exists() and not args.smoke:
        points = pd.read_csv(CHINCHILLA)
        points = points[~points["epoch_excluded_outlier"]]
        _, chin = backtest("chinchilla", points, split=1e21)
        rows.append(row("Chinchilla points (Epoch AI): fit below 1e21 FLOPs, predict above", chin[chin["role"] == "test"]))
    print(markdown(rows))
    if points is not None:
        print("\nBeyond the distances the calibration tested (Chinchilla points, every run above the split):\n")
        print(markdown(beyond_rows(points)))


if __name__ == "__main__":
    main()
