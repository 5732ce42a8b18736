"""The ``scaling`` command: the pipeline's stages (called by the Snakemake rules), ``scaling sql``,
``scaling fit``, ``scaling backtest``, ``scaling status``, ``scaling plan``, ``scaling import`` and ``scaling export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling import forkserver
from scaling.fit import command as fit_cli
from scaling.io import WriteError

# A local study's job server (scaling.forkserver) runs the pipeline's commands that import heavy modules (torch,
# pandas, scipy: seconds), importing those once, in this order: the train jobs', which come first and most often,
# first (torch._dynamo is torch.optim's, on its first optimizer). prepare and tasks import little: they run in place.
# No Hugging Face library among them: a harness evaluation sets the hub's offline variables before they are imported.
SERVED = frozenset({"train", "evaluate", "export", "collect", "database", "fit-study", "report"})
JOB_MODULES = ("torch", "torch._dynamo", "scaling.train.loop", "scaling.evaluate.scoring", "scaling.store.collect",
               "scaling.store.database", "scaling.fit.stage", "scaling.report.write")


def start_job_server(log: str, wait: bool = False) -> str | None:
    """Start the job server for this process's ``scaling`` commands (scaling.forkserver.start), logging to ``log``."""
    return forkserver.start("scaling.cli:run", JOB_MODULES, log, wait=wait)


def _prepare(args):
    from scaling.data.prepare import prepare

    meta = prepare(json.loads(args.dataset), args.out)
    print(f"prepared {meta['n_train_tokens']:,} train and {meta['n_val_tokens']:,} val tokens from {meta['source']}")


def _train(args):
    from scaling.io import read_json
    from scaling.study.runs import ConfigError, Specs
    from scaling.train.checkpoint import Claimed
    from scaling.train.preemption import Stopped, stop_signals
    from scaling.train.loop import train

    if (args.spec is None) == (args.study is None) or (args.study is None) != (args.run is None):
        raise SystemExit("error: give the run's --spec, or the --study file and the --run id")
    try:
        spec = json.loads(args.spec) if args.spec else Specs(read_json(args.study))[args.run]
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    with stop_signals() as signalled:
        try:
            train(spec, args.data, args.out, threads=args.threads,
                  checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                  compile_model=args.compile, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                  signalled=signalled, tensorboard=args.tensorboard, start_from=args.start_from)
        except Stopped as e:
            raise SystemExit(e.exit_status)
        except Claimed as e:
            raise SystemExit(f"error: {e}")


def _tasks(args):
    from scaling.data.prepare import held_out_text, load_tokenizer
    from scaling.evaluate.tasks import TaskError, Window, build_task, write_task

    try:
        window = Window(args.seq_len, load_tokenizer(args.data).encode)
        examples = build_task(args.kind, held_out_text(args.data), args.examples, args.seed, window)
    except TaskError as e:
        raise SystemExit(f"error: {e}")
    write_task(args.out, examples)
    print(f"built {len(examples)} {args.kind} examples into {args.out}")


def _evaluate(args):
    from scaling.io import RunFileError
    from scaling.evaluate.scoring import evaluate_run
    from scaling.evaluate.tasks import TaskError

    try:
        result = evaluate_run(args.run, args.data, json.loads(args.tasks), json.loads(args.task_sets),
                              batch_size=args.batch_size, threads=args.threads, hf_dir=args.hf)
    except (TaskError, RunFileError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    for name, r in {**result["tasks"], **result["task_sets"]}.items():
        print(f"{name}: accuracy {r['accuracy']:.4f} (random {r['random_baseline_accuracy']:.4f})")
    if result["status"] != "ok":
        print(f"{result['run_id']}: {result['status']}, not scored")


def _export(args):
    from scaling.evaluate.export import ExportError, export_run

    try:
        out = export_run(args.run_dir, args.out_dir, args.data)
    except ExportError as e:
        raise SystemExit(f"error: {e}")
    print(f"exported {args.run_dir} as a transformers GPT-2 model into {out} "
          f"(AutoModelForCausalLM.from_pretrained({str(out)!r}))")


def _collect(args):
    from scaling.io import RunFileError, read_json
    from scaling.store.collect import collect
    from scaling.store.schema import SchemaError
    from scaling.study.runs import runs

    if bool(args.metrics) == bool(args.study) or (args.study is None) != (args.runs_dir is None):
        raise SystemExit("error: give the runs' metrics.json files, or the --study file and the --runs-dir")
    metrics = args.metrics or [Path(args.runs_dir) / run.id / "metrics.json" for run in runs(read_json(args.study))]
    try:
        done = collect(metrics, args.out, use_cache=not args.full)
    except (RunFileError, SchemaError) as e:
        raise SystemExit(f"error: {e}")
    print(f"collected {done.tables['runs'].num_rows} runs into {args.out}: "
          f"{done.parsed} read from their files, {done.cached} from the previous collect")


def _fit(args):
    fit_cli.fit_command(args, default_data=latest_database)


def _backtest(args):
    fit_cli.fit_command(args, default_data=latest_database, backtest=True)


def _fit_study(args):
    from scaling.fit.bootstrap import processes
    from scaling.fit.estimators import FitError
    from scaling.fit.stage import fit_study, write_fits
    from scaling.store.schema import read_table

    try:
        runs = read_table(args.runs, "runs").to_pandas()  # migrated to the current schema, as every table is read
        downstream = read_table(args.downstream, "downstream").to_pandas()
        with processes(args.threads):
            fitted = fit_study(runs, downstream, json.loads(args.fit_config), json.loads(args.sizes), args.task)
    except (FitError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    write_fits(fitted, args.out_dir, args.fits_table, args.parameters, args.predictions, args.backtest)
    for law, (fits, _, skipped) in fitted.items():
        print(f"{law}: {skipped and 'skipped: ' + skipped or f'{len(fits)} fit(s)'}")


def _database(args):
    from scaling.store.database import build_database
    from scaling.store.schema import SchemaError

    try:
        rows = build_database(args.tables, args.out)
    except SchemaError as e:
        raise SystemExit(f"error: {e}")
    print(f"results database: {Path(args.out).resolve()} ({', '.join(f'{t} {n:,}' for t, n in rows.items())} rows)")


def _status(args):
    from scaling.study.status import grid, report, watch
    from scaling.study.runs import ConfigError
    from scaling.study.config import load

    try:
        config = load([args.configfile], fittable=False)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    label = study_label(config["study"], args.configfile)
    if args.watch:
        try:
            watch(config, label, args.results, args.stale_after, args.watch, sys.stdout)
        except KeyboardInterrupt:
            pass
        return
    per_run = grid(config, args.results, args.stale_after)
    if args.csv:
        per_run.to_csv(sys.stdout, index=False)
    else:
        print(report(label, per_run, list_runs=args.runs))


def _plan(args):
    import pandas as pd

    from scaling.io import atomic_path
    from scaling.store.schema import SchemaError, read_table
    from scaling.study.config import load
    from scaling.study.plan import parse_target, plan_study
    from scaling.study.runs import ConfigError, model_sizes

    try:
        config = load([args.configfile], fittable=False)
        path = Path(args.runs or Path(args.results) / config["study"] / "tables" / "runs.parquet")
        runs = read_table(path, "runs").to_pandas() if path.exists() else pd.DataFrame()
        targets = [parse_target(t, model_sizes(config)) for t in args.target]
        proposals, before, text = plan_study(config, runs, targets, args.budget, dataset=args.dataset,
                                             multipliers=args.token_multipliers)
    except (ConfigError, SchemaError) as e:
        raise SystemExit(f"error: {e}")
    names = args.target
    known = f"{len(runs)} runs in {path}" if len(runs) else f"no runs yet ({path}): the law's prior"
    print(f"{known}; expected 95% half-width now: "
          + ", ".join(f"{n} ±{w:.2%}" for n, w in zip(names, before)))
    if len(proposals):
        shown = proposals[["size", "n_params", "token_multiplier", "learning_rates", "cost", "cumulative_cost"]].copy()
        for i, n in enumerate(names):
            shown[f"±{n}"] = proposals[f"half_width_{i}"].map("{:.2%}".format)
        print("proposed, in order (half-widths expected after each run):")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(text, end="")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
        print(f"wrote {args.out}")


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    """``COLUMN=VALUE`` arguments as a dict."""
    from scaling.testbeds.importers import TestbedError

    for item in items:
        if "=" not in item:
            raise TestbedError(f"{flag} {item!r}: give COLUMN=VALUE")
    return dict(item.split("=", 1) for item in items)


def _import(args):
    import yaml

    from scaling.testbeds.importers import TestbedError, import_csv, import_gadre2024

    try:
        if args.testbed == "gadre2024":
            rows = import_gadre2024(args.results, args.study or "gadre2024")
        else:
            if not (args.csv_file and args.study):
                raise TestbedError("`scaling import csv` needs the CSV file and --study NAME")
            constants = {k: yaml.safe_load(v) for k, v in _pairs("--set", args.set).items()}
            rows = import_csv(args.csv_file, args.study, args.results, _pairs("--map", args.map), constants,
                              args.val_set_column, args.val_set, args.downstream)
    except (TestbedError, OSError) as e:
        raise SystemExit(f"error: {e}")
    db = Path(args.results) / (args.study or args.testbed) / "scaling.duckdb"
    print(f"imported into {db.parent}: " + ", ".join(f"{t} {n:,}" for t, n in rows.items() if n))
    print(f"query it: scaling sql --db {db} 'SELECT * FROM runs'")


def _report(args):
    from scaling.report.write import write_report
    from scaling.report.tables import Tables
    from scaling.store.schema import SchemaError

    try:
        tables = Tables.read(args.tables)
    except SchemaError as e:
        raise SystemExit(f"error: {e}")
    written = write_report(args.title, args.study, tables, args.figures, args.summary)
    print(f"report: {len(written) - 1} figures in {args.figures}, summary {args.summary}")


def latest_database(root: str | Path = "results") -> Path:
    """The most recently written ``results/<study>/scaling.duckdb`` (the default data of ``scaling fit``)."""
    dbs = sorted(Path(root).glob("*/scaling.duckdb"), key=lambda p: p.stat().st_mtime)
    if not dbs:
        raise SystemExit(f"no study database under {Path(root).resolve()}/*/scaling.duckdb; "
                         f"run `snakemake --cores 2` first, or pass --db PATH")
    return dbs[-1]


def study_label(study: str, configfile: str) -> str:
    """How `scaling sql` and `scaling status` name the study they use: its name and the file that declares it."""
    return f"study {study!r} ({configfile})"


def study_database(configfile: str, results: str) -> Path:
    """The database of the study ``configfile`` declares, as `scaling status` reads the same file; says which."""
    import re

    from scaling.study.config import read_study_file, schema
    from scaling.study.runs import ConfigError

    try:
        study = read_study_file(configfile).get("study")
    except ConfigError as e:
        raise SystemExit(f"error: {e}; `scaling sql` queries the results/<study>/scaling.duckdb of the study "
                         f"--configfile declares, as `scaling status` reads it: run it where you run snakemake, or "
                         f"pass --configfile FILE or --db PATH")
    if not (isinstance(study, str) and re.fullmatch(schema()["$defs"]["name"]["pattern"], study)):
        raise SystemExit(f"error: {configfile}: study: {study!r} is not a study name; fix: pass the study's file "
                         f"with --configfile, or a database with --db PATH")
    db = Path(results) / study / "scaling.duckdb"
    print(f"{study_label(study, configfile)}: {db}", file=sys.stderr)
    if not db.exists():
        others = sorted(p.parent.name for p in Path(results).glob("*/scaling.duckdb"))
        raise SystemExit(f"error: {db} does not exist: run `snakemake --cores 2 --configfile {configfile}` first, "
                         f"or pick the study with --configfile FILE or --db PATH"
                         + (f" (studies with a database: {', '.join(others)})" if others else ""))
    return db


def _sql(args):
    import duckdb
    import pandas as pd

    from scaling.store.database import ReadOnlyError, open_all, open_study, query

    try:
        if args.all:
            con = open_all(args.results)
        else:
            db = Path(args.db) if args.db else study_database(args.configfile, args.results)
            if not db.exists():
                raise SystemExit(f"--db: {db} does not exist")
            con = open_study(db)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}; run `snakemake --cores 2` or `scaling import gadre2024` first")
    except duckdb.Error as e:
        raise SystemExit(f"error: cannot open the results database: {e}")
    try:
        df = query(con, args.query)
    except ReadOnlyError as e:
        raise SystemExit(f"error: read-only: {e}")
    except duckdb.Error as e:
        raise SystemExit(f"error: {e}")
    if df is None:  # a statement with no result (e.g. SET)
        return
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", args.max_rows, "display.width", 200):
            print(df.to_string(index=False, max_rows=args.max_rows))


def main(argv: list[str] | None = None) -> None:
    """The ``scaling`` command, run by the local study's job server where there is one (scaling.forkserver)."""
    argv = sys.argv[1:] if argv is None else argv
    code = forkserver.delegate(argv) if argv[:1] and argv[0] in SERVED else None
    if code is not None:
        raise SystemExit(code)
    run(argv)


def run(argv: list[str]) -> None:
    """The ``scaling`` command, run in this process."""
    parser = argparse.ArgumentParser(prog="scaling", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sql", help="run a read-only SQL query on a study's DuckDB database")
    p.add_argument("query")
    p.add_argument("--configfile", default="workflow/config.yaml",
                   help="the study whose results/<study>/scaling.duckdb to query, as `scaling status` takes it "
                        "(default: workflow/config.yaml)")
    p.add_argument("--db", help="a database file instead (an imported testbed's, a copy)")
    p.add_argument("--all", action="store_true",
                   help="query every study under --results at once: each table gains a `study` column")
    p.add_argument("--results", default="results", help="the results directory (default: results)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--max-rows", type=int, default=200)
    p.set_defaults(func=_sql)

    p = sub.add_parser("status", help="the study's grid: runs done, running, failed, diverged, not started")
    p.add_argument("--configfile", default="workflow/config.yaml", help="the study (default: workflow/config.yaml)")
    p.add_argument("--results", default="results", help="the results directory (default: results)")
    p.add_argument("--stale-after", type=float, default=120.0,
                   help="seconds without a log line after which a run without metrics counts as failed (default 120)")
    p.add_argument("--runs", action="store_true", help="also list every run that is not done, with its state")
    p.add_argument("--csv", action="store_true", help="print one CSV row per run instead")
    p.add_argument("--watch", type=fit_cli._positive, nargs="?", const=5.0, default=None, metavar="SECONDS",
                   help="redraw the study's progress every SECONDS (default 5) until every run has finished; run it "
                        "in a second terminal beside snakemake")
    p.set_defaults(func=_status)

    p = sub.add_parser("plan", help="the runs to train next that most narrow the targets' intervals per FLOP, as a "
                                    "grid block for the study file",
                       description="Propose the runs (size, M, learning rates) that most narrow the targets' 95% "
                                   "intervals per FLOP within --budget, from the study's current fit, and print "
                                   "them as grid blocks and fit.fit_on filters to add to the study file (README, "
                                   "'Which runs to train next').")
    p.add_argument("--target", action="append", required=True, metavar="N:M",
                   help="a run to predict: N a parameter count (7e9) or a model of the study, M tokens per parameter; "
                        "repeat for several")
    p.add_argument("--budget", type=fit_cli._positive, required=True, metavar="FLOPS",
                   help="compute to spend on the new runs (6·N·D of every run of each learning-rate sweep)")
    p.add_argument("--configfile", default="workflow/config.yaml", help="the study (default: workflow/config.yaml)")
    p.add_argument("--results", default="results", help="the results directory (default: results)")
    p.add_argument("--runs", metavar="FILE", help="the runs table (default: results/<study>/tables/runs.parquet)")
    p.add_argument("--dataset", help="the dataset to plan for (default: the study's only one)")
    p.add_argument("--token-multipliers", type=lambda t: [float(x) for x in t.split(",")], metavar="M,M,…",
                   help="the M values allowed (default: those of the study's grid)")
    p.add_argument("--out", metavar="FILE", help="also write the YAML proposal to FILE")
    p.set_defaults(func=_plan)

    p = sub.add_parser("import", help="load a published testbed into results/<study>/ (tables and database)")
    p.add_argument("testbed", choices=["gadre2024", "csv"],
                   help="`gadre2024` (shipped with the project) or `csv` (your own file, with --map)")
    p.add_argument("csv_file", nargs="?", help="(csv) the CSV file: one row per run, or per run × validation set")
    p.add_argument("--study", help="name of the imported study (default: the testbed's name)")
    p.add_argument("--results", default="results", help="the results directory (default: results)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=CSV_COLUMN",
                   help="(csv) take the schema's COLUMN from CSV_COLUMN, e.g. --map n_params=N; repeatable")
    p.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE",
                   help="(csv) give COLUMN one value for every run, e.g. --set dataset=c4; repeatable")
    p.add_argument("--val-set-column", help="(csv) the column naming the validation set of each row")
    p.add_argument("--val-set", help="(csv) the validation set whose loss is runs.val_loss")
    p.add_argument("--downstream", help="(csv) a second CSV, one row per run × task (task, accuracy)")
    p.set_defaults(func=_import)

    p = sub.add_parser("prepare", help="(pipeline) tokenize a dataset")
    p.add_argument("--dataset", required=True, help="the dataset's config, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="(pipeline) train one run")
    p.add_argument("--spec", help="the run's spec, as JSON (or --study and --run)")
    p.add_argument("--study", help="the checked study as the pipeline writes it (results/<study>/study.json)")
    p.add_argument("--run", help="with --study: the run's id, e.g. bible/d32/M20_lr0.01_s0")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint of a finished run")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="never torch.compile (GPU only)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write the curve to TensorBoard, in DIR/<run_id>/")
    p.add_argument("--start-from", help="a ladder's run or trunk segment: the trunk checkpoint it starts from")
    p.set_defaults(func=_train)

    p = sub.add_parser("tasks", help="(pipeline) build a built-in downstream task from a dataset's held-out text")
    p.add_argument("--data", required=True, help="the prepared dataset (its validation split is the text)")
    p.add_argument("--kind", required=True, help="the built-in task (see scaling/evaluate/tasks.py)")
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq-len", type=int, required=True,
                   help="the models' window (training.seq_len): each context fits it with every choice")
    p.add_argument("--out", required=True, help="the JSONL file to write")
    p.set_defaults(func=_tasks)

    p = sub.add_parser("evaluate", help="(pipeline) score a finished run on multiple-choice tasks")
    p.add_argument("--run", required=True, help="the run's directory (metrics.json, model.pt)")
    p.add_argument("--data", required=True, help="the prepared dataset (for its tokenizer)")
    p.add_argument("--tasks", required=True, help='{name: {"path": JSONL, "metric": "acc"|"acc_norm"}}, as JSON')
    p.add_argument("--task-sets", default="{}", help="{name: [tasks]}, as JSON: each set's mean accuracy")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hf", help="the run's transformers export (scaling export), which harness tasks are scored on")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="write a finished run as a Hugging Face transformers model (GPT-2): config, "
                       "safetensors weights, tokenizer")
    p.add_argument("run_dir", help="the run's directory, results/<study>/runs/<dataset>/<size>/<run> (its model.pt)")
    p.add_argument("out_dir", help="the directory to write (replaced if it exists)")
    p.add_argument("--data", help="the run's prepared dataset, for its tokenizer (default: the study's "
                   "results/<study>/data/<dataset>)")
    p.set_defaults(func=_export)

    p = sub.add_parser("collect", help="(pipeline) finished runs → Parquet tables, parsing only new runs")
    p.add_argument("--out", required=True, help="tables directory")
    p.add_argument("--full", action="store_true", help="parse every run, ignoring the previous collect")
    p.add_argument("metrics", nargs="*", help="runs' metrics.json files (or --study and --runs-dir)")
    p.add_argument("--study", help="the checked study as the pipeline writes it: collect every run it plans")
    p.add_argument("--runs-dir", help="with --study: the directory of the study's runs, one folder per run id")
    p.set_defaults(func=_collect)

    p = sub.add_parser("fit", help="fit a scaling law to a study's database or to any CSV/Parquet table of runs",
                       description=fit_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit_cli.add_fit_arguments(p)
    p.set_defaults(func=_fit)

    p = sub.add_parser("backtest", help="fit a law on the cheaper runs and predict the rest: errors, interval coverage "
                       "and width", description=fit_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit_cli.add_fit_arguments(p, backtest=True)
    p.set_defaults(func=_backtest)

    p = sub.add_parser("fit-study", help="(pipeline) fit every law the study's runs support")
    p.add_argument("--runs", required=True, help="the study's runs table (Parquet)")
    p.add_argument("--downstream", required=True, help="the study's downstream table (Parquet)")
    p.add_argument("--fit-config", required=True, help="the study's `fit` section, as JSON")
    p.add_argument("--sizes", default="{}", help="model name → n_params, as JSON (for targets named by size)")
    p.add_argument("--task", help="the task (set) whose error the downstream law is fitted to (none: no such fit)")
    p.add_argument("--out-dir", required=True, help="where <law>.json go")
    p.add_argument("--fits-table", required=True)
    p.add_argument("--parameters", required=True, help="the parameters table to write (Parquet)")
    p.add_argument("--predictions", required=True)
    p.add_argument("--backtest", required=True, help="the backtest table to write (Parquet)")
    p.add_argument("--threads", type=int, default=1, help="processes that refit the bootstrap resamples")
    p.set_defaults(func=_fit_study)

    p = sub.add_parser("database", help="(pipeline) tables → DuckDB file")
    p.add_argument("--tables", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_database)

    p = sub.add_parser("report", help="(pipeline) a study's tables → figures (PNG and SVG) and a Markdown summary")
    p.add_argument("--title", required=True, help="the summary's title")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--tables", required=True, metavar="DIR",
                   help="folder with runs, downstream, fits and predictions .parquet")
    p.add_argument("--figures", required=True, metavar="DIR", help="folder for the figures (<name>.png and .svg)")
    p.add_argument("--summary", required=True, metavar="FILE", help="the Markdown summary to write")
    p.set_defaults(func=_report)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except WriteError as e:  # disk full, no permission: one line, the file and the fix
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
