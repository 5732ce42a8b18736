"""Runs on disk → Parquet tables → one DuckDB database.

Tables (each a Parquet file under ``results/<study>/tables/``):

- ``runs``: one row per run — grid coordinates (dataset, size, token_multiplier,
  lr, seed), shape, n_params, n_params_nonembed, tokens, flops, final losses,
  status, wall time, tokens/s, host and versions;
- ``curves``: one row per run × step (run_id, step, tokens, lr, train_loss);
- ``fits`` and ``predictions``: written by the fit stage.

``results/<study>/scaling.duckdb`` holds a copy of every table, so the file is
self-contained and can be moved or shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd

from scaling.io import atomic_path, read_json, write_parquet

TABLES = ("runs", "curves", "fits", "predictions")


def read_run(metrics_path: str | Path) -> tuple[dict, pd.DataFrame]:
    """A finished run's metrics and curve; a missing or corrupt file raises naming it."""
    metrics_path = Path(metrics_path)
    curve_path = metrics_path.with_name("curve.parquet")
    try:
        metrics = read_json(metrics_path)
        curve = pd.read_parquet(curve_path)
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"cannot read run {metrics_path.parent}: {e}; "
            f"fix: delete that directory and rerun snakemake to retrain the run"
        ) from e
    metrics["training"] = json.dumps(metrics["training"], sort_keys=True)
    curve.insert(0, "run_id", metrics["run_id"])
    return metrics, curve


def collect(metrics_paths: list[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Write ``runs.parquet`` and ``curves.parquet`` for the given runs; return the runs table."""
    records, curves = zip(*(read_run(p) for p in metrics_paths)) if metrics_paths else ((), ())
    runs = pd.DataFrame(list(records))
    out = Path(out_dir)
    write_parquet(out / "runs.parquet", runs)
    write_parquet(out / "curves.parquet", pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())
    return runs


def build_database(tables_dir: str | Path, db_path: str | Path) -> None:
    """Copy every table in ``tables_dir`` into a new DuckDB file, replacing ``db_path`` atomically."""
    tables_dir = Path(tables_dir)
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # DuckDB creates the file itself
        con = duckdb.connect(str(tmp))
        for name in TABLES:
            path = tables_dir / f"{name}.parquet"
            if path.exists():
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet(?)", [str(path)])
        con.close()
