"""Proof on published data: the testbed of Gadre et al. (2024), shipped with the package.

Figure 1 of the paper: the over-training law fitted on the four smaller sizes at
M = 20 plus the 0.011B model at M = 320, the error law on those runs plus the
1.4B model at M = 20 (RedPajama, C4 validation loss, 17-task average error),
predicting the 1.4B model at M = 640 and the 6.9B model at M = 20.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from scaling.testbeds import gadre
from scaling.fit.tables import fit_table, matches
from scaling.fit.overtraining import METHODS

# Figure 1's relative errors, in percent: (loss, 17-task top-1 error)
FIGURE1 = {"open_lm_1b": (0.7103, 3.6365), "open_lm_7b": (0.7320, 0.0464)}


def paper_fit(method="gadre", resamples=0):
    return fit_table("downstream", gadre.load_runs(), fit_on=gadre.LOSS_FIT_ON, error_fit_on=gadre.ERROR_FIT_ON,
                     by=["dataset"], method=method, resamples=resamples, seed=0)


@pytest.fixture(scope="module")
def with_intervals():
    """Per method: the fits and the six target predictions, with 95% intervals from 1,000 resamples."""
    cache = {}

    def get(method):
        if method not in cache:
            fits, pred = paper_fit(method, resamples=1000)
            cache[method] = fits, pred[matches(pred, gadre.TARGETS)].set_index(["dataset", "model"])
        return cache[method]
    return get


def test_the_testbed_loads_one_row_per_run_with_the_17_task_error():
    runs = gadre.load_runs()
    assert len(runs) == 104 and runs["run_name"].is_unique
    assert runs["error"].between(0, 1).all() and (runs["loss"] > 0).all()
    assert not np.allclose(runs["error"], gadre.load_runs(tasks="46")["error"])


@pytest.mark.slow
def test_figure1_relative_errors_are_reproduced(with_intervals):
    fits, targets = with_intervals("gadre")
    rpj = [f for f in fits if f.meta["group"] == {"dataset": "rpj"}]
    assert [(f.law, f.n_points) for f in rpj] == [("overtraining", 5), ("downstream", 6)]
    for model, (loss_pct, error_pct) in FIGURE1.items():
        row = targets.loc[("rpj", model)]
        assert 100 * abs(row["rel_error"]) == pytest.approx(loss_pct, rel=1e-3), model
        assert 100 * abs(row["error_rel_error"]) == pytest.approx(error_pct, rel=1e-3), model


@pytest.mark.slow
def test_the_default_huber_fit_beats_the_paper_procedure_on_the_six_loss_predictions():
    """Mean relative error of the six loss predictions (3 training sets × 2 targets), per method."""
    mean_error = {}
    for method in METHODS:
        _, pred = fit_table("overtraining", gadre.load_runs(), fit_on=gadre.LOSS_FIT_ON, by=["dataset"], method=method)
        six = pred[matches(pred, gadre.TARGETS)]
        assert len(six) == 6
        mean_error[method] = six["rel_error"].abs().mean()
    print({m: f"{100 * e:.4f}%" for m, e in mean_error.items()})
    assert 100 * mean_error["gadre"] == pytest.approx(1.48, abs=0.005)
    assert mean_error["bounded"] == pytest.approx(mean_error["gadre"], rel=1e-6)  # no bound is active
    assert METHODS[0] == "huber-log" and mean_error["huber-log"] < mean_error["gadre"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gadre", "huber-log"])
def test_every_prediction_has_an_interval_and_the_coverage_report(with_intervals, method):
    _, targets = with_intervals(method)
    assert len(targets) == 6
    print(f"\n{method}: training set / model / M: measured [95% prediction interval] covered; loss, then error")
    for (dataset, model), r in targets.iterrows():
        for q, covered in (("loss", "covered"), ("error", "error_covered")):
            lo, hi = r[f"predicted_{q}_lo"], r[f"predicted_{q}_hi"]
            assert lo < r[f"predicted_{q}"] < hi
            assert r[covered] == (lo <= r[f"measured_{q}"] <= hi)
        print(f"{dataset:12} {model:10} M={r['token_multiplier']:>3g}: loss {r['measured_loss']:.4f} "
              f"[{r['predicted_loss_lo']:.4f}, {r['predicted_loss_hi']:.4f}] {r['covered']}; "
              f"error {r['measured_error']:.4f} [{r['predicted_error_lo']:.4f}, {r['predicted_error_hi']:.4f}] "
              f"{r['error_covered']}")
    print(f"covered: loss {targets['covered'].sum()}/6, error {targets['error_covered'].sum()}/6")
    # the paper's own Figure 1 predictions are inside their intervals
    assert targets.loc["rpj", "covered"].all() and targets.loc["rpj", "error_covered"].all()


@pytest.mark.slow
def test_one_command_reproduces_figure1_from_the_shipped_csv_files(tmp_path):
    query = gadre.RUNS_SQL.format(task_filter="in_17task_subset", val_set="c4_val")
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "fit", "downstream", "--data", str(gadre.DATA / "models.csv"),
         "--data", str(gadre.DATA / "downstream.csv"), "--query", query, "--method", "gadre",
         "--fit-on", gadre.LOSS_FIT_ON, "--error-fit-on", gadre.ERROR_FIT_ON, "--bootstrap", "0", "--json"],
        capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {(p["dataset"], p["model"], p["token_multiplier"]): p for p in doc["predictions"]}
    assert 100 * abs(rows[("rpj", "open_lm_1b", 640.0)]["rel_error"]) == pytest.approx(0.7103, rel=1e-3)
    assert 100 * abs(rows[("rpj", "open_lm_7b", 20.0)]["error_rel_error"]) == pytest.approx(0.0464, rel=1e-3)
    assert {f["law"] for f in doc["fits"]} == {"overtraining", "downstream"} and len(doc["fits"]) == 6
