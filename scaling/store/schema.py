"""The results store's tables: their documented columns, the schema version, and migrations.

Every table is a Parquet file ``results/<study>/tables/<table>.parquet`` and a
table of the same name in ``results/<study>/scaling.duckdb``:

- ``runs``: one row per finished run;
- ``curves``: one row per run × logged training step;
- ``evals``: one row per run × validation set;
- ``downstream``: one row per run × downstream task (empty when there are none);
- ``fits``: one row per fitted law;
- ``parameters``: one row per fitted law × parameter;
- ``predictions``: one row per point a fitted law predicts;
- ``backtest``: per law and dataset, how its predictions fared on the points it was not fitted on.

Each table has *core* columns, listed below with their Arrow type, unit and
meaning. A writer may add columns: they are carried through after the core
columns, unchanged. A *required* core column must be present (a *key* column
also never null); an optional one that a writer leaves out is filled with its
default (null unless stated).

Versioning. Parquet files written by :func:`write_table` carry
``scaling.schema_version`` in their key-value metadata; a file without it is
version 0 (the layout before versioning, or a producer that writes plain
Parquet). :func:`read_table` migrates older versions step by step with
:data:`MIGRATIONS` and refuses newer ones. To change the schema: bump
:data:`SCHEMA_VERSION`, add ``MIGRATIONS[old]`` that turns a table at version
``old`` into one at ``old + 1``, and update the README's column tables. A new optional core column
needs no new version: :func:`conform` fills it in (null) for the files that lack it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.io import atomic_path

SCHEMA_VERSION = 4
VERSION_KEY = b"scaling.schema_version"
TABLE_KEY = b"scaling.table"


class SchemaError(ValueError):
    """A table that does not fit its schema; the message names the table, the column and the source."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    unit: str = ""
    required: bool = False
    nullable: bool = True
    default: object = None


def _cols(*specs) -> tuple[Column, ...]:
    return tuple(Column(*s[:4], **(s[4] if len(s) > 4 else {})) for s in specs)


REQ = {"required": True, "nullable": False}  # must be present, never null
PRESENT = {"required": True}  # must be present, may be null
STR, I64, F64 = pa.string(), pa.int64(), pa.float64()

TABLES: dict[str, tuple[str, tuple[Column, ...]]] = {
    "runs": ("one row per finished run", _cols(
        ("run_id", STR, "`<dataset>/<size>/M<M>_lr<lr>_s<seed>` for a trained run, the testbed's name for an "
                        "imported one", "", REQ),
        ("dataset", STR, "training corpus (a key of the study's `datasets`)", "", REQ),
        ("size", STR, "model name", "", REQ),
        ("token_multiplier", F64, "M = D/N", "tokens per parameter", REQ),
        ("lr", F64, "peak learning rate"),
        ("seed", I64, "random seed (null when a testbed does not give it)"),
        ("d_model", I64, "width"),
        ("n_layers", I64, "transformer blocks"),
        ("n_heads", I64, "attention heads"),
        ("ff_ratio", F64, "MLP width / d_model"),
        ("vocab_size", I64, "vocabulary size", "tokens"),
        ("seq_len", I64, "context length", "tokens"),
        ("n_params", I64, "N, all parameters including embeddings", "parameters", REQ),
        ("n_params_nonembed", I64, "parameters without the token and position embeddings", "parameters"),
        ("tokens", I64, "D = M·N rounded to a whole token, the planned training tokens", "tokens", REQ),
        ("tokens_seen", I64, "tokens actually trained on (fewer than `tokens` if the run diverged)", "tokens"),
        ("epochs", F64, "tokens_seen / size of the training split", "epochs"),
        ("steps", I64, "planned optimizer steps", "steps"),
        ("flops", F64, "C, training compute of the planned run (6·N·D)", "FLOPs", REQ),
        ("flops_spent", F64, "compute the study actually spent on the run: `flops`, or on a ladder its share of "
         "its trunk plus its cooldown, `flops` × spent steps / `steps` (scaling/train/ladder.py)", "FLOPs"),
        ("trunk", STR, "on a ladder, the trunk the run branched from (`<dataset>/<size>/trunk_lr<lr>_s<seed>`), "
         "else null"),
        ("branch_step", I64, "on a ladder, the step the run's cooldown branched from its trunk at, else null",
         "steps"),
        ("initial_loss", F64, "training loss at the first step", "nats/token"),
        ("final_train_loss", F64, "mean training loss over the last 1% of steps", "nats/token"),
        ("val_loss", F64, "validation loss at the end of training (null if diverged); the loss fits use",
         "nats/token", PRESENT),
        ("status", STR, "`ok` or `diverged`", "", REQ),
        ("diverged_step", I64, "step at which the run was stopped as diverged, else null", "steps"),
        ("wall_s", F64, "wall-clock time of the training job (on a ladder, the run's cooldown)", "s"),
        ("trunk_wall_s", F64, "on a ladder, the wall-clock time of the trunk's segment jobs up to the run's branch "
         "step (a trunk's time is its runs' largest), else null", "s"),
        ("tokens_per_s", F64, "training throughput: the tokens the run's own job trained (on a ladder, its cooldown's) / "
         "its training loop's time (`train_s`, without start-up, the final evaluation and writing the outputs)", "tokens/s"),
        ("device", STR, "`cpu` or `cuda`"),
        ("threads", I64, "CPU threads the run used"),
        ("host", STR, "machine the run trained on"),
        ("torch", STR, "PyTorch version"),
        ("python", STR, "Python version"),
        ("training", STR, "the run's `training` settings (the study's, with its size's own `batch_tokens`), as JSON"),
        ("spec_digest", STR, "SHA-256 of the spec the run trained on (`scaling.io.spec_digest`): `scaling status` "
                             "calls a finished run stale when the study's spec of it differs; null for a run trained "
                             "before it was kept"),
        ("git_commit", STR, "commit of the scaling project's checkout (`-dirty` if it had local edits) when the run "
                            "was trained, or else first collected; `unknown` outside a git checkout",
         "", {"default": "unknown"}),
        ("scaling_version", STR, "version of the scaling package that collected the run",
         "", {"default": "unknown"}),
        ("source", STR, "where the row came from: the run's directory, or `import:<testbed>`"),
    )),
    "curves": ("one row per run × logged training step", _cols(
        ("run_id", STR, "the run (joins `runs.run_id`)", "", REQ),
        ("step", I64, "optimizer step, from 1", "steps", REQ),
        ("tokens", I64, "tokens trained on up to and including this step", "tokens", REQ),
        ("lr", F64, "learning rate at this step"),
        ("train_loss", F64, "training loss of this step's batch (null if not finite)", "nats/token", PRESENT),
        ("val_loss", F64, "validation loss after this step, every `training.eval_every` steps (else null)",
         "nats/token"),
    )),
    "evals": ("one row per run × validation set", _cols(
        ("run_id", STR, "the run (joins `runs.run_id`)", "", REQ),
        ("val_set", STR, "validation set; `val` is the held-out split of the run's own dataset", "", REQ),
        ("loss", F64, "mean next-token loss on it (null if the run diverged)", "nats/token", PRESENT),
        ("val_tokens", I64, "size of the validation set (null when unknown)", "tokens"),
    )),
    "downstream": ("one row per run × downstream task", _cols(
        ("run_id", STR, "the run (joins `runs.run_id`)", "", REQ),
        ("task", STR, "task id, e.g. `hellaswag`, or the name of a task set whose mean this row is", "", REQ),
        ("accuracy", F64, "top-1 accuracy (the task's headline metric; for a task set, the mean over its tasks)",
         "fraction", REQ),
        ("random_baseline_accuracy", F64, "accuracy of random guessing on the task", "fraction"),
        ("kind", STR, "`task`, or `average` for the unweighted mean over a task set"),
        ("metric", STR, "which accuracy is the headline: `acc` (raw log-likelihood) or `acc_norm` (per byte)"),
        ("accuracy_raw", F64, "top-1 accuracy choosing the highest log-likelihood (lm-evaluation-harness `acc`)",
         "fraction"),
        ("accuracy_norm", F64, "top-1 accuracy choosing the highest log-likelihood per byte of the choice (`acc_norm`)",
         "fraction"),
        ("n_examples", I64, "examples scored"),
    )),
    "fits": ("one row per fitted law", _cols(
        ("law", STR, "the law, e.g. `overtraining`", "", REQ),
        ("dataset", STR, "the dataset fitted", "", REQ),
        ("task", STR, "(downstream law) the task or task set whose average top-1 error is fitted"),
        ("formula", STR, "the law as a formula; its parameters are in the `parameters` table"),
        ("n_points", I64, "points in the fit set"),
        ("method", STR, "fitting method: `huber-log` (default), `bounded` or `gadre` (the paper's)"),
        ("objective", F64, "the method's objective at the optimum (Huber loss of log residuals, or squared error)"),
        ("level", F64, "the level of the parameters' and predictions' intervals", "fraction"),
        ("fit_on", STR, "the fit-set filters, as JSON"),
        ("at_bound", STR, "the parameters that ended on the bound of their physical range, as a JSON list"),
        ("calibrated", pa.bool_(), "whether the prediction intervals are calibrated on runs the law was not fitted "
         "on (else they are the bootstrap's, which assume the law is right)"),
        ("calibration", STR, "the error model of the calibration, as JSON: s0 (error inside the fit set's range), "
         "kappa_up/kappa_down (growth per decade beyond it), noise, n_scores, sources"),
        ("diagnostics", STR, "what is wrong with the fit and which runs would fix it, as a JSON list of sentences"),
    )),
    "parameters": ("one row per fitted law × parameter", _cols(
        ("law", STR, "the law (joins `fits.law`)", "", REQ),
        ("dataset", STR, "the dataset (joins `fits.dataset`)", "", REQ),
        ("task", STR, "(downstream law) the task or task set (joins `fits.task`)"),
        ("parameter", STR, "the parameter's name in the law's formula (`fits.formula`): `E` (nats/token), `a`, `b`, "
         "`c` of the over-training law; `epsilon`, `k` (fractions), `gamma` (1/(nats/token)) of the downstream law; "
         "`c`, `a`, `b` of the optimal-LR law", "", REQ),
        ("value", F64, "the fitted value", "", PRESENT),
        ("stderr", F64, "its standard error (bootstrap, or OLS; null without either)"),
        ("lo", F64, "lower end of its interval at the fit's `level` (bootstrap percentiles, or Student-t)"),
        ("hi", F64, "upper end of that interval"),
    )),
    "predictions": ("one row per point a fitted law predicts", _cols(
        ("law", STR, "the law (joins `fits.law`)", "", REQ),
        ("dataset", STR, "the dataset (joins `fits.dataset`)", "", REQ),
        ("size", STR, "model name (null for a target given by n_params)"),
        ("n_params", I64, "N", "parameters", REQ),
        ("token_multiplier", F64, "M", "tokens per parameter", REQ),
        ("lr", F64, "the best learning rate of the point (null for a target)"),
        ("role", STR, "`fit` (in the fit set), `held_out` (measured, not fitted on), `target` (asked for) or `test` "
         "(a backtest's point beyond its cut)", "", REQ),
        ("measured_loss", F64, "best-LR validation loss, seeds averaged (null when not trained)", "nats/token"),
        ("predicted_loss", F64, "the law's prediction", "nats/token", PRESENT),
        ("rel_error", F64, "relative error of the prediction: predicted / measured − 1"),
        ("tokens", F64, "D, the point's training tokens (a target's: M·N rounded to a whole token)", "tokens"),
        ("flops", F64, "C = 6·N·D", "FLOPs"),
        ("predicted_loss_lo", F64, "lower end of the interval of a new run's loss", "nats/token"),
        ("predicted_loss_hi", F64, "upper end of the interval of a new run's loss", "nats/token"),
        ("covered", pa.bool_(), "whether the new-run interval covers the measured loss (null when not measured)"),
        ("predicted_loss_law_lo", F64, "lower end of the law's interval (where the mean of many seeds would land)",
         "nats/token"),
        ("predicted_loss_law_hi", F64, "upper end of the law's interval", "nats/token"),
        ("half_width", F64, "half the new-run interval of the loss, relative to the prediction", "fraction"),
        ("calibrated", pa.bool_(), "whether the loss intervals are calibrated on runs the law was not fitted on"),
        ("compute_ratio", F64, "C over the largest C of the fit set: how far the prediction extrapolates in compute"),
        ("extrapolation_up", F64, "distance beyond the fit set's inputs towards larger N, M or D (log10 space)",
         "decades"),
        ("extrapolation_down", F64, "distance beyond the fit set's inputs towards smaller ones", "decades"),
        ("task", STR, "(downstream law) the task or task set whose average top-1 error is predicted"),
        ("measured_error", F64, "(downstream law) measured top-1 error, 1 − accuracy", "fraction"),
        ("predicted_error", F64, "(downstream law) Err(L̂): the error law at the predicted loss", "fraction"),
        ("predicted_error_lo", F64, "(downstream law) lower end of its prediction interval", "fraction"),
        ("predicted_error_hi", F64, "(downstream law) upper end of its prediction interval", "fraction"),
        ("error_covered", pa.bool_(), "(downstream law) whether that interval covers the measured error"),
        ("error_rel_error", F64, "(downstream law) predicted / measured − 1 of the error"),
        ("error_role", STR, "(downstream law) the point's role for the error law, whose fit set may be wider "
         "than the loss law's (`fit` there)"),
        ("error_half_width", F64, "(downstream law) half the error's new-run interval, relative to the prediction",
         "fraction"),
        ("error_at_measured_loss", F64, "(downstream law) Err(L): the error law at the measured loss", "fraction"),
        ("measured_lr", F64, "(optimal-LR law) the best learning rate of the sweep at the point"),
        ("predicted_lr", F64, "(optimal-LR law) η*(N, D)"),
    )),
    "backtest": ("per law and dataset: how its predictions fared on the points it was not fitted on", _cols(
        ("law", STR, "the law (joins `fits.law`)", "", REQ),
        ("dataset", STR, "the dataset (joins `fits.dataset`)", "", REQ),
        ("quantity", STR, "what was predicted: `loss`, or `error` (downstream)", "", REQ),
        ("n", I64, "measured points the law was not fitted on"),
        ("coverage", F64, "share of them inside their new-run interval (nominal: the fit's level)", "fraction"),
        ("median_half_width", F64, "median half-width of those intervals, relative to the prediction", "fraction"),
        ("mean_abs_rel_error", F64, "mean |predicted / measured − 1|", "fraction"),
        ("median_abs_rel_error", F64, "median |predicted / measured − 1|", "fraction"),
        ("max_compute_ratio", F64, "the farthest of them, in C over the fit set's largest C"),
        ("calibrated", pa.bool_(), "whether the intervals were calibrated (else the bootstrap's)"),
    )),
}


def columns(table: str) -> tuple[Column, ...]:
    return TABLES[table][1]


def empty(table: str) -> pa.Table:
    """A table with the core columns and no rows."""
    return pa.schema([pa.field(c.name, c.type) for c in columns(table)]).empty_table()


def _is_dictionary_of_strings(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)


def conform(table: str, data: pa.Table | pd.DataFrame, source: str = "") -> pa.Table:
    """``data`` with the core columns of ``table`` first, cast to their types, then any extra columns.

    Raises :class:`SchemaError` for a required column that is missing, a key column with nulls, or a value that
    cannot be cast (naming the table, the column and ``source``).
    """
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    where = f" (in {source})" if source else ""
    n, arrays, fields = data.num_rows, [], []
    for col in columns(table):
        if col.name not in data.column_names:
            if col.required and col.default is None:
                raise SchemaError(f"{table}: required column {col.name!r} is missing{where}")
            arr = pa.nulls(n, col.type) if col.default is None else pa.array([col.default] * n, col.type)
        else:
            arr = data.column(col.name)
            if col.type == STR and _is_dictionary_of_strings(arr.type):
                pass  # keep dictionary-encoded strings as they are: same values, cheaper to carry
            else:
                try:
                    arr = arr.cast(col.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise SchemaError(f"{table}.{col.name}: cannot read as {col.type}{where}: {e}") from None
            if not col.nullable and arr.null_count:
                raise SchemaError(f"{table}: required column {col.name!r} has {arr.null_count} null value(s){where}")
        arrays.append(arr)
        fields.append(pa.field(col.name, arr.type))
    core = {c.name for c in columns(table)}
    for name in data.column_names:
        if name not in core:
            arrays.append(data.column(name))
            fields.append(data.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# --- versions and migrations -----------------------------------------------------------------------

def _v0_to_v1(table: str, data: pa.Table) -> pa.Table:
    """Version 0 (the pipeline skeleton) had no provenance columns in ``runs``; they become `unknown`."""
    if table == "runs":
        for name in ("git_commit", "scaling_version"):
            if name not in data.column_names:
                data = data.append_column(name, pa.array(["unknown"] * data.num_rows, STR))
    return data


def _v1_to_v2(table: str, data: pa.Table) -> pa.Table:
    """Version 1 stored ``rel_error`` as |predicted − measured| / measured; version 2 as predicted / measured − 1."""
    if table == "predictions":
        for rel, q in (("rel_error", "loss"), ("error_rel_error", "error")):
            if rel in data.column_names and f"predicted_{q}" in data.column_names:
                df = data.select([f"predicted_{q}", f"measured_{q}"]).to_pandas()
                signed = pa.array(df[f"predicted_{q}"] / df[f"measured_{q}"] - 1, pa.float64(), from_pandas=True)
                data = data.set_column(data.column_names.index(rel), rel, signed)
    return data


def _v2_to_v3(table: str, data: pa.Table) -> pa.Table:
    """Version 3 moved the fits' parameters to the ``parameters`` table, one row per parameter, since the columns
    ``a``, ``b``, ``c`` meant different things for different laws. A version-2 ``fits`` file keeps its parameter
    columns (``E``, ``a``, ``b``, ``c``, ``epsilon``, ``k``, ``gamma``, ``eta`` and their ``_stderr``, ``_lo``,
    ``_hi``) as extra columns: unchanged, so nothing to do; refitting writes the ``parameters`` table."""
    return data


def _v3_to_v4(table: str, data: pa.Table) -> pa.Table:
    """Version 4 added the ladder's ``runs.trunk``, ``branch_step`` and ``flops_spent``, and ``curves.val_loss``.
    Every run before it trained from scratch: it spent its ``flops``; the others stay null."""
    if table == "runs" and "flops_spent" not in data.column_names and "flops" in data.column_names:
        data = data.append_column("flops_spent", data.column("flops"))
    return data


MIGRATIONS: dict[int, Callable[[str, pa.Table], pa.Table]] = {0: _v0_to_v1, 1: _v1_to_v2, 2: _v2_to_v3,
                                                              3: _v3_to_v4}


def version_of(metadata: dict | None) -> int:
    raw = (metadata or {}).get(VERSION_KEY)
    return int(raw) if raw is not None else 0


def migrate(table: str, data: pa.Table, version: int, source: str = "") -> pa.Table:
    """Bring ``data`` from schema ``version`` to :data:`SCHEMA_VERSION`."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{source or table}: written with schema version {version}, newer than this scaling's "
            f"{SCHEMA_VERSION}; fix: upgrade scaling (pip install -e . in an up-to-date checkout)"
        )
    for v in range(version, SCHEMA_VERSION):
        data = MIGRATIONS[v](table, data)
    return data


def read_table(path: str | Path, table: str, **kwargs) -> pa.Table:
    """A table's Parquet file, migrated to the current schema version and conformed to it."""
    try:
        data = pq.read_table(path, **kwargs)
    except (OSError, pa.ArrowException) as e:
        raise SchemaError(f"cannot read {path}: {e}") from None
    data = migrate(table, data, version_of(data.schema.metadata), str(path))
    return conform(table, data, str(path))


def write_table(path: str | Path, table: str, data: pa.Table | pd.DataFrame, metadata: dict | None = None) -> pa.Table:
    """Conform ``data`` to ``table``'s schema and write it atomically, stamped with the schema version."""
    data = conform(table, data)
    meta = {TABLE_KEY: table.encode(), VERSION_KEY: str(SCHEMA_VERSION).encode()}
    meta.update({k.encode() if isinstance(k, str) else k: v.encode() if isinstance(v, str) else v
                 for k, v in (metadata or {}).items()})
    data = data.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(data, tmp, compression="zstd")
    return data


def docs() -> pd.DataFrame:
    """The documentation of every core column, one row each (the database's ``schema_columns`` table)."""
    return pd.DataFrame([
        {"table_name": t, "column_name": c.name, "type": str(c.type), "unit": c.unit, "required": c.required,
         "key": not c.nullable,
         "description": c.doc, "schema_version": SCHEMA_VERSION}
        for t, (_, cols) in TABLES.items() for c in cols
    ])


def markdown(table: str) -> str:
    """The README's column table for ``table``."""
    def required(c: Column) -> str:
        return "key" if not c.nullable else "yes" if c.required else ""

    rows = [f"| `{c.name}` | {c.type} | {c.unit} | {required(c)} | {c.doc} |" for c in columns(table)]
    return "\n".join(["| column | type | unit | required | meaning |", "| --- | --- | --- | --- | --- |", *rows])
