"""`scaling sql` writes nothing, by DuckDB's own settings: statements that would write, touch a file, load an
extension or change a setting are refused with one line, and no byte changes anywhere, with `--db` and `--all`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from scaling.store import collect as C
from scaling.store import database as D
from test_collect import make_study
from test_database import readme_queries

# {root}: the working directory (it holds results/ and scratch/), {study}: the folder of the study queried, `a`, and
# {catalog} its name in SQL; {other}: another study's database (with --all, the study `b`)
STATEMENTS = [
    # write to the study's tables
    "DELETE FROM runs",
    "INSERT INTO runs (run_id) VALUES ('x')",
    "UPDATE runs SET val_loss = 0",
    "TRUNCATE runs",
    "MERGE INTO runs USING (SELECT 'x' AS run_id) s ON runs.run_id = s.run_id WHEN MATCHED THEN DELETE",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT * FROM runs",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO m() AS 1",
    "CREATE SEQUENCE s",
    "CREATE TYPE mood AS ENUM ('a')",
    "CREATE INDEX i ON runs (lr)",
    "DROP TABLE runs",
    "ALTER TABLE runs ADD COLUMN x INT",
    "COMMENT ON TABLE runs IS 'x'",
    # multi-statement tricks
    "BEGIN; DELETE FROM runs; COMMIT",
    "PREPARE p AS DELETE FROM runs; EXECUTE p",
    "SELECT 1; COPY runs TO 'multi.csv'",
    "SELECT 1; SET log_query_path = '{root}/scratch/multi.log'; SELECT 2",
    # copy, export, import
    "COPY runs TO '{root}/scratch/runs.csv'",
    "COPY runs TO 'leak.csv'",
    "COPY (SELECT * FROM runs) TO '{study}/tables/runs.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY (SELECT run_id, 0.0 AS val_loss FROM runs) TO '{study}/tables/runs.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY runs TO '{root}/scratch/explain.csv'",
    "EXPLAIN ANALYZE DELETE FROM runs",
    "COPY runs FROM '{root}/scratch/in.csv'",
    "EXPORT DATABASE '{root}/scratch/export'",
    "IMPORT DATABASE '{root}/scratch/export'",
    "COPY FROM DATABASE {catalog} TO memory",
    # attach, detach, reattach read-write
    "ATTACH '{root}/scratch/new.duckdb' AS n",
    "ATTACH '{other}' AS rw (READ_WRITE)",
    "ATTACH ':memory:' AS m",
    "DETACH b; ATTACH '{other}' AS b; CREATE TABLE b.t AS SELECT 1",
    "USE memory; CREATE TABLE t AS SELECT 1",
    # extensions
    "INSTALL httpfs",
    "FORCE INSTALL parquet",
    "LOAD httpfs",
    "LOAD '{root}/scratch/evil.duckdb_extension'",
    "UPDATE EXTENSIONS",
    "SELECT * FROM sqlite_scan('{root}/scratch/x.db', 't')",
    # settings, logging, profiling
    "SET log_query_path = '{root}/scratch/queries.log'",
    "PRAGMA profiling_output = '{root}/scratch/profile.txt'; PRAGMA enable_profiling; SELECT 1",
    "SET enable_profiling = 'json'; SET profiling_output = '{root}/scratch/profile.json'; SELECT 1",
    "SET profile_output = '{root}/scratch/profile.txt'",
    "PRAGMA enable_profiling = 'json'",
    "CALL enable_logging(storage = 'file', storage_path = '{root}/scratch/logs')",
    "SET enable_logging = true",
    "SET temp_directory = '{root}/scratch/tmp'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "SET disabled_filesystems = ''",
    "SET allowed_directories = ['{root}/scratch']",
    "SET memory_limit = '1MB'",
    "PRAGMA threads = 1",
    "SET secret_directory = '{root}/scratch/secrets'",
    # secrets
    "CREATE PERSISTENT SECRET s (TYPE http)",
    "CREATE SECRET s (TYPE http)",
    # maintenance
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "CALL checkpoint()",
    "VACUUM",
    "ANALYZE",
    "PRAGMA enable_checkpoint_on_shutdown",
    # read files outside the database
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_blob('{root}/results/*/runs/*/*/*/metrics.json')",
    "SELECT * FROM read_parquet('{study}/tables/runs.parquet')",
    "SELECT * FROM '{root}/scratch/in.csv'",
    "SELECT * FROM glob('{root}/**')",
]
# the ones run through `scaling sql --all` too
ALL_STATEMENTS = [s for s in STATEMENTS if any(w in s for w in (
    "COPY", "ATTACH", "USE ", "CREATE TABLE", "log_query_path", "profiling_output", "enable_logging", "RESET",
    "INSTALL", "EXTENSIONS", "PERSISTENT", "FORCE CHECKPOINT", "read_text"))]


def test_the_statement_lists_cover_enough():
    assert len(STATEMENTS) >= 50 and len(set(STATEMENTS)) == len(STATEMENTS) and len(ALL_STATEMENTS) >= 20


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A working directory with two collected studies, results/{a,b}, a scratch folder and a home folder."""
    root = tmp_path_factory.mktemp("sql")
    for name in ("a", "b"):
        study = root / "results" / name
        _, paths = make_study(study)
        C.collect(paths, study / "tables")
        D.build_database(study / "tables", study / "scaling.duckdb")
    (root / "scratch").mkdir()
    (root / "scratch" / "in.csv").write_text("run_id\nx\n")
    (root / "home").mkdir()  # HOME: where DuckDB keeps extensions and persistent secrets
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes, and every folder."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


def statement(template: str, root: Path, catalog: str = "scaling") -> str:
    """The statement for study `a` (with --all, its catalog is `a`; alone, `scaling`, as its file)."""
    return template.format(root=root, study=root / "results/a", catalog=catalog,
                           other=root / "results/b/scaling.duckdb")


def run(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run every statement of ``sql``, the last one's result fetched (as ``scaling sql`` does)."""
    rel = con.sql(sql)
    if rel is not None:
        rel.fetchall()


def scaling_sql(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling.cli", "sql", *args], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "HOME": str(root / "home")})


def assert_refused_with_one_line(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode != 0 and proc.stdout == "", proc
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("template", STATEMENTS)
def test_scaling_sql_refuses_it_with_one_line_and_writes_nothing(root, template):
    before = snapshot(root)
    proc = scaling_sql(root, "--db", "results/a/scaling.duckdb", statement(template, root))
    assert_refused_with_one_line(proc)
    assert snapshot(root) == before


@pytest.mark.slow
@pytest.mark.parametrize("template", ALL_STATEMENTS)
def test_scaling_sql_all_refuses_it_with_one_line_and_writes_nothing(root, template):
    before = snapshot(root)
    assert_refused_with_one_line(scaling_sql(root, "--all", statement(template, root, catalog="a")))
    assert snapshot(root) == before


@pytest.mark.parametrize("opener, catalog", [(lambda root: D.open_study(root / "results/a/scaling.duckdb"), "scaling"),
                                             (lambda root: D.open_all(root / "results"), "a")], ids=["study", "all"])
def test_the_engine_alone_writes_nothing_and_refuses_what_the_filter_lets_through(root, opener, catalog, monkeypatch):
    """Without the statement filter: DuckDB's own settings are what keep every byte in place."""
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(root / "home"))
    before = snapshot(root)
    for template in STATEMENTS:
        sql = statement(template, root, catalog)
        con = opener(root)
        try:
            D.check_read_only(sql)
        except D.ReadOnlyError:
            try:  # the filter refuses it; the engine may run it (a temporary table in memory), but writes nothing
                run(con, sql)
            except duckdb.Error:
                pass
        else:
            with pytest.raises(duckdb.Error):
                run(con, sql)
        con.close()
        assert snapshot(root) == before, sql


@pytest.mark.slow
def test_every_readme_query_answers_through_scaling_sql_and_all(root):
    for q in readme_queries():
        for flags in (["--db", "results/a/scaling.duckdb"], ["--all"]):
            proc = scaling_sql(root, *flags, "--csv", q)
            assert proc.returncode == 0 and proc.stderr == "" and proc.stdout, proc.stderr
    both = scaling_sql(root, "--all", "--csv", "SELECT study, count(*) AS n FROM curves GROUP BY ALL ORDER BY 1")
    assert both.stdout.splitlines()[0] == "study,n" and [r.split(",")[0] for r in both.stdout.splitlines()[1:]] == [
        "a", "b"]
