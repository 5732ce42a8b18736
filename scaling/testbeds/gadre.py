"""The testbed of Gadre et al. (2024), shipped in ``scaling/testbeds/datasets/gadre2024`` (MIT), and the paper's fit sets.

:func:`load_runs` gives one row per run with its loss on one validation set and
its average top-1 error on the 17-task split (or all 46 tasks). The fit sets of
the paper's Figure 1 are SQL conditions for :func:`scaling.fit.tables.fit_table`:

- ``LOSS_FIT_ON``: the four smaller sizes at M = 20 plus the 0.011B model at M = 320;
- ``ERROR_FIT_ON``: those runs plus the 1.4B model at M = 20;
- ``TARGETS``: the runs Figure 1 predicts, the 1.4B model over-trained (M = 640
  for RedPajama) and the 6.9B model at M = 20.

From the command line, the same runs are the result of ``RUNS_SQL`` over the two CSV files
(see the README).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

DATA = Path(__file__).parent / "datasets" / "gadre2024"
FIT_MODELS = ("d=96_l=8_h=4", "d=512_l=8_h=4", "d=576_l=24_h=8", "d=1024_l=24_h=8")
LOSS_FIT_ON = (f"(model IN {FIT_MODELS} AND token_multiplier = 20) "
               f"OR (model = '{FIT_MODELS[0]}' AND token_multiplier = 320)")
ERROR_FIT_ON = f"{LOSS_FIT_ON} OR (model = 'open_lm_1b' AND token_multiplier = 20)"
TARGETS = "(model = 'open_lm_1b' AND token_multiplier <> 20) OR model = 'open_lm_7b'"
RUNS_SQL = """
SELECT m.dataset, m.model, m.run_name, m.n_params, m.tokens, m.token_multiplier, m.loss, e.error
FROM models m
JOIN (SELECT run_name, avg(error) AS error FROM downstream WHERE {task_filter} GROUP BY run_name) e USING (run_name)
WHERE m.val_set = '{val_set}'
ORDER BY m.dataset, m.n_params, m.token_multiplier
"""


def load_runs(val_set: str = "c4_val", tasks: str = "17") -> pd.DataFrame:
    """One row per run: dataset (training set), model, N, D, M, loss on ``val_set``, mean top-1 error.

    ``tasks="17"`` averages the paper's 17-task split (``in_17task_subset``),
    ``"46"`` all 46 tasks (their unweighted means, as in the paper).
    """
    if tasks not in ("17", "46"):
        raise ValueError("tasks must be '17' or '46'")
    con = duckdb.connect()
    for name in ("models", "downstream"):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv_auto('{DATA / name}.csv')")
    sql = RUNS_SQL.format(task_filter="in_17task_subset" if tasks == "17" else "TRUE", val_set=val_set)
    runs = con.execute(sql).df()
    if runs.empty:
        raise ValueError(f"no runs with validation set {val_set!r}; see {DATA / 'README.md'} for the sets")
    return runs
