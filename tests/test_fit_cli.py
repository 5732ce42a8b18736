"""`scaling fit LAW --data FILE` on a study database, CSV and Parquet files, with SQL and configs as data."""

import json
import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from test_fit import runs_table

pytestmark = pytest.mark.slow  # each test runs `scaling fit` in a subprocess

CLI = [sys.executable, "-m", "scaling.cli", "fit"]


def scaling_fit(*args, cwd, check=True):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    runs = runs_table()
    con = duckdb.connect(str(d / "study.duckdb"))
    con.execute("CREATE TABLE runs AS SELECT * FROM runs")
    con.close()
    runs.to_csv(d / "runs.csv", index=False)
    runs.to_parquet(d / "runs.parquet")
    return d


def test_a_study_database_is_fitted_with_targets_and_json_output(files):
    out = scaling_fit("overtraining", "--data", files / "study.duckdb", "--bootstrap", 50, "--json",
                      "--targets", '[{"n_params": 1e9, "token_multiplier": 20}]', cwd=files)
    doc = json.loads(out.stdout)
    assert [f["n_points"] for f in doc["fits"]] == [5] and doc["fits"][0]["dataset"] == "d"
    roles = pd.DataFrame(doc["predictions"])["role"].value_counts().to_dict()
    assert roles == {"fit": 5, "held_out": 2, "target": 1}
    # the synthetic runs lie exactly on the law, so the bootstrap's interval has zero width up to rounding: the
    # prediction is inside it to within the rounding of the refits (numpy 2.4 / scipy 1.17 put it 1e-12 outside)
    rounding = 1e-9
    assert all(p["predicted_loss_lo"] <= p["predicted_loss"] * (1 + rounding)
               and p["predicted_loss"] <= p["predicted_loss_hi"] * (1 + rounding) for p in doc["predictions"])


def test_where_chooses_rows_and_the_default_fit_set_follows(files):
    out = scaling_fit("overtraining", "--data", files / "runs.csv", "--where", "token_multiplier <= 80",
                      "--bootstrap", 0, "--json", cwd=files)
    doc = json.loads(out.stdout)
    pred = pd.DataFrame(doc["predictions"])
    assert len(pred) == 6 and pred["token_multiplier"].max() == 80
    assert doc["fits"][0]["fit_on"] == [{"token_multiplier": 20.0}, {"size": "n10000000", "token_multiplier": 80.0}]


def test_a_fit_config_file_states_the_fit_set_and_flags_override_it(files):
    (files / "fit.yaml").write_text("fit_on:\n  - {token_multiplier: 20}\n  - {size: n10000000, token_multiplier: 80}\n"
                                    "method: bounded\nbootstrap: 0\n")
    out = scaling_fit("overtraining", "--data", files / "runs.parquet", "--fit-config", files / "fit.yaml",
                      "--method", "gadre", "--out", files / "fit.json", "--predictions", files / "pred.parquet",
                      "--fits-table", files / "fits.parquet", "--parameters", files / "parameters.parquet", cwd=files)
    assert "fitted by gadre on 5 points" in out.stdout and "95% lo" in out.stdout
    doc = json.loads((files / "fit.json").read_text())
    assert doc["fits"][0]["method"] == "gadre" and doc["fits"][0]["interval_method"] == "none"
    pred = pd.read_parquet(files / "pred.parquet")
    assert set(pred.loc[pred["role"] == "fit", "token_multiplier"]) == {20.0, 80.0}
    assert pd.read_parquet(files / "fits.parquet").loc[0, "method"] == "gadre"
    params = pd.read_parquet(files / "parameters.parquet").set_index("parameter")
    assert params["value"].to_dict() == doc["fits"][0]["params"] and (params["dataset"] == "d").all()


def test_sql_that_does_not_run_is_reported_with_its_error(files):
    bad = scaling_fit("overtraining", "--data", files / "runs.csv", "--where", "no_such_column > 1",
                      cwd=files, check=False)
    assert bad.returncode != 0 and "no_such_column" in bad.stderr and "Traceback" not in bad.stderr


def test_too_few_points_is_reported_as_such(files):
    bad = scaling_fit("overtraining", "--data", files / "runs.csv", "--fit-on", "token_multiplier = 20",
                      cwd=files, check=False)
    assert bad.returncode != 0 and "only 4 distinct points" in bad.stderr


def test_a_missing_file_is_named(files):
    bad = scaling_fit("chinchilla", "--data", files / "nope.csv", cwd=files, check=False)
    assert bad.returncode != 0 and "nope.csv does not exist" in bad.stderr
