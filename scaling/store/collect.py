"""Finished runs on disk → the Parquet tables ``runs``, ``curves``, ``evals`` and ``downstream``.

A run is finished when its ``metrics.json`` exists: training writes
``curve.parquet`` and then ``metrics.json``, each atomically, so a run still in
progress has no ``metrics.json`` and a listed run without one is an error, not a
run to skip. A run file that cannot be read, or lacks a required field, fails
the collect with a :class:`RunFileError` naming the file and the fix; no run is
ever dropped silently.

Besides the ``runs`` columns it knows (see :mod:`scaling.store.schema`), every key of
``metrics.json`` becomes a column of ``runs`` (dicts and lists as JSON), except
two that become rows of their own tables:

- ``evals``: ``{val_set: loss}``, one ``evals`` row each; without it a run has
  one row, ``val_set = 'val'`` with its ``val_loss``;
- ``downstream``: ``{task: accuracy}``, one ``downstream`` row each.

A run's ``downstream.json`` (written by the evaluate stage beside its
metrics.json) adds one ``downstream`` row per task and per task set.

Never without tables. The tables are written only once every run has been read,
all of them to temporary files first and then renamed into place, so a failed
collect leaves the previous tables as they were. Then comes the manifest,
``<tables>/collect.json`` (each table's file and rows, and the collect's id, which
every table also carries in its metadata): it is what the workflow declares as
collect's output, not the tables, because Snakemake deletes a job's outputs
before it runs the job and again when the job fails.

Incremental. ``runs.parquet`` records in its metadata the size and modification
time of every run's files; the next collect parses only runs that are new or
whose files changed, and takes every other run's rows from the previous
tables. Previous tables that are missing, unreadable or torn (written by
different collects) are ignored, and every run is parsed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaling.io import RunFileError, atomic_path, read_metrics, retrain_hint, write_json
from scaling.store import schema
from scaling.train import ladder

RUN_TABLES = ("runs", "curves", "evals", "downstream")
MANIFEST = "collect.json"
COLLECT_ID_KEY = "scaling.collect_id"
FINGERPRINTS_KEY = "scaling.collect_fingerprints"
# read curves' run_id as a dictionary (one entry per run), as collect builds it: 2M strings cost more
DICTIONARY_IDS = {"curves": {"read_dictionary": ["run_id"]}}
# the metrics.json fields a run cannot be collected without (the required `runs` columns)
REQUIRED_METRICS = {c.name: c.nullable for c in schema.columns("runs") if c.required and c.default is None}


@lru_cache(maxsize=None)
def git_commit(checkout: Path = Path(__file__).resolve().parent) -> str:
    """The commit of the git checkout holding ``checkout`` (by default the ``scaling`` package's own),
    with ``-dirty`` if it has local edits; ``unknown`` outside a git checkout or without git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"],
                             cwd=checkout, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


@lru_cache(maxsize=1)
def scaling_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scaling")
    except PackageNotFoundError:
        return "unknown"


def fingerprint(metrics_path: Path) -> list[int]:
    """Size and mtime (ns) of a run's metrics.json and curve.parquet (they change when the run is retrained),
    and of its downstream.json, when it has one (it changes when the run is re-evaluated)."""
    try:
        scores = metrics_path.with_name("downstream.json").stat()
        out = [scores.st_size, scores.st_mtime_ns]
    except FileNotFoundError:
        out = []
    for path in (metrics_path, metrics_path.with_name("curve.parquet")):
        try:
            st = path.stat()
        except FileNotFoundError:
            raise RunFileError(
                f"{path}: missing, so the run is not finished (training writes curve.parquet, then metrics.json); "
                f"fix: rerun snakemake to train it, or leave it out of the study"
            ) from None
        out += [st.st_size, st.st_mtime_ns]
    return out


@dataclass
class RunRows:
    """One run's rows for each table."""

    record: dict
    curve: pa.Table
    evals: list[dict]
    downstream: list[dict]


def _flat(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def read_run(metrics_path: str | Path) -> RunRows:
    """A finished run's rows; raises :class:`RunFileError` naming the file if it is unreadable or incomplete."""
    metrics_path = Path(metrics_path)
    run_dir, curve_path = metrics_path.parent, metrics_path.with_name("curve.parquet")
    metrics = read_metrics(metrics_path, REQUIRED_METRICS)
    try:
        curve = pq.read_table(curve_path)
    except (OSError, pa.ArrowException) as e:
        raise RunFileError(f"{curve_path}: unreadable ({e}); {retrain_hint(run_dir)}") from None
    missing = [c.name for c in schema.columns("curves") if c.required and c.name != "run_id"
               and c.name not in curve.column_names]
    if missing:
        raise RunFileError(f"{curve_path}: lacks the column(s) {missing}; {retrain_hint(run_dir)}")
    run_id = metrics["run_id"]
    # one dictionary entry per run: cheap to build, and Parquet stores it as a dictionary anyway
    ids = pa.DictionaryArray.from_arrays(pa.array(np.zeros(curve.num_rows, np.int32)), pa.array([run_id]))
    curve = curve.drop_columns([c for c in ("run_id",) if c in curve.column_names]).add_column(0, "run_id", ids)
    curve = curve.replace_schema_metadata(None)

    evals = metrics.pop("evals", None) or {"val": metrics["val_loss"]}
    downstream = [{"run_id": run_id, "task": k, "accuracy": v} for k, v in (metrics.pop("downstream", None) or {}).items()]
    downstream += _scores(metrics_path.with_name("downstream.json"), run_id)
    record = {k: _flat(v) for k, v in metrics.items()}
    record.setdefault("git_commit", git_commit())
    record.setdefault("scaling_version", scaling_version())
    record["source"] = str(run_dir)
    return RunRows(
        record, curve,
        [{"run_id": run_id, "val_set": k, "loss": v} for k, v in evals.items()],
        downstream,
    )


def _scores(path: Path, run_id: str) -> list[dict]:
    """The ``downstream`` rows of a run's downstream.json (see :func:`scaling.evaluate.scoring.evaluate_run`), if any."""
    if not path.exists():
        return []
    try:
        scores = json.loads(path.read_text())
        rows = [{"run_id": run_id, "task": k, "kind": "task", **v} for k, v in scores["tasks"].items()]
        rows += [{"run_id": run_id, "task": k, "kind": "average", "accuracy": v["accuracy"],
                  "random_baseline_accuracy": v["random_baseline_accuracy"]} for k, v in scores["task_sets"].items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunFileError(f"{path}: unreadable ({e!r}); fix: delete it and rerun snakemake to re-evaluate the run") \
            from None
    return rows


@dataclass
class Collected:
    """What a collect did: the tables it wrote, how many runs it parsed, how many it took from the cache."""

    tables: dict[str, pa.Table]
    parsed: int
    cached: int


def _concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts, promote_options="permissive")


def _load_previous(out: Path) -> tuple[dict[str, pa.Table], dict[str, list[int]]] | None:
    """The previous collect's tables and run fingerprints, or None if there are no consistent ones."""
    try:
        meta = {t: pq.read_schema(out / f"{t}.parquet").metadata or {} for t in RUN_TABLES}
        if len({m.get(COLLECT_ID_KEY.encode()) for m in meta.values()} - {None}) != 1:
            return None
        fingerprints = json.loads(meta["runs"][FINGERPRINTS_KEY.encode()])
        tables = {t: schema.read_table(out / f"{t}.parquet", t, **DICTIONARY_IDS.get(t, {})) for t in RUN_TABLES}
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return tables, fingerprints


def _runs_table(records: list[dict], paths: list[Path]) -> pa.Table:
    try:
        return schema.conform("runs", pd.DataFrame.from_records(records))
    except (schema.SchemaError, pa.ArrowException) as e:  # find the run at fault, to name its file
        for record, path in zip(records, paths):
            try:
                schema.conform("runs", pd.DataFrame.from_records([record]), str(path))
            except (schema.SchemaError, pa.ArrowException) as bad:
                raise RunFileError(f"{bad}; {retrain_hint(path.parent)}") from None
        raise RunFileError(f"the runs' metrics.json files disagree on the type of a field ({e}); "
                           f"fix: give that field one type in every run's metrics.json") from None


def with_flops_spent(runs: pa.Table) -> pa.Table:
    """``runs`` with ``flops_spent``: each run's ``flops``, scaled on a ladder by the steps spent on it (its share of
    its trunk, among the trunk's runs in the table, and its cooldown: :func:`scaling.train.ladder.spent_steps`)
    over its steps. Derived from the whole table, since a run's share of its trunk depends on the trunk's others."""
    df = runs.select(["trunk", "steps", "branch_step", "flops"]).to_pandas()
    spent = df["flops"].to_numpy(dtype=float, copy=True)
    for _, g in df.dropna(subset=["trunk"]).groupby("trunk"):
        steps = g["steps"].to_numpy(dtype=float)
        spent[g.index] *= np.array(ladder.spent_steps(steps, g["branch_step"].to_numpy(dtype=float))) / steps
    return runs.set_column(runs.column_names.index("flops_spent"), "flops_spent", pa.array(spent, pa.float64()))


def collect(metrics_paths: list[str | Path], out_dir: str | Path, use_cache: bool = True,
            workers: int | None = None) -> Collected:
    """Write the run tables for exactly the given runs into ``out_dir``, then its manifest ``collect.json``.

    With ``use_cache`` (the default) only runs the previous collect lacks, or whose files changed, are
    parsed; the others' rows come from the previous tables. Without it every run is parsed.
    """
    out = Path(out_dir)
    paths = [Path(p) for p in metrics_paths]
    fingerprints = {str(p.parent): fingerprint(p) for p in paths}
    if len(fingerprints) != len(paths):
        raise RunFileError("the same run directory is listed twice; fix: list each run's metrics.json once")

    cached = _load_previous(out) if use_cache else None
    old_tables, old_fps = cached if cached else ({}, {})
    keep = {src for src, fp in fingerprints.items() if old_fps.get(src) == fp}
    todo = [p for p in paths if str(p.parent) not in keep]
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        new = list(pool.map(read_run, todo))

    parts: dict[str, list[pa.Table]] = {t: [] for t in RUN_TABLES}
    if keep and keep == set(old_fps):  # the usual case, runs only added: every cached row stays
        for t in RUN_TABLES:
            parts[t].append(old_tables[t])
    elif keep:
        runs = old_tables["runs"]
        runs = runs.filter(pc.is_in(runs["source"], pa.array(sorted(keep))))
        kept_ids = runs["run_id"].combine_chunks()
        parts["runs"].append(runs)
        for t in RUN_TABLES[1:]:
            old = old_tables[t]
            parts[t].append(old.filter(pc.is_in(old["run_id"], kept_ids)))
    if new:
        parts["runs"].append(_runs_table([r.record for r in new], todo))
        parts["curves"].append(schema.conform("curves", _concat([r.curve for r in new])))
        parts["evals"].append(schema.conform("evals", pd.DataFrame([e for r in new for e in r.evals])))
        if any(r.downstream for r in new):
            rows = [d for r in new for d in r.downstream]
            parts["downstream"].append(schema.conform("downstream", pd.DataFrame(rows)))

    tables = {t: _concat(p) if p else schema.empty(t) for t, p in parts.items()}
    tables["runs"] = with_flops_spent(tables["runs"].sort_by("run_id"))
    dupes = sorted(i for i, n in Counter(tables["runs"]["run_id"].to_pylist()).items() if n > 1)
    if dupes:
        raise RunFileError(f"run_id {dupes[0]!r} appears in more than one run directory; "
                           f"fix: remove the copy that does not belong to the study")

    collect_id = uuid.uuid4().hex
    meta = {COLLECT_ID_KEY: collect_id}
    with ExitStack() as renames:  # every table to a temporary file; renamed into place once all are written
        tmp = {t: renames.enter_context(atomic_path(out / f"{t}.parquet")) for t in RUN_TABLES}  # runs renamed last
        for t in RUN_TABLES:
            extra = {FINGERPRINTS_KEY: json.dumps(fingerprints, sort_keys=True)} if t == "runs" else {}
            tables[t] = schema.write_table(tmp[t], t, tables[t], {**meta, **extra})
    write_json(out / MANIFEST, {"collect_id": collect_id, "tables": {
        t: {"file": f"{t}.parquet", "rows": tables[t].num_rows} for t in RUN_TABLES}})
    shutil.rmtree(out / ".collect-cache", ignore_errors=True)  # the cache of earlier versions: now the tables are it
    return Collected(tables, parsed=len(new), cached=len(keep))
