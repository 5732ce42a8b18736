"""The results store inside the real pipeline: the smoke study's tables, incremental collect, status."""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import SMOKE, planned, smoke_config, snakemake
from scaling.store import collect as C
from scaling.store import database as D

pytestmark = pytest.mark.workflow

RESULTS = "results/smoke"


def test_the_smoke_study_fills_every_table(finished_smoke):
    con = D.open_study(finished_smoke / RESULTS / "scaling.duckdb")
    evals = con.execute("SELECT count(*) FROM evals e JOIN runs r USING (run_id) "
                        "WHERE e.val_set = 'val' AND e.loss = r.val_loss").fetchone()[0]
    assert evals == con.execute("SELECT count(*) FROM runs").fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM downstream").fetchone()[0] == 6 * 3  # 2 tasks + their set
    commits = {c for (c,) in con.execute("SELECT DISTINCT git_commit FROM runs").fetchall()}
    assert len(commits) == 1 and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commits.pop())
    assert con.execute("SELECT count(*) FROM runs WHERE source LIKE 'results/smoke/runs/%'").fetchone()[0] == 6
    log = (finished_smoke / RESULTS / "logs" / "collect.log").read_text()
    assert "6 read from their files, 0 from the previous collect" in log


def test_a_new_run_is_the_only_one_collect_reads(smoke_copy):
    config = smoke_config()
    config["grid"].append({"sizes": ["xs"], "token_multipliers": [20], "learning_rates": [0.02]})
    snakemake(smoke_copy, config, "--cores", "2")
    log = (smoke_copy / RESULTS / "logs" / "collect.log").read_text()
    assert "collected 7 runs" in log and "1 read from their files, 6 from the previous collect" in log
    con = D.open_study(smoke_copy / RESULTS / "scaling.duckdb")
    assert con.execute("SELECT count(DISTINCT run_id) FROM curves").fetchone()[0] == 7
    status = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile",
                             str(smoke_copy / "study.yaml")], cwd=smoke_copy, capture_output=True, text=True)
    assert "7 runs planned; 7 done, 0 running, 0 failed, 0 diverged, 0 stale, 0 not started" in status.stdout


def test_status_of_the_finished_smoke_study(finished_smoke):
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "--configfile", str(SMOKE)],
                          cwd=finished_smoke, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "6 runs planned; 6 done" in proc.stdout and ", 0 left" in proc.stdout


def test_a_failed_collect_keeps_the_tables_and_the_run_after_the_fix_rebuilds_everything(smoke_copy, tmp_path):
    config, results = smoke_config(), smoke_copy / RESULTS
    tables = results / "tables"
    run_tables = {t: tables / f"{t}.parquet" for t in C.RUN_TABLES}
    before = {t: p.read_bytes() for t, p in run_tables.items()}
    curve = results / "runs/bible/xs/M20_lr0.01_s0/curve.parquet"
    subprocess.run(["cp", "-a", curve, tmp_path / "curve.parquet"], check=True)
    curve.write_bytes(curve.read_bytes()[: curve.stat().st_size // 2])  # truncated

    failed = snakemake(smoke_copy, config, "--cores", "2", check=False)
    assert failed.returncode != 0
    log = (results / "logs" / "collect.log").read_text()
    assert f"{RESULTS}/runs/bible/xs/M20_lr0.01_s0/curve.parquet: unreadable" in log and "fix:" in log
    assert {t: p.read_bytes() for t, p in run_tables.items()} == before  # the previous tables, byte for byte
    assert not (tables / C.MANIFEST).exists()  # Snakemake removed the failed job's output, the manifest

    subprocess.run(["cp", "-a", tmp_path / "curve.parquet", curve], check=True)  # restored, with its old mtime
    downstream = [results / "scaling.duckdb", results / "summary.md", results / "fit" / "overtraining.json"]
    built = {p: p.stat().st_mtime_ns for p in downstream}
    jobs = planned(smoke_copy, config)
    assert {"collect", "fit", "database", "report"} <= set(jobs) and "train" not in jobs
    snakemake(smoke_copy, config, "--cores", "2")
    assert "6 from the previous collect" in (results / "logs" / "collect.log").read_text()  # the cache still serves
    manifest = (tables / C.MANIFEST).read_text()
    for p in run_tables.values():  # rebuilt: every table carries the new collect's id
        assert pq.read_schema(p).metadata[C.COLLECT_ID_KEY.encode()].decode() in manifest
    assert all(p.stat().st_mtime_ns > built[p] for p in downstream)
    assert planned(smoke_copy, config) == {}
