"""The DuckDB database: every table, its documentation, all studies at once, and read-only SQL."""

from __future__ import annotations

import re
import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from conftest import REPO
from scaling.store import collect as C
from scaling.store import database as D
from scaling.store import schema
from scaling.study import runs as S
from scaling.testbeds import synthetic
from test_collect import make_study


@pytest.fixture
def study_db(tmp_path):
    """A collected synthetic study with its database: results/<name>/{tables,scaling.duckdb}."""
    def make(name: str, **grid):
        root = tmp_path / "results" / name
        _, paths = make_study(root, **grid)
        C.collect(paths, root / "tables")
        D.build_database(root / "tables", root / "scaling.duckdb")
        return root / "scaling.duckdb", len(paths)
    return make


def test_the_database_has_every_table_with_its_core_columns_and_their_docs(study_db):
    db, n_runs = study_db("a")
    con = D.open_study(db)
    for table, (_, cols) in schema.TABLES.items():
        names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert names[: len(cols)] == [c.name for c in cols], table
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == n_runs
    assert con.execute("SELECT count(*) FROM downstream").fetchone()[0] == 0  # empty, but queryable
    assert con.execute("SELECT count(*) FROM schema_columns").fetchone()[0] == sum(
        len(cols) for _, cols in schema.TABLES.values())
    doc = con.execute("SELECT comment FROM duckdb_columns() WHERE table_name = 'runs' AND column_name = 'val_loss'")
    assert doc.fetchone()[0] == next(c.doc for c in schema.columns("runs") if c.name == "val_loss")


def test_a_table_that_breaks_its_schema_fails_the_build_naming_it(study_db, tmp_path):
    db, _ = study_db("a")
    tables = db.parent / "tables"
    pd.DataFrame([{"law": "overtraining", "n_points": 3}]).to_parquet(tables / "fits.parquet")
    with pytest.raises(schema.SchemaError, match=r"fits: required column 'dataset' is missing \(in .*fits.parquet\)"):
        D.build_database(tables, tmp_path / "other.duckdb")


def test_all_studies_can_be_queried_together(study_db):
    db_a, n_a = study_db("a")
    _, n_b = study_db("b", n_sizes=1, multipliers=(20,), lrs=(0.01,))
    con = D.open_all(db_a.parents[1])
    counts = dict(con.execute("SELECT study, count(*) FROM runs GROUP BY study").fetchall())
    assert counts == {"a": n_a, "b": n_b}
    assert con.execute("SELECT count(*) FROM b.runs").fetchone()[0] == n_b
    joined = con.execute("SELECT count(*) FROM curves c JOIN runs r USING (study, run_id)").fetchone()[0]
    assert joined == con.execute("SELECT count(*) FROM curves").fetchone()[0] > 0


@pytest.mark.parametrize("sql", [
    "DELETE FROM runs", "INSERT INTO runs (run_id) VALUES ('x')", "UPDATE runs SET lr = 0",
    "CREATE TABLE t AS SELECT 1", "DROP TABLE runs", "COPY runs TO 'out.csv'", "ATTACH 'x.duckdb'",
    "SELECT 1; DELETE FROM runs",
])
def test_statements_that_write_are_refused(sql):
    with pytest.raises(D.ReadOnlyError, match="not run.*read-only"):
        D.check_read_only(sql)


@pytest.mark.parametrize("sql", ["SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a", "EXPLAIN SELECT 1",
                                 "DESCRIBE runs", "SUMMARIZE runs", "PRAGMA show_tables"])
def test_queries_are_allowed(sql):
    D.check_read_only(sql)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_scaling_sql_refuses_writes_to_any_study_and_reports_query_errors(study_db, tmp_path):
    db, n_runs = study_db("a")
    study_db("b")
    for flags in (["--db", str(db)], ["--all"]):
        bad = run_cli("sql", *flags, "COPY runs TO 'leak.csv'", cwd=tmp_path)
        assert bad.returncode != 0 and "read-only" in bad.stderr and not (tmp_path / "leak.csv").exists()
        typo = run_cli("sql", *flags, "SELECT nope FROM runs", cwd=tmp_path)
        assert typo.returncode != 0 and 'column "nope" not found' in typo.stderr
    both = run_cli("sql", "--all", "--csv", "SELECT study, count(*) AS n FROM runs GROUP BY ALL ORDER BY 1",
                   cwd=tmp_path)
    assert both.returncode == 0 and both.stdout.split() == ["study,n", f"a,{n_runs}", f"b,{n_runs}"]


def readme_queries() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Query the results with SQL"):]
    return re.findall(r"```sql\n(.*?)```", section[:section.index("\n### ", 1)], re.S)


def test_every_readme_query_runs_and_finds_the_diverged_and_missing_cells(study_db):
    db, _ = study_db("a")
    con = D.open_study(db)
    queries = readme_queries()
    assert len(queries) >= 3
    for q in queries:
        D.query(con, q)  # raises on any error
    best_lr = D.query(con, queries[0])
    runs = con.execute("SELECT * FROM runs WHERE status = 'ok'").df()
    expected = runs.loc[runs.groupby(["dataset", "size", "token_multiplier"])["val_loss"].idxmin()]
    assert sorted(zip(best_lr["size"], best_lr["token_multiplier"], best_lr["best_lr"])) == sorted(
        zip(expected["size"], expected["token_multiplier"], expected["lr"]))
    frontier = D.query(con, queries[1])
    assert frontier["loss"].is_monotonic_decreasing and frontier["flops"].is_monotonic_increasing
    assert frontier["loss"].iloc[-1] == runs["val_loss"].min()


def test_the_readme_queries_as_written_list_planned_cells_only_and_each_prediction_once(tmp_path):
    """On a grid that is a union of blocks (not the product of its sizes and multipliers), with a cell whose every
    run diverged, and predictions of two laws for the same points (as the fit stage writes them)."""
    root = tmp_path / "results" / "u"
    config = synthetic.study_config("u", 3, [20], [0.01, 0.02])
    config["grid"].append({"sizes": ["d16"], "token_multipliers": [80], "learning_rates": [0.01]})
    runs = S.runs(config)
    paths = [synthetic.write_run(root, config, r, 20, diverged=r.size == "d24") for r in runs]
    C.collect(paths, root / "tables")
    sizes = S.model_sizes(config)
    points = [("d16", 20.0, "fit"), ("d32", 20.0, "fit"), ("d16", 80.0, "held_out"), ("d24", 80.0, "target")]
    predictions = pd.DataFrame([
        {"law": law, "dataset": "bible", "size": size, "n_params": sizes[size], "token_multiplier": m, "role": role,
         "predicted_loss": 3.0, "measured_loss": None if role == "target" else 3.3,
         "rel_error": None if role == "target" else 3.0 / 3.3 - 1}
        for law in ("overtraining", "downstream") for size, m, role in points])
    schema.write_table(root / "tables" / "predictions.parquet", "predictions", predictions)
    D.build_database(root / "tables", root / "scaling.duckdb")
    con = D.open_study(root / "scaling.duckdb")
    queries = {q.splitlines()[0]: q for q in readme_queries()}

    diverged = D.query(con, next(q for k, q in queries.items() if "diverged" in k))
    planned = {(r.size, r.token_multiplier) for r in runs}
    assert list(zip(diverged["size"], diverged["token_multiplier"])) == [("d24", 20.0)]  # planned, all diverged
    assert {(s, m) for s in ("d16", "d24", "d32") for m in (20.0, 80.0)} - planned  # the product has unplanned cells
    assert sorted(diverged["diverged_runs"].iloc[0]) == sorted(r.id for r in runs if r.size == "d24")

    predicted = D.query(con, next(q for k, q in queries.items() if "predicted" in k))
    assert list(zip(predicted["size"], predicted["role"])) == [("d16", "held_out"), ("d24", "target")]
    assert predicted["rel_error_pct"].iloc[0] == round(100 * (3.0 / 3.3 - 1), 2)
    assert predicted["rel_error_pct"].isna().iloc[1]  # a target: nothing measured


def test_the_grid_query_lists_a_cell_whose_runs_all_diverged(tmp_path):
    root = tmp_path / "results" / "x"
    _, paths = make_study(root, n_sizes=2, multipliers=(10, 20), lrs=(0.01,))  # the first run diverged
    C.collect(paths, root / "tables")
    D.build_database(root / "tables", root / "scaling.duckdb")
    out = D.query(D.open_study(root / "scaling.duckdb"), readme_queries()[2])
    assert len(out) == 1 and list(out["diverged_runs"].iloc[0]) == [C.read_run(paths[0]).record["run_id"]]


def test_scaling_sql_on_a_missing_database_says_what_to_do(tmp_path):
    proc = run_cli("sql", "SELECT 1", cwd=tmp_path)
    assert proc.returncode != 0 and "scaling.duckdb" in proc.stderr and "snakemake" in proc.stderr


def test_duckdb_itself_opens_the_database_from_anywhere(study_db, tmp_path):
    db, n_runs = study_db("a")
    moved = tmp_path / "elsewhere.duckdb"
    db.rename(moved)  # self-contained: no paths to the Parquet files inside
    assert duckdb.connect(str(moved), read_only=True).execute("SELECT count(*) FROM runs").fetchone()[0] == n_runs
