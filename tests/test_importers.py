"""Published testbeds as studies: the Gadre et al. (2024) import and the generic CSV importer."""

from __future__ import annotations

import math
import subprocess
import sys

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.testbeds import gadre
from scaling.store import database as D
from scaling.testbeds import importers as I

GADRE = gadre.DATA


@pytest.fixture(scope="module")
def gadre(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    rows = I.import_gadre2024(results)
    return results / "gadre2024", rows


def test_gadre2024_has_every_run_validation_set_and_task(gadre):
    out, rows = gadre
    models, downstream = pd.read_csv(GADRE / "models.csv"), pd.read_csv(GADRE / "downstream.csv")
    assert rows["runs"] == models["run_name"].nunique()
    assert rows["evals"] == len(models) and rows["downstream"] == len(downstream) and rows["curves"] == 0
    con = D.open_study(out / "scaling.duckdb")
    runs = con.execute("SELECT * FROM runs").df().set_index("run_id")
    c4 = models[models["val_set"] == "c4_val"].set_index("run_name")
    assert np.allclose(runs.loc[c4.index, "val_loss"], c4["loss"])  # the paper's default validation set
    assert (runs.loc[c4.index, "size"] == c4["model"]).all()
    assert (runs.loc[c4.index, "flops"] == c4["flops_6ND"]).all()
    assert set(runs["status"]) == {"ok"} and set(runs["source"]) == {"import:gadre2024"}
    assert "weight_decay" in runs.columns  # unmapped run-level columns are carried
    evals = con.execute("SELECT * FROM evals").df()
    assert (evals.groupby("run_id").size() == models["val_set"].nunique()).all()
    assert "loss_tok_upper95" in evals.columns and "loss_tok_upper95" not in runs.columns
    down = con.execute("SELECT * FROM downstream").df()
    assert {"task", "accuracy", "in_17task_subset"} <= set(down.columns) and "n_params" not in down.columns
    assert (out / "LICENSE").read_text() == (GADRE / "LICENSE").read_text()


def test_the_overtraining_fit_runs_on_the_imported_testbed(gadre):
    from scaling.fit.tables import fit_table

    runs = pd.read_parquet(gadre[0] / "tables" / "runs.parquet")
    fits, pred = fit_table("overtraining", runs, by=["dataset"])
    assert sorted(f.meta["group"]["dataset"] for f in fits) == ["c4_original", "rpj", "rw_original"]
    for f in fits:
        assert all(math.isfinite(v) for v in f.params.values()) and f.params["b"] < 0
    held_out = pred[pred["role"] == "held_out"]
    assert len(held_out) and held_out["rel_error"].abs().median() < 0.1  # the law extrapolates to unseen (N, M)


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ROWS = [{"model": m, "N": n, "D": 20 * n, "loss": 4.0 - 0.1 * i + (e == "x") / 2, "eval": e, "eta": 3e-3}
        for i, (m, n) in enumerate([("a", 1000), ("b", 2000)]) for e in ("x", "y")]


def test_a_csv_imports_with_a_column_mapping(tmp_path):
    csv = write_csv(tmp_path / "bed.csv", ROWS)
    rows = I.import_csv(csv, "bed", tmp_path, {"size": "model", "n_params": "N", "tokens": "D", "val_loss": "loss",
                                              "lr": "eta"}, {"dataset": "web"}, "eval", "y")
    assert rows["runs"] == 2 and rows["evals"] == 4
    runs = D.open_study(tmp_path / "bed" / "scaling.duckdb").execute("SELECT * FROM runs ORDER BY n_params").df()
    assert list(runs["run_id"]) == ["web/a/M20_lr0.003", "web/b/M20_lr0.003"]
    assert list(runs["token_multiplier"]) == [20.0, 20.0]
    assert list(runs["flops"]) == [6.0 * 1000 * 20000, 6.0 * 2000 * 40000]
    assert list(runs["val_loss"]) == [4.0, 3.9]
    evals = D.open_study(tmp_path / "bed" / "scaling.duckdb").execute("SELECT val_set, loss FROM evals "
                                                                     "WHERE run_id = 'web/a/M20_lr0.003'").fetchall()
    assert sorted(evals) == [("x", 4.5), ("y", 4.0)]


def test_a_missing_column_names_the_mapping_to_add(tmp_path):
    csv = write_csv(tmp_path / "bed.csv", ROWS)
    with pytest.raises(I.TestbedError, match=r"no column for \['dataset'.*--map dataset="):
        I.import_csv(csv, "bed", tmp_path, {"size": "model", "n_params": "N", "tokens": "D", "val_loss": "loss"},
                     val_set_column="eval", val_set="y")
    with pytest.raises(I.TestbedError, match="appears in more than one row.*--val-set-column"):
        I.import_csv(csv, "bed", tmp_path, {"size": "model", "n_params": "N", "tokens": "D", "val_loss": "loss"},
                     {"dataset": "web"})
    with pytest.raises(I.TestbedError, match=r"CSV column\(s\) \['nope'\] that do not exist"):
        I.import_csv(csv, "bed", tmp_path, {"size": "nope"})


@pytest.mark.slow
def test_scaling_import_csv_then_sql(tmp_path):
    csv = write_csv(tmp_path / "bed.csv", ROWS)
    cli = [sys.executable, "-m", "scaling.cli"]
    imp = subprocess.run([*cli, "import", "csv", str(csv), "--study", "bed", "--map", "size=model", "--map",
                          "n_params=N", "--map", "tokens=D", "--map", "val_loss=loss", "--set", "dataset=web",
                          "--val-set-column", "eval", "--val-set", "x"], cwd=tmp_path, capture_output=True, text=True)
    assert imp.returncode == 0, imp.stderr
    assert "query it: scaling sql --db results/bed/scaling.duckdb" in imp.stdout  # an imported study has no study file
    sql = subprocess.run([*cli, "sql", "--db", "results/bed/scaling.duckdb", "--csv",
                          "SELECT size, val_loss FROM runs ORDER BY size"], cwd=tmp_path, capture_output=True, text=True)
    assert sql.stdout.split() == ["size,val_loss", "a,4.5", "b,4.4"]
    bad = subprocess.run([*cli, "import", "csv", str(csv), "--study", "bed", "--map", "size"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "COLUMN=VALUE" in bad.stderr
