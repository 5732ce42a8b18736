"""The ``scaling`` command: the pipeline's stages (called by the Snakemake rules), ``scaling sql`` and ``scaling fit``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from scaling import fit_cli


def _prepare(args):
    from scaling.data import prepare

    meta = prepare(json.loads(args.dataset), args.out)
    print(f"prepared {meta['n_train_tokens']:,} train and {meta['n_val_tokens']:,} val tokens from {meta['source']}")


def _train(args):
    from scaling.train import train

    train(json.loads(args.spec), args.data, args.out, threads=args.threads,
          log=lambda msg: print(msg, file=sys.stderr, flush=True))


def _collect(args):
    from scaling.collect import collect

    runs = collect(args.metrics, args.out)
    print(f"collected {len(runs)} runs into {args.out}")


def _fit(args):
    fit_cli.fit_command(args, default_data=latest_database)


def _database(args):
    from scaling.collect import build_database

    build_database(args.tables, args.out)
    print(f"results database: {Path(args.out).resolve()}")


def _report(args):
    from scaling.io import read_json
    from scaling.report import write_report

    fit = read_json(args.fit)
    write_report(args.title, args.study, pd.read_parquet(args.runs), fit["fits"], pd.DataFrame(fit["predictions"]),
                 Path(args.compute_png), Path(args.lr_png), Path(args.summary))


def latest_database(root: str | Path = "results") -> Path:
    """The most recently written ``results/<study>/scaling.duckdb``."""
    dbs = sorted(Path(root).glob("*/scaling.duckdb"), key=lambda p: p.stat().st_mtime)
    if not dbs:
        raise SystemExit(f"no study database under {Path(root).resolve()}/*/scaling.duckdb; "
                         f"run `snakemake --cores 2` first, or pass --db PATH")
    return dbs[-1]


def _sql(args):
    import duckdb

    db = Path(args.db) if args.db else latest_database()
    if not db.exists():
        raise SystemExit(f"--db: {db} does not exist")
    con = duckdb.connect(str(db), read_only=True)
    try:
        rel = con.sql(args.query)
        if rel is None:  # a statement with no result (e.g. SET)
            return
        df = rel.df()
    except duckdb.Error as e:
        msg = str(e)
        if "read-only" in msg:
            msg += "\n(scaling sql opens the database read-only: it runs queries, not statements that write)"
        raise SystemExit(f"error: {msg}")
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", args.max_rows, "display.width", 200):
            print(df.to_string(index=False, max_rows=args.max_rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scaling", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sql", help="run a read-only SQL query on a study's DuckDB database")
    p.add_argument("query")
    p.add_argument("--db", help="database file (default: the newest results/*/scaling.duckdb)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--max-rows", type=int, default=200)
    p.set_defaults(func=_sql)

    p = sub.add_parser("prepare", help="(pipeline) tokenize a dataset")
    p.add_argument("--dataset", required=True, help="the dataset's config, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="(pipeline) train one run")
    p.add_argument("--spec", required=True, help="the run's spec, as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_train)

    p = sub.add_parser("collect", help="(pipeline) runs → Parquet tables")
    p.add_argument("--out", required=True, help="tables directory")
    p.add_argument("metrics", nargs="*", help="runs' metrics.json files")
    p.set_defaults(func=_collect)

    p = sub.add_parser("fit", help="fit a scaling law to a study's database or to any CSV/Parquet table of runs",
                       description=fit_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit_cli.add_fit_arguments(p)
    p.set_defaults(func=_fit)

    p = sub.add_parser("database", help="(pipeline) tables → DuckDB file")
    p.add_argument("--tables", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_database)

    p = sub.add_parser("report", help="(pipeline) figures and summary")
    for name in ("title", "study", "runs", "fit", "compute-png", "lr-png", "summary"):
        p.add_argument(f"--{name}", required=True)
    p.set_defaults(func=_report)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
