"""The store's table schemas: round trips, validation, versions and migrations, and their documentation."""

from __future__ import annotations

import math
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from scaling.store import schema

SAMPLES = {
    "runs": {"run_id": "bible/s/M20_lr0.01_s0", "dataset": "bible", "size": "s", "token_multiplier": 20.0, "lr": 0.01,
             "seed": 0, "n_params": 1000, "tokens": 20000, "flops": 1.2e8, "val_loss": 2.5, "status": "ok",
             "training": '{"seq_len": 64}', "checkpoint_every": 100},
    "curves": {"run_id": "bible/s/M20_lr0.01_s0", "step": 1, "tokens": 512, "lr": 0.001, "train_loss": 5.5,
               "grad_norm": 0.7},
    "evals": {"run_id": "r", "val_set": "val", "loss": 2.5, "val_tokens": 65536, "loss_upper95": 2.6},
    "downstream": {"run_id": "r", "task": "hellaswag", "accuracy": 0.31, "in_17task_subset": True},
    "fits": {"law": "overtraining", "dataset": "bible", "n_points": 5, "level": 0.95, "interval_method": "bootstrap"},
    "parameters": {"law": "overtraining", "dataset": "bible", "parameter": "E", "value": 1.0, "stderr": 0.1,
                   "lo": 0.8, "hi": 1.2, "lower90": 0.85},
    "predictions": {"law": "overtraining", "dataset": "bible", "n_params": 10**6, "token_multiplier": 20.0,
                    "role": "target", "predicted_loss": 2.0, "predicted_upper95": 2.1},
    "backtest": {"law": "overtraining", "dataset": "bible", "quantity": "loss", "n": 2, "coverage": 0.5,
                 "max_extrapolation": 0.3},
}


@pytest.mark.parametrize("table", list(schema.TABLES))
def test_every_table_round_trips_with_its_version_and_extra_columns(tmp_path, table):
    path = tmp_path / f"{table}.parquet"
    written = schema.write_table(path, table, pd.DataFrame([SAMPLES[table]]))
    assert schema.version_of(pq.read_schema(path).metadata) == schema.SCHEMA_VERSION
    back = schema.read_table(path, table)
    assert back.equals(written.replace_schema_metadata(back.schema.metadata))
    core = [c.name for c in schema.columns(table)]
    extra = [k for k in SAMPLES[table] if k not in core]
    assert back.column_names == core + extra  # core columns first, in order; extras carried after them
    row = back.to_pylist()[0]
    for key, value in SAMPLES[table].items():
        assert row[key] == value, key
    for col in schema.columns(table):
        assert back.schema.field(col.name).type == col.type
        if col.name not in SAMPLES[table]:
            assert row[col.name] == col.default


def test_a_missing_required_column_is_named(tmp_path):
    bad = {k: v for k, v in SAMPLES["runs"].items() if k != "n_params"}
    with pytest.raises(schema.SchemaError, match=r"runs: required column 'n_params' is missing \(in x.parquet\)"):
        schema.conform("runs", pd.DataFrame([bad]), "x.parquet")


def test_a_null_key_is_refused_but_a_null_loss_is_kept():
    diverged = {**SAMPLES["runs"], "val_loss": math.nan, "status": "diverged"}
    assert schema.conform("runs", pd.DataFrame([diverged])).column("val_loss").null_count == 1
    with pytest.raises(schema.SchemaError, match="'status' has 1 null"):
        schema.conform("runs", pd.DataFrame([{**SAMPLES["runs"], "status": None}]))


def test_a_value_of_the_wrong_type_is_named():
    with pytest.raises(schema.SchemaError, match=r"runs\.n_params: cannot read as int64"):
        schema.conform("runs", pd.DataFrame([{**SAMPLES["runs"], "n_params": "many"}]))


def test_a_version_0_file_from_the_skeleton_is_migrated(tmp_path):
    """The skeleton wrote plain Parquet (no version stamp) and had no provenance columns."""
    path = tmp_path / "runs.parquet"
    skeleton = {k: v for k, v in SAMPLES["runs"].items() if k != "checkpoint_every"}
    pd.DataFrame([skeleton]).to_parquet(path, index=False)
    assert schema.version_of(pq.read_schema(path).metadata) == 0
    runs = schema.read_table(path, "runs").to_pylist()[0]
    assert runs["git_commit"] == runs["scaling_version"] == "unknown"
    assert runs["n_params"] == skeleton["n_params"]


def test_every_version_below_the_current_has_a_migration():
    assert sorted(schema.MIGRATIONS) == list(range(schema.SCHEMA_VERSION))


def test_a_file_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "runs.parquet"
    table = schema.conform("runs", pd.DataFrame([SAMPLES["runs"]]))
    pq.write_table(table.replace_schema_metadata({schema.VERSION_KEY: str(schema.SCHEMA_VERSION + 1).encode()}), path)
    with pytest.raises(schema.SchemaError, match="newer than this scaling's.*upgrade"):
        schema.read_table(path, "runs")


def test_dictionary_encoded_strings_stay_strings():
    ids = pa.DictionaryArray.from_arrays(pa.array([0, 0], pa.int32()), pa.array(["a"]))
    curve = pa.table({"run_id": ids, "step": [1, 2], "tokens": [8, 16], "lr": [0.1, 0.1], "train_loss": [3.0, 2.0]})
    out = schema.conform("curves", curve)
    assert out.column("run_id").to_pylist() == ["a", "a"]


def test_version_1_relative_errors_become_signed(tmp_path):
    path = tmp_path / "predictions.parquet"
    v1 = pa.table({"law": ["overtraining"] * 2, "dataset": ["d"] * 2, "n_params": [10, 20], "token_multiplier": [20.0] * 2,
                   "role": ["held_out"] * 2, "measured_loss": [2.0, 4.0], "predicted_loss": [2.2, 3.0],
                   "rel_error": [0.1, 0.25]})
    pq.write_table(v1.replace_schema_metadata({schema.VERSION_KEY: b"1"}), path)
    back = schema.read_table(path, "predictions").to_pandas()
    assert back["rel_error"].tolist() == pytest.approx([0.1, -0.25])  # predicted / measured − 1


def test_version_3_runs_spent_their_flops_and_have_no_trunk(tmp_path):
    """Version 4 added the ladder's columns; every run before it trained from scratch."""
    path = tmp_path / "runs.parquet"
    v3 = pa.Table.from_pylist([{k: v for k, v in SAMPLES["runs"].items()}])
    pq.write_table(v3.replace_schema_metadata({schema.VERSION_KEY: b"3"}), path)
    back = schema.read_table(path, "runs").to_pylist()[0]
    assert back["flops_spent"] == back["flops"] == 1.2e8 and back["trunk"] is None and back["branch_step"] is None


def test_a_version_2_fits_file_keeps_its_parameter_columns_as_extra_columns(tmp_path):
    """Version 3 moved the parameters to their own table; a version-2 file's parameter columns are carried."""
    path = tmp_path / "fits.parquet"
    v2 = pa.table({"law": ["overtraining", "downstream"], "dataset": ["d", "d"], "E": [1.5, None],
                   "a": [100.0, None], "epsilon": [None, 0.9], "task": [None, "core"]})
    pq.write_table(v2.replace_schema_metadata({schema.VERSION_KEY: b"2"}), path)
    back = schema.read_table(path, "fits")
    core = [c.name for c in schema.columns("fits")]
    assert "E" not in core and back.column_names == core + ["E", "a", "epsilon"]
    assert back.column("E").to_pylist() == [1.5, None] and back.column("task").to_pylist() == [None, "core"]


def test_the_readme_documents_every_column_of_every_table():
    readme = (REPO / "README.md").read_text()
    for table in schema.TABLES:
        section = re.search(rf"^#### `{table}`.*?\n\n(.*?)(?:\n\n|\Z)", readme, re.S | re.M)
        assert section, f"README has no `#### `{table}`` section"
        assert section.group(1).strip() == schema.markdown(table), f"README's {table} columns differ from schema.py"
