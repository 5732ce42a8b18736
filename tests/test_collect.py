"""Collect: finished runs only, incremental, and loud about files it cannot read."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scaling.io import RunFileError
from scaling.store import collect as C
from scaling.store import schema
from scaling.study import runs as S
from scaling.testbeds import synthetic

STEPS = 30


def make_study(root: Path, n_sizes=2, multipliers=(10, 20), lrs=(0.01, 0.02)) -> tuple[dict, list[Path]]:
    """A synthetic study with every run finished; the first run diverged."""
    config = synthetic.study_config("t", n_sizes, list(multipliers), list(lrs))
    paths = [synthetic.write_run(root, config, run, STEPS, diverged=i == 0) for i, run in enumerate(S.runs(config))]
    return config, paths


def rows(table) -> list[dict]:
    """A table's rows as comparable dicts, in a stable order."""
    return sorted(table.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def same_tables(a: dict, b: dict) -> bool:
    return all(rows(a[t]) == rows(b[t]) for t in C.RUN_TABLES)


def test_a_full_collect_writes_every_table(tmp_path):
    config, paths = make_study(tmp_path)
    done = C.collect(paths, tmp_path / "tables")
    assert (done.parsed, done.cached) == (len(paths), 0)
    runs = schema.read_table(tmp_path / "tables/runs.parquet", "runs").to_pandas()
    assert sorted(runs["run_id"]) == sorted(r.id for r in S.runs(config))
    assert list(runs["status"]).count("diverged") == 1
    assert runs.loc[runs["status"] == "diverged", "val_loss"].isna().all()
    assert set(runs["source"]) == {str(p.parent) for p in paths}
    assert (runs["git_commit"] == C.git_commit()).all() and (runs["scaling_version"] != "").all()
    curves = schema.read_table(tmp_path / "tables/curves.parquet", "curves").to_pandas()
    per_run = curves.groupby("run_id")["step"].agg(["count", "max"])
    expected = {json.loads(p.read_text())["run_id"]: pq.read_metadata(p.with_name("curve.parquet")).num_rows
                for p in paths}
    assert per_run["count"].to_dict() == expected and (per_run["count"] == per_run["max"]).all()
    evals = schema.read_table(tmp_path / "tables/evals.parquet", "evals").to_pandas()
    assert len(evals) == len(paths) and set(evals["val_set"]) == {"val"}
    assert schema.read_table(tmp_path / "tables/downstream.parquet", "downstream").num_rows == 0


def test_the_git_commit_is_unknown_outside_a_git_checkout(tmp_path):
    C.git_commit.cache_clear()
    try:
        assert C.git_commit(tmp_path) == "unknown"
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", C.git_commit())  # the tests run in a checkout
    finally:
        C.git_commit.cache_clear()


def test_recollecting_parses_only_new_runs_and_matches_a_full_collect(tmp_path):
    config, paths = make_study(tmp_path)
    C.collect(paths, tmp_path / "tables")
    bigger = synthetic.study_config("t", 2, [10, 20, 40], [0.01, 0.02])
    new = [synthetic.write_run(tmp_path, bigger, r, STEPS) for r in S.runs(bigger) if r.token_multiplier == 40]
    again = C.collect(paths + new, tmp_path / "tables")
    assert (again.parsed, again.cached) == (len(new), len(paths))
    full = C.collect(paths + new, tmp_path / "full", use_cache=False)
    assert full.parsed == len(paths) + len(new)
    assert same_tables(again.tables, full.tables)
    on_disk = {t: schema.read_table(tmp_path / "tables" / f"{t}.parquet", t) for t in C.RUN_TABLES}
    assert same_tables(on_disk, full.tables)


def test_cached_runs_are_not_read_again(tmp_path):
    """A cached run's files are not opened: garbage of the same size and mtime goes unnoticed, until --full."""
    _, paths = make_study(tmp_path)
    C.collect(paths, tmp_path / "tables")
    curve = paths[1].with_name("curve.parquet")
    st = curve.stat()
    curve.write_bytes(b"x" * st.st_size)
    os.utime(curve, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert C.collect(paths, tmp_path / "tables").parsed == 0
    with pytest.raises(RunFileError, match=re.escape(str(curve))):
        C.collect(paths, tmp_path / "tables", use_cache=False)


def test_a_retrained_run_replaces_its_rows_and_a_removed_run_is_dropped(tmp_path):
    config, paths = make_study(tmp_path)
    C.collect(paths, tmp_path / "tables")
    retrained = S.runs(config)[0]  # diverged the first time; now it finishes
    synthetic.write_run(tmp_path, config, retrained, STEPS + 5)
    again = C.collect(paths[:-1], tmp_path / "tables")
    assert (again.parsed, again.cached) == (1, len(paths) - 2)
    runs = again.tables["runs"].to_pandas().set_index("run_id")
    assert runs.loc[retrained.id, "status"] == "ok" and len(runs) == len(paths) - 1
    assert S.runs(config)[-1].id not in runs.index
    curves = again.tables["curves"].to_pandas()
    assert (curves["run_id"] == retrained.id).sum() == STEPS + 5
    assert same_tables(again.tables, C.collect(paths[:-1], tmp_path / "full", use_cache=False).tables)


def test_the_manifest_lists_the_tables_and_snakemake_deleting_it_keeps_them(tmp_path):
    _, paths = make_study(tmp_path)
    done = C.collect(paths, tmp_path / "tables")
    manifest = json.loads((tmp_path / "tables" / C.MANIFEST).read_text())
    assert manifest["tables"] == {t: {"file": f"{t}.parquet", "rows": done.tables[t].num_rows} for t in C.RUN_TABLES}
    for t in C.RUN_TABLES:
        meta = pq.read_schema(tmp_path / "tables" / f"{t}.parquet").metadata
        assert meta[C.COLLECT_ID_KEY.encode()].decode() == manifest["collect_id"]
    (tmp_path / "tables" / C.MANIFEST).unlink()  # as snakemake does before it reruns collect, and when it fails
    again = C.collect(paths, tmp_path / "tables")
    assert (again.parsed, again.cached) == (0, len(paths))
    assert json.loads((tmp_path / "tables" / C.MANIFEST).read_text())["collect_id"] != manifest["collect_id"]


def test_torn_previous_tables_are_ignored(tmp_path):
    _, paths = make_study(tmp_path)
    C.collect(paths, tmp_path / "tables")
    kept = (tmp_path / "tables" / "curves.parquet").read_bytes()
    C.collect(paths[:2], tmp_path / "tables", use_cache=True)
    (tmp_path / "tables" / "curves.parquet").write_bytes(kept)  # curves from another collect than runs
    again = C.collect(paths[:2], tmp_path / "tables")
    assert (again.parsed, again.cached) == (2, 0)
    assert set(again.tables["curves"]["run_id"].to_pylist()) == set(again.tables["runs"]["run_id"].to_pylist())


@pytest.mark.parametrize("damage, culprit, message", [
    (lambda p: p.write_text('{"run_id": "x", "status": "o'), "metrics.json", "unreadable"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00"), "metrics.json", "unreadable"),
    (lambda p: p.write_text("[1, 2]"), "metrics.json", "not a JSON object"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "n_params"})),
     "metrics.json", r"lacks the required field\(s\) \['n_params'\]"),
    (lambda p: p.with_name("curve.parquet").write_bytes(p.with_name("curve.parquet").read_bytes()[:100]),
     "curve.parquet", "unreadable"),
    (lambda p: p.with_name("curve.parquet").unlink(), "curve.parquet", "missing, so the run is not finished"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "val_loss": "abc"})), "metrics.json",
     r"runs\.val_loss: cannot read as double .*'abc'"),
])
def test_an_unreadable_run_fails_the_collect_naming_the_file_and_the_fix(tmp_path, damage, culprit, message):
    _, paths = make_study(tmp_path)
    C.collect(paths, tmp_path / "tables")
    before = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}
    damage(paths[2])
    with pytest.raises(RunFileError) as err:
        C.collect(paths, tmp_path / "tables")
    text = str(err.value)
    assert str(paths[2].with_name(culprit)) in text and re.search(message, text) and "fix:" in text
    assert "\n" not in text
    # nothing was lost: the previous tables and their manifest are untouched
    assert {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()} == before


def test_a_run_in_progress_is_not_read_as_finished(tmp_path):
    """Training writes curve.parquet, then metrics.json: a run with only its curve is still running."""
    config, paths = make_study(tmp_path)
    paths[0].unlink()
    with pytest.raises(RunFileError, match=f"{re.escape(str(paths[0]))}: missing, so the run is not finished"):
        C.collect(paths, tmp_path / "tables")
    assert not (tmp_path / "tables" / "runs.parquet").exists()


def cli_error(*argv: str) -> str:
    """The one-line error `scaling ARGV` exits with."""
    from scaling.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert isinstance(exit_.value.code, str) and "\n" not in exit_.value.code
    return exit_.value.code


def test_the_cli_names_the_corrupt_file_and_exits_non_zero(tmp_path):
    _, paths = make_study(tmp_path)
    paths[1].write_text("{")
    error = cli_error("collect", "--out", str(tmp_path / "tables"), *map(str, paths))
    assert str(paths[1]) in error and "fix:" in error


def test_a_value_of_the_wrong_type_is_named_with_its_file(tmp_path):
    """Among many runs (a full collect), the one whose val_loss is not a number is named, not pyarrow's message."""
    _, paths = make_study(tmp_path)
    paths[2].write_text(json.dumps({**json.loads(paths[2].read_text()), "val_loss": "abc"}))
    error = cli_error("collect", "--out", str(tmp_path / "tables"), *map(str, paths))
    assert error.startswith("error: runs.val_loss: cannot read as double") and str(paths[2]) in error
    assert f"fix: delete {paths[2].parent} and rerun snakemake" in error
    for i, note in ((0, 1), (1, "one")):  # an extra field, a number in one run and text in another
        paths[i].write_text(json.dumps({**json.loads(paths[i].read_text()), "note": note}))
    with pytest.raises(RunFileError, match="disagree on the type of a field.*column note.*fix: give that field one"):
        C.collect(paths[:2], tmp_path / "tables")


def test_a_full_disk_fails_the_collect_naming_the_table_and_keeps_the_previous_tables(tmp_path, monkeypatch):
    _, paths = make_study(tmp_path)
    tables = tmp_path / "tables"
    C.collect(paths[:-1], tables)
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    fsync = os.fsync
    written = []

    def full_after_two(fd):  # the disk fills up while the third table is written
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_two)
    error = cli_error("collect", "--out", str(tables), *map(str, paths))
    assert re.fullmatch(rf"error: {re.escape(str(tables))}/\w+\.parquet: could not write it "
                        r"\(No space left on device\); fix: free disk space, then rerun", error), error
    assert {p.name: p.read_bytes() for p in tables.iterdir()} == before  # no table replaced, no temporary left


def test_extra_metrics_are_carried_and_evals_and_downstream_become_rows(tmp_path):
    """What a trainer adds to metrics.json reaches the tables without a change to collect."""
    _, paths = make_study(tmp_path)
    m = json.loads(paths[0].read_text())
    m.update(flops_attention=1.5e9, checkpoint={"every": 100, "kept": [100, 200]},
             evals={"val": 3.1, "paloma": 3.4}, downstream={"hellaswag": 0.3, "arc_easy": 0.4})
    paths[0].write_text(json.dumps(m))
    done = C.collect(paths, tmp_path / "tables")
    runs = done.tables["runs"].to_pandas().set_index("run_id")
    assert runs.loc[m["run_id"], "flops_attention"] == 1.5e9
    assert json.loads(runs.loc[m["run_id"], "checkpoint"]) == {"every": 100, "kept": [100, 200]}
    assert runs.drop(index=m["run_id"])["flops_attention"].isna().all()
    evals = done.tables["evals"].to_pandas()
    assert dict(evals.loc[evals["run_id"] == m["run_id"], ["val_set", "loss"]].values) == {"val": 3.1, "paloma": 3.4}
    assert len(evals) == len(paths) + 1
    down = done.tables["downstream"].to_pandas()
    assert dict(down[["task", "accuracy"]].values) == {"hellaswag": 0.3, "arc_easy": 0.4}


def test_a_run_listed_twice_or_a_run_id_in_two_directories_is_refused(tmp_path):
    _, paths = make_study(tmp_path)
    with pytest.raises(RunFileError, match="listed twice"):
        C.collect(paths + paths[:1], tmp_path / "tables")
    copy = tmp_path / "copy" / "run"
    shutil.copytree(paths[0].parent, copy)
    with pytest.raises(RunFileError, match="appears in more than one run directory"):
        C.collect(paths + [copy / "metrics.json"], tmp_path / "tables")


def _scores(path: Path, accuracy: float) -> None:
    """A downstream.json as the evaluate stage writes it: one task and one task set."""
    task = {"accuracy": accuracy, "accuracy_raw": accuracy - 0.1, "accuracy_norm": accuracy, "metric": "acc_norm",
            "n_examples": 100, "random_baseline_accuracy": 0.25}
    path.with_name("downstream.json").write_text(json.dumps({
        "run_id": json.loads(path.read_text())["run_id"], "status": "ok", "tasks": {"spelling": task},
        "task_sets": {"core": {"tasks": ["spelling"], "accuracy": accuracy, "random_baseline_accuracy": 0.25}}}))


def test_downstream_scores_become_rows_and_a_rescored_run_is_read_again(tmp_path):
    _, paths = make_study(tmp_path)
    for p in paths:
        _scores(p, 0.5)
    first = C.collect(paths, tmp_path / "tables")
    rows_ = first.tables["downstream"].to_pandas()
    assert len(rows_) == 2 * len(paths) and set(rows_["kind"]) == {"task", "average"}
    task = rows_[rows_["kind"] == "task"].iloc[0]
    assert (task["accuracy_raw"], task["n_examples"], task["metric"]) == (pytest.approx(0.4), 100, "acc_norm")
    _scores(paths[1], 0.75)  # the tasks changed and the run was scored again; it was not retrained
    again = C.collect(paths, tmp_path / "tables")
    assert (again.parsed, again.cached) == (1, len(paths) - 1)
    run_id = json.loads(paths[1].read_text())["run_id"]
    accuracy = again.tables["downstream"].to_pandas().set_index(["run_id", "task"])["accuracy"]
    assert accuracy[(run_id, "spelling")] == accuracy[(run_id, "core")] == 0.75
    paths[2].with_name("downstream.json").write_text("{")
    with pytest.raises(RunFileError, match="downstream.json: unreadable.*fix: delete it and rerun snakemake"):
        C.collect(paths, tmp_path / "tables")


def test_a_ladder_runs_flops_spent_are_their_shares_of_the_trunk_and_their_cooldowns():
    # one trunk, runs of 200, 400 and 800 steps branching at 160, 320 and 640; and a run from scratch
    runs = schema.conform("runs", __import__("pandas").DataFrame([
        {**base, "run_id": f"d/s/M{m}_lr0.01_s0", "token_multiplier": float(m), "steps": steps, "flops": 6.0 * steps,
         "trunk": "d/s/trunk_lr0.01_s0" if b else None, "branch_step": b}
        for m, steps, b in ((10, 200, 160), (20, 400, 320), (40, 800, 640), (80, 1600, None))
        for base in [{"dataset": "d", "size": "s", "n_params": 1, "tokens": 1, "val_loss": 1.0, "status": "ok"}]]))
    spent = C.with_flops_spent(runs).column("flops_spent").to_pylist()
    assert spent == pytest.approx([6 * (160 / 3 + 40), 6 * (160 / 3 + 160 / 2 + 80),
                                   6 * (160 / 3 + 160 / 2 + 320 + 160), 6.0 * 1600])
    assert sum(spent[:3]) == pytest.approx(6 * (640 + 40 + 80 + 160))  # the trunk once, and every cooldown
