"""Published testbeds → the results store, as a study of their own (``results/<name>/``).

An imported study has the same tables and database as a trained one, so
``scaling sql`` and ``scaling fit`` work on it unchanged; its ``curves`` table is
empty (testbeds publish final losses, not training curves) and ``runs.source``
is ``import:<name>``.

:func:`import_csv` is the generic importer: a CSV with one row per run, or per
run × validation set, and a mapping from the schema's column names to the
CSV's. Columns it does not map are carried along: into ``runs`` when constant
within each run, into ``evals`` when they vary across a run's validation sets.
:func:`import_gadre2024` is :func:`import_csv` with the mapping of the Gadre et
al. (2024) testbed shipped in ``scaling/testbeds/datasets/gadre2024/``.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import pandas as pd

from scaling.store import schema
from scaling.store.database import build_database
from scaling.study.runs import run_id
from scaling.train.flops import flops_6nd, planned_tokens

GADRE2024 = {
    "mapping": {"run_id": "run_name", "size": "model", "n_params_nonembed": "n_params_no_embed",
                "flops": "flops_6ND", "val_loss": "loss"},
    "val_set_column": "val_set",
    "val_set": "c4_val",  # the paper's default validation set
}


class TestbedError(ValueError):
    """A CSV that cannot be imported; the message says which column to map."""


def _run_ids(df: pd.DataFrame) -> pd.Series:
    def one(r) -> str:
        lr, seed = (r[k] if k in r and pd.notna(r[k]) else None for k in ("lr", "seed"))
        return run_id(r["dataset"], r["size"], r["token_multiplier"], lr, seed)

    return df.apply(one, axis=1)


def runs_from_csv(df: pd.DataFrame, mapping: dict[str, str], constants: dict | None = None,
                  val_set_column: str | None = None, val_set: str | None = None,
                  source: str = "import") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``runs`` and ``evals`` rows of a testbed's CSV (see the module docstring)."""
    missing = sorted(set(mapping.values()) - set(df.columns))
    if missing:
        raise TestbedError(f"--map names CSV column(s) {missing} that do not exist; the CSV has {list(df.columns)}")
    df = df.rename(columns={v: k for k, v in mapping.items()})
    for k, v in (constants or {}).items():
        df[k] = v
    df["status"] = df["status"] if "status" in df else "ok"
    if "tokens" not in df and {"n_params", "token_multiplier"} <= set(df.columns):
        df["tokens"] = planned_tokens(df["n_params"], df["token_multiplier"]).astype("int64")
    if "token_multiplier" not in df and {"n_params", "tokens"} <= set(df.columns):
        df["token_multiplier"] = df["tokens"] / df["n_params"]
    if "flops" not in df and {"n_params", "tokens"} <= set(df.columns):
        df["flops"] = flops_6nd(df["n_params"], df["tokens"])
    needed = [c.name for c in schema.columns("runs") if c.required and c.default is None and c.name != "run_id"]
    absent = [c for c in needed if c not in df]
    if absent:
        raise TestbedError(f"no column for {absent}; fix: map each with --map {absent[0]}=<CSV column> "
                           f"(or set a constant with --set {absent[0]}=<value>)")
    if "run_id" not in df:
        df["run_id"] = _run_ids(df)

    if val_set_column:
        if val_set_column not in df:
            raise TestbedError(f"--val-set-column {val_set_column!r} is not a column of the CSV")
        df = df.rename(columns={val_set_column: "val_set"})
        # columns that vary across a run's validation sets belong to evals, the rest to runs
        varying = [c for c in df.columns if c not in ("run_id", "val_set", "val_loss")
                   and df.groupby("run_id")[c].nunique(dropna=False).max() > 1]
        primary = df[df["val_set"] == val_set]
        lacking = sorted(set(df["run_id"]) - set(primary["run_id"]))
        if lacking:
            raise TestbedError(f"run(s) {lacking[:3]} have no row with {val_set_column} = {val_set!r}; "
                               f"fix: choose a --val-set every run has")
        runs = primary.drop(columns=["val_set", *varying])
        evals = df[["run_id", "val_set", "val_loss", *varying]].rename(columns={"val_loss": "loss"})
    else:
        runs = df
        evals = pd.DataFrame({"run_id": df["run_id"], "val_set": val_set or "val", "loss": df["val_loss"]})
    dupes = runs["run_id"][runs["run_id"].duplicated()]
    if len(dupes):
        raise TestbedError(f"run_id {dupes.iloc[0]!r} appears in more than one row; fix: map run_id to a column "
                           f"that names each run once" + (", or give --val-set-column" if not val_set_column else ""))
    runs = runs.assign(source=f"import:{source}").sort_values("run_id")
    return runs.reset_index(drop=True), evals.reset_index(drop=True)


def downstream_from_csv(df: pd.DataFrame, mapping: dict[str, str], run_columns: list[str]) -> pd.DataFrame:
    """A downstream CSV (one row per run × task) without the run-level columns it repeats."""
    df = df.rename(columns={v: k for k, v in mapping.items() if v in df.columns})
    return df.drop(columns=[c for c in run_columns if c in df.columns and c != "run_id"])


def import_csv(csv_path: str | Path, study: str, results: str | Path = "results", mapping: dict[str, str] | None = None,
               constants: dict | None = None, val_set_column: str | None = None, val_set: str | None = None,
               downstream_path: str | Path | None = None) -> dict[str, int]:
    """Import a testbed CSV as ``<results>/<study>/``: the tables and the database. Returns rows per table."""
    mapping = mapping or {}
    raw = pd.read_csv(csv_path)
    try:
        runs, evals = runs_from_csv(raw, mapping, constants, val_set_column, val_set, source=study)
        tables = {"runs": runs, "evals": evals}
        if downstream_path:
            tables["downstream"] = downstream_from_csv(pd.read_csv(downstream_path), mapping,
                                                       [*raw.columns, *mapping])
        out = Path(results) / study
        for name in schema.TABLES:
            if name not in ("fits", "parameters", "predictions"):
                schema.write_table(out / "tables" / f"{name}.parquet", name, tables.get(name, schema.empty(name)))
    except schema.SchemaError as e:
        raise TestbedError(f"{csv_path}: {e}; fix: map the right CSV column with --map") from None
    return build_database(out / "tables", out / "scaling.duckdb")


def import_gadre2024(results: str | Path = "results", study: str = "gadre2024") -> dict[str, int]:
    """The Gadre et al. (2024) over-training testbed (MIT), with its LICENSE and README beside the tables."""
    src = files("scaling.testbeds") / "datasets" / "gadre2024"
    rows = import_csv(src / "models.csv", study, results, downstream_path=src / "downstream.csv", **GADRE2024)
    for name in ("LICENSE", "README.md"):
        shutil.copyfile(src / name, Path(results) / study / name)
    return rows
