"""The ``scaling`` command: the pipeline's stages (called by the Snakemake rules) and ``scaling sql``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def _prepare(args):
    from scaling.data import prepare

    meta = prepare(json.loads(args.dataset), args.out)
    print(f"prepared {meta['n_train_tokens']:,} train and {meta['n_val_tokens']:,} val tokens from {meta['source']}")


def _train(args):
    from scaling.train import train

    train(json.loads(args.spec), args.data, args.out, threads=args.threads, checkpoint_every=args.checkpoint_every,
          keep_checkpoints=args.keep_checkpoints, compile_model=args.compile,
          log=lambda msg: print(msg, file=sys.stderr, flush=True))


def _collect(args):
    from scaling.collect import collect

    runs = collect(args.metrics, args.out)
    print(f"collected {len(runs)} runs into {args.out}")


def _fit(args):
    from scaling.fit import fit_study, fits_table
    from scaling.io import write_json, write_parquet

    runs = pd.read_parquet(args.runs)
    fits, pred = fit_study(runs, json.loads(args.fit_config), json.loads(args.sizes))
    for f in fits:
        print(f"{f['dataset']}: " + ", ".join(f"{k}={v:.4g}" for k, v in f["params"].items()))
    write_parquet(args.fits_table, fits_table(fits))
    write_parquet(args.predictions, pred)
    write_json(args.out, {"fits": fits, "predictions": pred.to_dict(orient="records")})


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
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last checkpoint of a finished run")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="never torch.compile (GPU only)")
    p.set_defaults(func=_train)

    p = sub.add_parser("collect", help="(pipeline) runs → Parquet tables")
    p.add_argument("--out", required=True, help="tables directory")
    p.add_argument("metrics", nargs="*", help="runs' metrics.json files")
    p.set_defaults(func=_collect)

    p = sub.add_parser("fit", help="(pipeline) fit the over-training law")
    p.add_argument("--runs", required=True)
    p.add_argument("--fit-config", required=True, help="the study's `fit` section, as JSON")
    p.add_argument("--sizes", required=True, help="model name → n_params, as JSON")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--fits-table", required=True)
    p.add_argument("--predictions", required=True)
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
