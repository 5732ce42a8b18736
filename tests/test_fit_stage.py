"""The pipeline's fit stage (scaling.fit.stage): every law a study supports, from its runs and downstream tables."""

import json

import numpy as np
import pandas as pd
import pytest

from scaling.store import schema
from scaling.fit.stage import fit_study, with_error, write_fits
from scaling.fit.tables import fit_table
from scaling.fit.laws import downstream_error, optimal_lr, overtraining_loss

LOSS = {"E": 1.5, "a": 100.0, "b": -0.3, "c": 200.0}
ERROR = {"epsilon": 0.9, "k": 3.0, "gamma": 0.5}
LR = {"c": 50.0, "a": -0.5, "b": -0.1}
SIZES = {"s1": 1e6, "s2": 2e6, "s3": 4e6, "s4": 8e6, "s5": 1.6e7}
FIT = {"fit_on": [{"token_multiplier": 20}, {"size": "s1", "token_multiplier": 80}],
       "targets": [{"size": "s5", "token_multiplier": 80}], "method": "huber-log", "bootstrap": 40, "seed": 0,
       "scheme": "bayesian", "level": 0.95}


def study(multipliers=(20, 80), seed=0):
    """Runs on the laws with small noise: an LR sweep (a parabola in log lr around η*) at every (size, M)."""
    rng = np.random.default_rng(seed)
    runs, scores = [], []
    for size, n in SIZES.items():
        for m in multipliers if size != "s5" else (20,):
            best = overtraining_loss(n, m, **LOSS) * np.exp(rng.normal(0, 0.003))
            opt = optimal_lr(n, m * n, **LR) * np.exp(rng.normal(0, 0.05))
            for lr in (opt / 3, opt * np.exp(rng.normal(0, 0.01)), opt * 3):
                run_id = f"d/{size}/M{m}_lr{lr:.4g}"
                loss = best + 0.05 * np.log(lr / opt) ** 2
                runs.append({"run_id": run_id, "dataset": "d", "size": size, "n_params": n,
                             "token_multiplier": float(m), "lr": lr, "seed": 0, "status": "ok", "val_loss": loss,
                             "initial_loss": 5.5})
                accuracy = 1 - downstream_error(loss, **ERROR) + rng.normal(0, 0.003)
                scores += [{"run_id": run_id, "task": "core", "kind": "average", "accuracy": accuracy},
                           {"run_id": run_id, "task": "easy", "kind": "task", "accuracy": 0.9}]
    return pd.DataFrame(runs), pd.DataFrame(scores)


def test_the_downstream_law_is_fitted_to_the_task_set_and_chained_to_the_loss_law():
    runs, scores = study()
    fitted = fit_study(runs, scores, FIT, SIZES, "core")
    fits, pred, skipped = fitted["downstream"]
    assert skipped is None and len(fits) == 1 and fits[0]["law"] == "downstream" and fits[0]["task"] == "core"
    for p, v in ERROR.items():
        assert fits[0]["params"][p] == pytest.approx(v, rel=0.15), p
    assert pred.groupby("role")["size"].apply(sorted).to_dict() == {
        "fit": ["s1", "s1", "s2", "s3", "s4", "s5"], "held_out": ["s2", "s3", "s4"], "target": ["s5"]}
    measured = pred.dropna(subset=["measured_error"])
    # the error law at the measured loss is the law itself; the chained one goes through the predicted loss
    law = downstream_error(measured["measured_loss"], **fits[0]["params"])
    assert measured["error_at_measured_loss"].to_numpy() == pytest.approx(np.asarray(law))
    chained = downstream_error(measured["predicted_loss"], **fits[0]["params"])
    assert measured["predicted_error"].to_numpy() == pytest.approx(np.asarray(chained))
    assert (abs(measured["predicted_error"] - measured["measured_error"]) < 0.02).all()
    assert (pred["predicted_error_lo"] <= pred["predicted_error"]).all()
    assert (pred["predicted_error"] <= pred["predicted_error_hi"]).all()


def test_the_optimal_lr_law_is_fitted_on_the_swept_points_when_n_and_d_vary_independently():
    runs, scores = study()
    fits, pred, skipped = fit_study(runs, scores, FIT, SIZES, None)["optimal_lr"]
    assert skipped is None and fits[0]["n_points"] == 9
    for p, v in LR.items():
        assert fits[0]["params"][p] == pytest.approx(v, rel=0.35, abs=0.05), p
    target = pred[pred["role"] == "target"].iloc[0]
    assert target["predicted_lr"] == pytest.approx(optimal_lr(1.6e7, 80 * 1.6e7, **LR), rel=0.3)


def test_laws_the_study_cannot_support_are_skipped_with_the_reason():
    runs, scores = study(multipliers=(20,))
    fit = {**FIT, "fit_on": None, "targets": []}
    fitted = fit_study(runs, scores, fit, SIZES, None)
    assert fitted["downstream"][2] == "the study scores no downstream tasks"
    assert "collinear" in fitted["optimal_lr"][2] and fitted["optimal_lr"][0] == []
    assert fitted["overtraining"][2] is None


def test_a_downstream_law_that_cannot_be_fitted_is_recorded_with_the_reason_and_the_rest_is_fitted(tmp_path):
    runs, scores = study()
    # dataset e: the same runs, whose error falls as their loss rises (as scores scattered about chance can):
    # the error law's least squares does not converge there
    e_runs = runs.assign(dataset="e", run_id="e" + runs["run_id"].str[1:])
    loss = e_runs["val_loss"]
    e_scores = pd.DataFrame({"run_id": e_runs["run_id"], "task": "core", "kind": "average",
                             "accuracy": 0.1 + 0.3 * (loss - loss.min()) / (loss.max() - loss.min())})
    runs, scores = pd.concat([runs, e_runs]), pd.concat([scores, e_scores])
    fitted = fit_study(runs, scores, {**FIT, "bootstrap": 0}, SIZES, "core")
    fits, pred, skipped = fitted["downstream"]
    assert [f["group"]["dataset"] for f in fits] == ["d"] and set(pred["dataset"]) == {"d"}
    assert skipped.startswith("the downstream law (the error on 'core') on dataset 'e' was not fitted: the "
                              "least-squares fit did not converge"), skipped
    assert "fix: score the runs on more examples (downstream.examples)" in skipped and "'d'" not in skipped
    assert sorted(f["group"]["dataset"] for f in fitted["overtraining"][0]) == ["d", "e"]
    assert fitted["optimal_lr"][0]
    write_fits(fitted, tmp_path / "fit", tmp_path / "fits.parquet", tmp_path / "parameters.parquet",
               tmp_path / "predictions.parquet", tmp_path / "backtest.parquet")
    doc = json.loads((tmp_path / "fit" / "downstream.json").read_text())
    assert doc["skipped"] == skipped and len(doc["fits"]) == 1
    tables = schema.read_table(tmp_path / "fits.parquet", "fits").to_pandas()
    assert tables.groupby("law")["dataset"].apply(sorted).to_dict() == {
        "downstream": ["d"], "optimal_lr": ["d", "e"], "overtraining": ["d", "e"]}


def test_a_loss_law_that_cannot_be_fitted_fails_the_stage_naming_the_law_and_the_fix():
    runs, scores = study()
    with pytest.raises(ValueError) as e:
        fit_study(runs, scores, {**FIT, "fit_on": [{"size": ["s1", "s2"]}], "bootstrap": 0}, SIZES, "core")
    assert str(e.value).startswith("the study's loss law, the over-training law, cannot be fitted: the over-training "
                                   "law has 4 parameters but the fit set has only 4 distinct points; it needs at "
                                   "least 5: fix: add model sizes at M = 20, 80 (the fit set's) or widen the fit set "
                                   "(fit.fit_on)"), e.value


def test_two_models_of_the_same_n_are_two_points_of_the_fit_and_a_target_measures_its_own():
    runs, scores = study()
    # s2b: another shape with s2's N, 0.1 nats worse; its runs are s2's with that loss
    twin = runs[runs["size"] == "s2"].assign(size="s2b", run_id=lambda d: d["run_id"].str.replace("s2", "s2b"),
                                             val_loss=lambda d: d["val_loss"] + 0.1)
    runs = pd.concat([runs, twin], ignore_index=True)
    fit = {**FIT, "bootstrap": 0, "targets": [{"size": "s2b", "token_multiplier": 80}]}
    fits, pred, _ = fit_study(runs, scores, fit, {**SIZES, "s2b": SIZES["s2"]}, None)["overtraining"]
    assert fits[0]["n_points"] == 7  # s1–s5 and s2b at M = 20, s1 at M = 80
    fitted = pred[pred["role"] == "fit"].set_index(["size", "token_multiplier"])["measured_loss"]
    best = runs.groupby(["size", "token_multiplier"])["val_loss"].min()
    assert fitted[("s2b", 20)] == best[("s2b", 20)] and fitted[("s2", 20)] == best[("s2", 20)]
    target = pred[pred["role"] == "target"].iloc[0]
    assert target["size"] == "s2b" and target["measured_loss"] == best[("s2b", 80)]


def test_unknown_task_is_a_clear_error():
    runs, scores = study()
    with pytest.raises(ValueError, match="no run has a downstream score for 'hard'; fix: set fit.downstream_task"):
        fit_study(runs, scores, FIT, SIZES, "hard")


def test_every_law_gets_its_json_and_the_tables_fit_the_schema(tmp_path):
    runs, scores = study()
    fitted = fit_study(runs, scores, {**FIT, "bootstrap": 0}, SIZES, "core")
    write_fits(fitted, tmp_path / "fit", tmp_path / "fits.parquet", tmp_path / "parameters.parquet",
               tmp_path / "predictions.parquet", tmp_path / "backtest.parquet")
    for law in ("overtraining", "downstream", "optimal_lr"):
        doc = json.loads((tmp_path / "fit" / f"{law}.json").read_text())
        assert doc["law"] == law and doc["skipped"] is None and doc["fits"] and doc["predictions"]
    fits = schema.read_table(tmp_path / "fits.parquet", "fits").to_pandas().set_index("law")
    assert sorted(fits.index) == ["downstream", "optimal_lr", "overtraining"]
    assert fits.loc["downstream", "task"] == "core"
    params = schema.read_table(tmp_path / "parameters.parquet", "parameters").to_pandas()
    assert params.groupby("law")["parameter"].apply(list).to_dict() == {
        "downstream": ["epsilon", "k", "gamma"], "optimal_lr": ["c", "a", "b"], "overtraining": ["E", "a", "b", "c"]}
    gamma = params[params["parameter"] == "gamma"].iloc[0]
    assert gamma["task"] == "core" and gamma["value"] == fitted["downstream"][0][0]["params"]["gamma"]
    pred = schema.read_table(tmp_path / "predictions.parquet", "predictions").to_pandas()
    assert pred.groupby("law").size().to_dict() == {"downstream": 10, "optimal_lr": 10, "overtraining": 10}  # 9 points + 1 target
    backtest = schema.read_table(tmp_path / "backtest.parquet", "backtest").to_pandas().set_index("law")
    held = pred[(pred["law"] == "overtraining") & (pred["role"] == "held_out")]
    assert backtest.loc["overtraining", "n"] == len(held) == 3 and backtest.loc["downstream", "quantity"] == "error"
    assert backtest.loc["overtraining", "coverage"] == pytest.approx(held["covered"].astype(float).mean(), nan_ok=True)
    assert backtest.loc["overtraining", "mean_abs_rel_error"] == pytest.approx(held["rel_error"].abs().mean())


def test_the_downstream_law_reuses_the_over_training_fit_and_gets_what_a_fresh_fit_gives():
    runs, scores = study()
    scored = with_error(runs, scores, "core")
    options = {"fit_on": FIT["fit_on"], "by": ["dataset"], "resamples": 20, "seed": 3}
    cache: dict = {}
    fit_table("overtraining", runs, cache=cache, **options)
    made = len(cache)  # the fit (and those of its calibration's folds, where the fit set has enough points)
    reused, reused_pred = fit_table("downstream", scored, cache=cache, **options)
    assert made >= 1 and len(cache) == made  # no over-training fit made twice
    fresh, fresh_pred = fit_table("downstream", scored, **options)
    for a, b in zip(reused, fresh):
        assert a.law == b.law and a.params == b.params and np.array_equal(a.samples, b.samples)
    pd.testing.assert_frame_equal(reused_pred, fresh_pred)


def test_a_fit_on_every_run_writes_an_empty_backtest_with_the_schema_columns(tmp_path):
    runs, scores = study()
    fitted = fit_study(runs, scores, {**FIT, "fit_on": "TRUE", "bootstrap": 0}, SIZES, "core")
    write_fits(fitted, tmp_path / "fit", tmp_path / "fits.parquet", tmp_path / "parameters.parquet",
               tmp_path / "predictions.parquet", tmp_path / "backtest.parquet")
    backtest = schema.read_table(tmp_path / "backtest.parquet", "backtest")
    assert backtest.num_rows == 0
    assert backtest.column_names == [c.name for c in schema.columns("backtest")]


def test_the_error_law_at_the_measured_loss_when_its_intervals_are_calibrated():
    # every M at four sizes: enough extrapolation folds that the error law's intervals are calibrated, the case
    # where the law at the measured loss (one input, L) once went through the calibration's (N, M) distances
    runs, scores = study(multipliers=(20, 40, 80, 160))
    fitted = fit_study(runs, scores, {**FIT, "fit_on": [{"size": ["s1", "s2", "s3", "s4"]}]}, SIZES, "core")
    fits, pred, _ = fitted["downstream"]
    assert fits[0]["calibrated"]
    measured = pred.dropna(subset=["measured_error"])
    law = downstream_error(measured["measured_loss"], **fits[0]["params"])
    assert measured["error_at_measured_loss"].to_numpy() == pytest.approx(np.asarray(law))
