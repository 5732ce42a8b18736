"""scaling fit LAW / scaling backtest LAW: fit a scaling law to a study's database or to any CSV/Parquet table of
runs, or backtest it: fit on the cheaper runs and predict the rest.

LAW is overtraining, downstream (over-training loss law chained to the error
law), chinchilla (Approach 3; --approach 1 or 2 for the others) or optimal_lr.
Rows are chosen with DuckDB SQL (--where, or --query for joins), the fit set
with --fit-on (SQL, or a JSON list of column filters as in a study's fit.fit_on),
points to predict with --targets. Every prediction has a 95% interval for a new
run and one for the law; they are calibrated on the law's errors at runs it was
not fitted on (held-out runs and extrapolation folds) where there are enough,
else they are a bootstrap over runs (--bootstrap resamples, --seed), which
also gives the parameters' intervals.

examples:
  scaling fit overtraining                       # the newest results/*/scaling.duckdb
  scaling fit overtraining --data scaling/testbeds/datasets/gadre2024/models.csv \\
      --where "val_set = 'c4_val'" --method gadre \\
      --fit-on "(model IN ('d=96_l=8_h=4', 'd=512_l=8_h=4', 'd=576_l=24_h=8', 'd=1024_l=24_h=8')
                AND token_multiplier = 20) OR (model = 'd=96_l=8_h=4' AND token_multiplier = 320)"
  scaling fit chinchilla --data points.csv --where "NOT epoch_excluded_outlier" --json
  scaling fit downstream --task core                # a study's loss law chained to its task set's error
  scaling backtest chinchilla --data points.csv --split 1e21   # fit below 1e21 FLOPs, predict above
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

LAWS = ("overtraining", "downstream", "chinchilla", "optimal_lr")


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative; give 0 (no bootstrap) or more resamples")
    return n


def _level(text: str) -> float:
    x = float(text)
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a level between 0 and 1, e.g. 0.95")
    return x


def _positive(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return x


def _budgets(text: str) -> list[float]:
    try:
        values = [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give compute budgets as numbers separated by commas, "
                                         f"e.g. 6e18,1e19,3e19") from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: budgets are positive FLOP counts")
    return values


def add_fit_arguments(p: argparse.ArgumentParser, backtest: bool = False) -> None:
    p.add_argument("law", choices=LAWS[:3] if backtest else LAWS)
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", metavar="FILE",
                   help="CSV, Parquet or DuckDB file (repeat for several; each is a view named after its stem, the "
                        "first also `data`); default: the newest results/*/scaling.duckdb")
    g.add_argument("--table", default="runs", help="table of a .duckdb file (default: runs)")
    g.add_argument("--where", metavar="SQL", help="DuckDB condition choosing the rows of `data`")
    g.add_argument("--query", metavar="SQL", help="a whole SELECT over the views instead of --where (for joins)")
    g.add_argument("--loss", metavar="COLUMN", help="loss column (default: loss, else val_loss)")
    g.add_argument("--error", metavar="COLUMN", help="downstream error column (default: error)")
    g.add_argument("--task", metavar="NAME", help="downstream, on a study database: the error is 1 − accuracy of this "
                   "task or task set in its `downstream` table (instead of an error column)")
    g.add_argument("--by", action="append", metavar="COLUMN",
                   help="fit each group separately (default: dataset, if the table has it; `none` for one fit)")
    g = p.add_argument_group("fit")
    g.add_argument("--fit-config", metavar="JSON|FILE",
                   help="a study's `fit` section (fit_on, targets, method, bootstrap, seed, level), as JSON or a "
                        "JSON/YAML file; the flags below override it")
    g.add_argument("--fit-on", metavar="SQL|JSON", help="the fit set: SQL condition or JSON list of column filters "
                   "(default for overtraining/downstream: every M = 20 point plus the smallest model at its largest "
                   "M; else every row)")
    g.add_argument("--error-fit-on", metavar="SQL|JSON", help="downstream: the error law's fit set (default: --fit-on)")
    g.add_argument("--targets", metavar="JSON", help='extra points to predict, e.g. \'[{"n_params": 7e9, '
                   '"token_multiplier": 20}]\' (or "size" for a model of --sizes)')
    g.add_argument("--sizes", metavar="JSON", help="model name → n_params, for targets named by size")
    g.add_argument("--method", choices=("huber-log", "gadre", "bounded"),
                   help="overtraining/downstream loss fit: huber-log (default), gadre (the paper's least squares) or "
                        "bounded (the same with E, a, c >= 0, b <= 0)")
    g.add_argument("--bootstrap", type=_count, metavar="N", help="bootstrap resamples (default 1000; 0 for none)")
    g.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    g.add_argument("--scheme", choices=("bayesian", "poisson"), help="bootstrap run weights (default: bayesian)")
    g.add_argument("--level", type=_level, help="interval level (default 0.95)")
    if backtest:
        g = p.add_argument_group("backtest: fit on the points whose --order is at most a cut, predict the rest")
        g.add_argument("--order", default="flops", metavar="COLUMN",
                       help="the column that orders the points (default: flops, C = 6·N·D)")
        g.add_argument("--split", type=float, metavar="VALUE", help="the cut: fit on points with --order ≤ VALUE "
                       "(extrapolation folds and the compute ratio are in compute, whatever --order)")
        g.add_argument("--train-fraction", type=float, metavar="F",
                       help="the cut at this fraction of each group's distinct --order values (default 0.5)")
    else:
        g.add_argument("--approach", type=int, choices=(1, 2, 3), default=3,
                       help="chinchilla: Hoffmann et al.'s approach")
        g.add_argument("--budgets", type=_budgets, metavar="FLOPS", help="chinchilla --approach 2: comma-separated IsoFLOP budgets "
                       "(default: Hoffmann et al.'s nine, 6e18 … 3e21)")
        g.add_argument("--window", type=_positive, metavar="DECADES",
                       help="chinchilla --approach 2: fit each IsoFLOP parabola to the runs within this many decades "
                            "of N of the budget's lowest loss (default 0.5)")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the fits and predictions as JSON")
    g.add_argument("--out", metavar="FILE", help="write the JSON to FILE")
    g.add_argument("--fits-table", metavar="FILE", help="write the fits as a Parquet table (one row per fit)")
    g.add_argument("--parameters", metavar="FILE", help="write the fits' parameters as a Parquet table (one row per "
                   "fit × parameter: value, stderr, lo, hi)")
    g.add_argument("--predictions", metavar="FILE", help="write the predictions as a Parquet table")


def _data_or_json(text: str | None):
    """A JSON value given inline, or read from a .json/.yaml file; None stays None."""
    if text is None:
        return None
    path = Path(text)
    if text.strip()[:1] not in "[{" and path.suffix in (".json", ".yaml", ".yml") and path.exists():
        import yaml

        return yaml.safe_load(path.read_text())
    return json.loads(text)


def _condition(text: str | None):
    """A fit set: a JSON list of filters if it looks like one, else an SQL condition."""
    if text is None or not text.strip().startswith("["):
        return text
    return json.loads(text)


def options(args) -> dict:
    """The fit options: the --fit-config section, overridden by explicit flags, with defaults."""
    cfg = dict(_data_or_json(args.fit_config) or {})
    flags = {"fit_on": _condition(args.fit_on), "error_fit_on": _condition(args.error_fit_on),
             "targets": _data_or_json(args.targets), "method": args.method, "bootstrap": args.bootstrap,
             "seed": args.seed, "scheme": args.scheme, "level": args.level}
    cfg.update({k: v for k, v in flags.items() if v is not None})
    defaults = {"targets": [], "method": "huber-log", "bootstrap": 1000, "seed": 0, "scheme": "bayesian", "level": 0.95}
    return {**defaults, **cfg}


def fit_command(args, default_data, backtest: bool = False) -> None:
    """Run ``scaling fit`` or ``scaling backtest``; bad data or SQL end it with a one-line error naming the problem."""
    import warnings

    from scaling.fit.estimators import FitError, FitWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)  # each fit's diagnostics are printed with it
            _fit_command(args, default_data, backtest)
    except (FitError, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"scaling {'backtest' if backtest else 'fit'} {args.law}: error: {e}") from None


def _runs(args, default_data):
    """The rows of --data chosen by --where/--query, as a table of runs (one row per run)."""
    from scaling.fit.tables import canonical, read_rows

    data = args.data or [default_data()]
    raw = read_rows(data, where=args.where, query=args.query, table=args.table)
    if raw.empty:
        raise ValueError(f"no rows in {', '.join(map(str, data))}" + (f" where {args.where}" if args.where else "")
                         + "; fix: check --data and --where")
    if args.task:
        from scaling.fit.stage import with_error

        if not str(data[0]).endswith((".duckdb", ".db")):
            raise ValueError("--task reads the `downstream` table of a study database; give --data results/<study>/"
                             "scaling.duckdb, or an error column with --error")
        raw = with_error(raw, read_rows(data[:1], table="downstream"), args.task)
    for flag, column in (("--loss", args.loss), ("--error", args.error)):
        if column is not None and column not in raw:
            raise ValueError(f"{flag} {column}: no such column; fix: use one of {sorted(map(str, raw))}")
    if args.loss is None and not {"loss", "val_loss"} & set(raw) and args.law != "optimal_lr":
        raise ValueError(f"the data have no loss column (loss or val_loss); fix: name it with --loss COLUMN "
                         f"(columns: {sorted(map(str, raw))})")
    return raw, canonical(raw, loss=args.loss, error=args.error)


def _fit_command(args, default_data, backtest: bool) -> None:
    import pandas as pd

    from scaling.fit.tables import backtest_summary, canonical, fit_dict, fits_table, parameters_table, records
    from scaling.io import write_json, write_parquet

    raw, runs = _runs(args, default_data)
    if args.by and args.by != ["none"] and (missing := [c for c in args.by if c not in runs]):
        raise ValueError(f"--by {missing[0]}: no such column; fix: use one of {sorted(map(str, runs))}")
    by = [c for c in ([] if args.by == ["none"] else (args.by or ["dataset"])) if c in runs]
    opt = options(args)
    extra: dict = {}
    if not backtest and args.law == "chinchilla" and args.approach in (1, 2):
        fits, pred, extra = _chinchilla_approach(args, runs, by, opt)
    else:
        common = dict(fit_on=opt.get("fit_on"), error_fit_on=opt.get("error_fit_on"), targets=opt["targets"], by=by,
                      sizes=_data_or_json(args.sizes), method=opt["method"], resamples=opt["bootstrap"],
                      seed=opt["seed"], scheme=opt["scheme"], level=opt["level"])
        if backtest:
            from scaling.fit.tables import backtest as run_backtest

            results, pred = run_backtest(args.law, runs, order=args.order, split=args.split,
                                         train_fraction=args.train_fraction, **common)
        else:
            from scaling.fit.tables import fit_table

            results, pred = fit_table(args.law, runs, **common)
        fits = [fit_dict(r) for r in results]
        if args.law == "optimal_lr" and "initial_loss" in raw:
            from scaling.fit.optimal_lr import sensitivity_table

            extra["sensitivity"] = sensitivity_table(canonical(raw, loss=args.loss, ok_only=False),
                                                     [*by, "n_params", "tokens"])
        if args.law != "optimal_lr":
            unseen = ("test",) if backtest else ("held_out", "test")
            quantities = ["loss"] + (["error"] if args.law == "downstream" else [])
            extra["backtest"] = pd.concat([backtest_summary(pred, by, unseen, q) for q in quantities] +
                                          [backtest_summary(pred, [], unseen, q).assign(**{c: "(all)" for c in by})
                                           for q in quantities if len(by) and pred[by].drop_duplicates().shape[0] > 1],
                                          ignore_index=True)
        if not args.json:
            for r in results:
                group = ", ".join(f"{k}={v}" for k, v in r.meta.get("group", {}).items())
                warn = "".join(f"\n  warning: {m}" for m in r.meta.get("diagnostics", []))
                print(f"== {group}\n{r}{warn}\n" if group else f"{r}{warn}\n")
    doc = _strict({"law": args.law, "fits": fits, "predictions": records(pred),
                   **{k: records(v) for k, v in extra.items()}})
    if args.out:
        write_json(args.out, doc)
    if args.fits_table:
        write_parquet(args.fits_table, fits_table(fits))
    if args.parameters:
        write_parquet(args.parameters, parameters_table(fits))
    if args.predictions:
        write_parquet(args.predictions, pred)
    if args.json:
        json.dump(doc, sys.stdout, indent=1, allow_nan=False, default=str)
        print()
        return
    with pd.option_context("display.max_rows", 500, "display.width", 250, "display.max_columns", 40):
        for name, table in extra.items():
            if name != "backtest":
                print(f"{name}:\n{table.to_string(index=False)}\n")
        if "role" not in pred:  # Chinchilla Approach 1 or 2: the power laws at the points' compute
            print(f"N_opt(C), D_opt(C) at the points' compute (lo/hi: a new budget's optimum; law_lo/law_hi: the "
                  f"law's):\n{pred.to_string(index=False)}")
            return
        shown = pred[pred["role"] != "fit"]
        if len(shown):
            print("predictions (" + ("test points" if backtest else "held-out runs and targets") + "; lo/hi: the "
                  "interval of a new run, law_lo/law_hi: of the law):")
            print(_readable(shown).to_string(index=False))
        if len(extra.get("backtest", [])):
            print(f"\n{'backtest' if backtest else 'held-out runs'} ({100 * opt['level']:g}% intervals of a new run):")
            print(_aggregate_lines(extra["backtest"], by))


def _strict(value):
    """``value`` with every NaN or infinite float as None: strict JSON, which any parser reads."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _readable(pred):
    """The predictions with short column names, for the terminal."""
    keep = [c for c in pred.columns if not c.startswith(("extrapolation", "calibrated", "error_calibrated"))
            and c not in ("law", "flops", "tokens", "_test", "lr")]
    names = {c: c.replace("predicted_", "").replace("measured_", "meas_") for c in keep}
    return pred[keep].rename(columns=names)


def _aggregate_lines(table, by) -> str:
    lines = []
    for r in table.itertuples(index=False):
        group = ", ".join(f"{k}={getattr(r, k)}" for k in by if hasattr(r, k))
        how = "calibrated" if r.calibrated else "not calibrated"
        lines.append(f"  {group + ': ' if group else ''}{r.quantity}: {r.n} points, coverage {100 * r.coverage:.1f}%, "
                     f"median half-width {100 * r.median_half_width:.2f}%, mean |rel. error| "
                     f"{100 * r.mean_abs_rel_error:.2f}% (median {100 * r.median_abs_rel_error:.2f}%), up to "
                     f"{r.max_compute_ratio:.3g}× the fitted compute; {how}")
    return "\n".join(lines)


def _chinchilla_approach(args, runs, by, opt):
    """Approach 1 or 2, per group: the points it finds and the power laws N_opt(C), D_opt(C) fitted to them."""
    import pandas as pd

    from scaling.fit.chinchilla import HOFFMANN_BUDGETS, WINDOW, approach1, approach2
    from scaling.fit.tables import fit_dict

    budgets = args.budgets or HOFFMANN_BUDGETS
    by = [c for c in by if c in runs]
    fits, preds, found = [], [], []
    for key, g in (runs.groupby(by, sort=True) if by else [((), runs)]):
        group = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        label = ", ".join(f"{k}={v}" for k, v in group.items())
        n, d, loss = g["n_params"], g["tokens"], g["loss"]
        if args.approach == 1:
            points, laws = approach1(n, d, loss, level=opt["level"])
        else:
            points, laws = approach2(n, d, loss, budgets, window=WINDOW if args.window is None else args.window,
                                     level=opt["level"], resamples=opt["bootstrap"], seed=opt["seed"],
                                     scheme=opt["scheme"])
        for name, r in laws.items():
            r.meta.update(quantity=name, group=group)
            fits.append(fit_dict(r))
            if not args.json:
                print(f"== {name}(C), Approach {args.approach}{' (' + label + ')' if label else ''}\n{r}\n")
        c = points["flops"].to_numpy()
        pred = pd.DataFrame({**group, "flops": c})
        for name, r in laws.items():  # the interval of a new budget's optimum, and of the law
            for interval, suffix in (("prediction", ""), ("confidence", "_law")):
                p = r.predict(c, interval=interval)
                pred[f"predicted_{name}"] = p["predicted"]
                pred[f"predicted_{name}{suffix}_lo"], pred[f"predicted_{name}{suffix}_hi"] = p["lo"], p["hi"]
        preds.append(pred)
        found.append(points.assign(**group))
    return fits, pd.concat(preds, ignore_index=True), {"points": pd.concat(found, ignore_index=True)}
