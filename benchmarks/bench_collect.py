"""Benchmark of the results store at scale: collect, incremental collect, database, README queries.

    python benchmarks/bench_collect.py            # 1,000 runs × 2,000 steps, checked against the goals
    python benchmarks/bench_collect.py --smoke    # 20 runs × 50 steps: does every step work (CI)

It writes a synthetic study in the project's run format (``metrics.json`` and
``curve.parquet`` per run, see :mod:`scaling.testbeds.synthetic`) to a temporary
directory, then times: a full collect; an incremental collect after ``--new``
more runs finish; the database build; and each example query of the README's
"Query the results with SQL" section on the resulting database (the median of
``--repeat`` runs after a first, also printed). Without ``--smoke`` it exits 1 if a time
misses its goal.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from scaling.study import runs as S
from scaling.testbeds import synthetic
from scaling.store.collect import collect
from scaling.store.database import build_database, open_study, query

REPO = Path(__file__).resolve().parents[1]

GOALS_S = {"full collect": 10.0, "incremental collect": 1.0, "query": 0.2}


def readme_queries() -> list[str]:
    """The SQL blocks of the README's "Query the results with SQL" section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Query the results with SQL"):]
    section = section[:section.index("\n### ", 1)]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--new", type=int, default=10, help="runs that finish before the incremental collect")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each query")
    p.add_argument("--smoke", action="store_true", help="20 runs × 50 steps, no goals: a check that it all works")
    p.add_argument("--dir", help="work here instead of a temporary directory (kept afterwards)")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs, args.steps, args.new, args.repeat = 20, 50, 2, 1

    config = synthetic.study_config("bench", 10, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560],
                                    [0.001 * 2**i for i in range(10)], seeds=[0, 1])
    runs = S.runs(config)[: args.runs + args.new]
    assert len(runs) == args.runs + args.new, f"the synthetic grid has only {len(S.runs(config))} runs"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        tables, db = root / "tables", root / "scaling.duckdb"
        print(f"{args.runs:,} runs × {args.steps:,} steps in {root}")
        paths, t = timed(lambda: [synthetic.write_run(root, config, r, args.steps, diverged=i % 50 == 7)
                                  for i, r in enumerate(runs[: args.runs])])
        print(f"  generate runs          {t:7.2f} s   (not a goal)")

        # flush the generator's writes first, as a finished run's files long are in a real study;
        # otherwise collect's own fsyncs pay for them
        os.sync()
        results = {}
        done, results["full collect"] = timed(lambda: collect(paths, tables))
        assert (done.parsed, done.cached) == (args.runs, 0)
        new = [synthetic.write_run(root, config, r, args.steps) for r in runs[args.runs:]]
        os.sync()
        done, results["incremental collect"] = timed(lambda: collect(paths + new, tables))
        assert (done.parsed, done.cached) == (args.new, args.runs)
        assert done.tables["runs"].num_rows == args.runs + args.new
        steps = sum(pq.read_metadata(m.with_name("curve.parquet")).num_rows for m in paths + new)
        assert done.tables["curves"].num_rows == steps, "the curves table lost or doubled rows"
        rows, t_db = timed(lambda: build_database(tables, db))
        print(f"  full collect           {results['full collect']:7.2f} s   (goal ≤ {GOALS_S['full collect']:g} s)")
        print(f"  incremental collect    {results['incremental collect']:7.2f} s   "
              f"(goal ≤ {GOALS_S['incremental collect']:g} s; {args.new} new runs, {args.runs:,} reused)")
        print(f"  database build         {t_db:7.2f} s   (not a goal; {rows['curves']:,} curve rows)")

        con = open_study(db)
        slow = [name for name, t in results.items() if t > GOALS_S[name]]
        for q in readme_queries():
            title = q.splitlines()[0].lstrip("- ").strip()
            _, first = timed(lambda: query(con, q))
            times = [timed(lambda: query(con, q))[1] for _ in range(args.repeat)]
            median = statistics.median(times)
            n = len(query(con, q))
            print(f"  query {median:7.3f} s median, {first:.3f} s first, {n:,} rows   {title}")
            if median > GOALS_S["query"]:
                slow.append(title)
        con.close()

    if args.smoke:
        print("smoke: every step ran")
        return 0
    print("all within the goals" if not slow else f"missed the goal: {slow}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
